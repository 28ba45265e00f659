"""Memory of the rules in service, reloads and images, from /proc (issue 12).

benchmarks/README.md#memory-reloads-and-images-issue-12 shows and explains its figures.

    python benchmarks/bench_memory.py                          # N = 10,000 and 100,000
    python benchmarks/bench_memory.py --rows 10000,100000,1000000 --json memory.json --plot benchmarks/memory.png
    python benchmarks/bench_memory.py --quick                  # a smoke run of a few seconds
    python benchmarks/bench_memory.py --rows 10000,100000,1000000 --profile \
        --reload-backends sqlite,postgres,mysql --lookups --json memory.json --plot benchmarks/memory.png
                                                               # everything benchmarks/README.md shows

Every figure comes from a fresh child process (``--child``), so that no
measurement inherits the heap of another; the parent only orchestrates and
reads ``/proc/PID/smaps_rollup``.  For each N, a SQLite table of the seeded
carrier workload (benchmarks/README.md#workloads) is filled by a child of its
own, then:

- **built**: a child imports tcpmgm, opens the manager and reads its RSS (the
  baseline), then runs ``TcpMgm.reload()`` three times.  For each reload: its
  wall time, the RSS in service after it, and the peak RSS during it (VmHWM of
  /proc/self/status after writing ``5`` to /proc/self/clear_refs, which resets
  it to the current RSS).  Then ``Matcher.save`` writes the image (timed).
- **image**: a child imports tcpmgm, reads its RSS, opens the image
  (``Matcher.open``; and ``TcpMgm.from_image`` in another child when it
  exists), makes some thousand lookups and reads its RSS again.
- **PSS**: K = 1, 4 and 16 worker processes that each opened the image (as a
  worker serves it: ``TcpMgm.from_image``, following the file; ``Matcher.open``
  where that does not exist) and made some thousand lookups, beside K bare interpreters with tcpmgm imported,
  and the built child above: the sum of their ``Pss`` (smaps_rollup), read by
  the parent while they all wait.

``--profile`` adds, per N, a cProfile of a reload and tracemalloc's account of
what the rules in service keep in the Python heap; ``--reload-backends`` then runs
bench_reload.py (reload against the plain-driver fetch, per backend) and
``--lookups`` ``tcpmgm bench`` on the carrier workload (lookups beside pytricia),
each as a child after the memory figures, so that one command prints every table.

Bytes per rule are the RSS over the child's own baseline, divided by N; the C
bytes are ``Matcher.nbytes / N`` of the built matcher.  Each N records the
load average before and after it.  Without the image API (``Matcher.save``)
the image and PSS parts are reported as not measured.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROWS = (10_000, 100_000)
QUICK_ROWS = (2_000,)
WORKER_COUNTS = (1, 4, 16)
QUICK_WORKER_COUNTS = (1, 2)
LOOKUPS = 5_000  # per worker / image child: "some thousand lookups"
RELOADS = 3

# The targets of issue 12 (benchmarks/README.md#memory-reloads-and-images-issue-12); the N they apply at.
TARGET_N = 1_000_000
TARGET_BYTES_PER_RULE = 300
TARGET_PEAK_RATIO = 2.0
TARGET_OPEN_MS = 50.0
TARGET_OPEN_SHARE = 1 / 50
TARGET_PSS_RATIO = 1.3


# -- /proc -------------------------------------------------------------------


def rollup(pid: int | str = "self") -> dict[str, int]:
    """/proc/PID/smaps_rollup as bytes per field (Rss, Pss, Pss_Anon, Pss_File, Anonymous, ...)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as file:
        for line in file:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def rss() -> int:
    """This process's resident set in bytes (/proc/self/statm: pages resident)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


class PeakRss:
    """The peak RSS while the block runs: VmHWM after resetting it (clear_refs ``5``, Linux 4.0+),
    or, where that is refused, the largest of statm samples a thread takes every millisecond."""

    def __init__(self) -> None:
        self.peak = 0
        self.how = "VmHWM"

    @contextlib.contextmanager
    def during(self) -> Iterator[None]:
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
        except OSError:
            self.how = "sampled"
        if self.how == "VmHWM":
            yield
            self.peak = status_bytes("VmHWM")
            return
        done = threading.Event()
        samples = [rss()]

        def sample() -> None:
            while not done.wait(0.001):
                samples.append(rss())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            self.peak = max(*samples, rss())


def load() -> float:
    return os.getloadavg()[0]


# -- children ----------------------------------------------------------------


def random_lookups(count: int, seed: int = 0) -> list[tuple[str, str, int, str, int]]:
    """Lookups at random addresses, made without the rules (generating the workload's own
    lookups would put N Rule objects into the process being measured)."""
    import ipaddress

    rng = random.Random(f"memory-lookups-{seed}")
    out = []
    for _ in range(count):
        if rng.random() < 0.7:
            remote, local = str(ipaddress.IPv4Address(rng.randrange(0x01000000, 0xE0000000))), "192.0.2.1"
        else:
            remote, local = str(ipaddress.IPv6Address((0x2 << 125) | rng.getrandbits(125))), "2001:db8:ffff::1"
        out.append(("tcp", remote, rng.randint(1024, 65535), local, rng.choice((5060, 5061, 443, 8443))))
    return out


def serve(lookup: Any, lookups: Sequence[tuple[str, str, int, str, int]]) -> None:
    for query in lookups:
        lookup(*query)


def child_fill(rows: int, db: str) -> dict[str, Any]:
    import sqlite3

    from bench_reload import carrier_rows, fill  # the table bench_reload.py fills, the same rows

    import tcpmgm

    started = time.perf_counter()
    tcpmgm.TcpMgm(f"sqlite:///{db}").create_schema()
    conn = sqlite3.connect(db, isolation_level=None)
    fill("sqlite", conn, carrier_rows(rows))
    conn.close()
    return {"seconds": time.perf_counter() - started}


IN_SERVICE: list[Any] = []  # what a child serves, held for its parent's reading of its PSS


def child_built(rows: int, db: str, image: str | None) -> dict[str, Any]:
    """Three reloads from SQLite (RSS, peak, time each), then the image written from the matcher."""
    import tcpmgm

    mgr = tcpmgm.TcpMgm(f"sqlite:///{db}")
    lookups = random_lookups(LOOKUPS)
    serve(mgr.lookup, lookups[:10])  # what a first lookup allocates belongs to the baseline
    gc.collect()
    base = rss()
    reloads = []
    peak = PeakRss()
    for _ in range(RELOADS):
        with peak.during():
            started = time.perf_counter()
            report = mgr.reload()
            seconds = time.perf_counter() - started
        serve(mgr.lookup, lookups)
        reloads.append({"seconds": seconds, "rss": rss(), "peak": peak.peak, "loaded": report.loaded})
    matcher = mgr.matcher
    out: dict[str, Any] = {"base": base, "reloads": reloads, "peak_how": peak.how, "nbytes": matcher.nbytes}
    if len(matcher) != rows:
        raise SystemExit(f"built: {len(matcher)} rules in service, {rows} rows in the table")
    if image is not None and hasattr(matcher, "save"):
        started = time.perf_counter()
        matcher.save(image)
        out["save_seconds"] = time.perf_counter() - started
        out["image_bytes"] = os.path.getsize(image)
    out["rollup"] = rollup()
    # Kept until the process ends: a --wait child's PSS is read after this returns, and the
    # matcher's block is unmapped as soon as the last reference goes.
    IN_SERVICE.append(mgr)
    return out


def child_bare() -> dict[str, Any]:
    """An interpreter with tcpmgm imported (what every worker pays before any rule)."""
    import tcpmgm
    from tcpmgm.matching.matcher import Matcher

    serve(Matcher([]).lookup, random_lookups(10))
    gc.collect()
    return {"rss": rss(), "module": tcpmgm.__name__}


def child_image(rows: int, image: str, how: str) -> dict[str, Any]:
    """The image opened (``Matcher.open`` or ``TcpMgm.from_image``) and some thousand lookups made."""
    import tcpmgm
    from tcpmgm.matching.matcher import Matcher

    lookups = random_lookups(LOOKUPS)
    serve(Matcher([]).lookup, lookups[:10])
    gc.collect()
    base = rss()
    started = time.perf_counter()
    served: Any = Matcher.open(image) if how == "open" else tcpmgm.TcpMgm.from_image(image)
    open_seconds = time.perf_counter() - started
    serve(served.lookup, lookups)
    after = rss()
    matcher = served if how == "open" else served.matcher
    if len(matcher) != rows:
        raise SystemExit(f"image: {len(matcher)} rules in service, {rows} expected")
    reopen = []
    for _ in range(5):  # the file's pages are now mapped by this process: the open alone
        started = time.perf_counter()
        again = Matcher.open(image)
        reopen.append(time.perf_counter() - started)
        del again
    if how == "tcpmgm":
        served.close()  # its image watcher's thread
    return {"base": base, "rss": after, "open_seconds": open_seconds, "reopen_seconds": min(reopen)}


def child_profile(rows: int, db: str) -> dict[str, Any]:
    """Why a reload takes its time and what of it stays in the Python heap: a cProfile of the
    second reload (the first into a matcher in service), then the third under tracemalloc, whose
    snapshot after it lists the allocations the rules in service still hold, by source line."""
    import cProfile
    import io
    import pstats
    import tracemalloc

    import tcpmgm

    mgr = tcpmgm.TcpMgm(f"sqlite:///{db}")
    mgr.reload()
    profiler = cProfile.Profile()
    profiler.runcall(mgr.reload)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
    tracemalloc.start()
    mgr.reload()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = snapshot.statistics("lineno")
    held = sum(stat.size for stat in stats)
    text.write(
        f"\nPython heap held after the third reload (tracemalloc): {held / rows:,.0f} B per rule; the top lines:\n"
    )
    for stat in stats[:10]:
        frame = stat.traceback[0]
        text.write(f"  {stat.size / rows:9,.1f} B/rule {stat.count:>10,} blocks  {frame.filename}:{frame.lineno}\n")
    return {"text": text.getvalue()}


CHILDREN = {"fill", "built", "bare", "image", "worker", "profile"}


def child_main(args: argparse.Namespace) -> int:
    if args.child == "worker":
        # A serving worker: open (as a worker serves, following the file, where TcpMgm.from_image
        # exists), look up, say so, then hold still until the parent has read its PSS.
        import tcpmgm
        from tcpmgm.matching.matcher import Matcher

        served: Any = tcpmgm.TcpMgm.from_image(args.image) if args.how == "tcpmgm" else Matcher.open(args.image)
        serve(served.lookup, random_lookups(LOOKUPS, seed=os.getpid()))
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.read()
        if args.how == "tcpmgm":
            served.close()  # its image watcher's thread
        return 0
    if args.child == "bare" and args.wait:
        result = child_bare()
        print(json.dumps(result), flush=True)
        sys.stdin.read()
        return 0
    if args.child == "built" and args.wait:
        result = child_built(args.rows, args.db, args.image)
        print(json.dumps(result), flush=True)
        sys.stdin.read()
        return 0
    result = {
        "fill": lambda: child_fill(args.rows, args.db),
        "built": lambda: child_built(args.rows, args.db, args.image),
        "bare": child_bare,
        "image": lambda: child_image(args.rows, args.image, args.how),
        "profile": lambda: child_profile(args.rows, args.db),
    }[args.child]()
    print(json.dumps(result), flush=True)
    return 0


def child_command(*arguments: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), *arguments]


def run_child(*arguments: str) -> dict[str, Any]:
    done = subprocess.run(child_command(*arguments), capture_output=True, text=True, cwd=HERE)
    if done.returncode != 0:
        raise RuntimeError(f"child {' '.join(arguments)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def waiting(commands: Sequence[Sequence[str]]) -> Iterator[list[tuple[subprocess.Popen[str], dict[str, Any]]]]:
    """Start the children, wait until each has printed its line, yield them (still running), then end them."""
    procs = [
        subprocess.Popen(child_command(*c), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE)
        for c in commands
    ]
    try:
        ready = []
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"child {proc.args} ended before it was ready ({proc.wait()})")
            ready.append((proc, json.loads(line)))
        yield ready
    finally:
        for proc in procs:
            with contextlib.suppress(BrokenPipeError):
                assert proc.stdin is not None
                proc.stdin.close()
        for proc in procs:
            proc.wait(timeout=60)


def total_pss(procs: Sequence[tuple[subprocess.Popen[str], dict[str, Any]]]) -> int:
    return sum(rollup(proc.pid)["Pss"] for proc, _ in procs)


# -- one N -------------------------------------------------------------------


def has_image_api() -> bool:
    from tcpmgm.matching.matcher import Matcher

    return hasattr(Matcher, "save") and hasattr(Matcher, "open")


def measure(rows: int, workers: Sequence[int], tmp: str, profile: bool) -> dict[str, Any]:
    import tcpmgm

    db, image = os.path.join(tmp, f"rules-{rows}.db"), os.path.join(tmp, f"rules-{rows}.tcpmgm")
    out: dict[str, Any] = {"rows": rows, "load_before": load()}
    out["fill"] = run_child("--child", "fill", "--rows", str(rows), "--db", db)
    out["load_measuring"] = load()
    # The built child waits after its report, so that its PSS is read beside the workers' below.
    with waiting([("--child", "built", "--wait", "--rows", str(rows), "--db", db, "--image", image)]) as built:
        out["built"] = built[0][1]
        built_pss = total_pss(built)
    if has_image_api() and os.path.exists(image):
        out["image"] = run_child("--child", "image", "--rows", str(rows), "--image", image, "--how", "open")
        if hasattr(tcpmgm.TcpMgm, "from_image"):
            out["from_image"] = run_child("--child", "image", "--rows", str(rows), "--image", image, "--how", "tcpmgm")
        pss = []
        with waiting([("--child", "bare", "--wait")]) as bare_one:
            bare_one_pss = total_pss(bare_one)
        how = "tcpmgm" if hasattr(tcpmgm.TcpMgm, "from_image") else "open"
        for count in workers:
            with waiting([("--child", "worker", "--image", image, "--how", how)] * count) as procs:
                worker_pss = total_pss(procs)
            with waiting([("--child", "bare", "--wait")] * count) as procs:
                bare_pss = total_pss(procs)
            pss.append({"workers": count, "worker_pss": worker_pss, "bare_pss": bare_pss, "how": how})
        out["pss"] = {"built_process": built_pss, "bare_one": bare_one_pss, "by_count": pss}
    out["load_after"] = load()
    if profile:  # after the figures, so that it does not disturb them
        out["profile"] = run_child("--child", "profile", "--rows", str(rows), "--db", db)["text"]
    for path in (db, image):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return out


# -- report ------------------------------------------------------------------


def per_rule(used: float, rows: int) -> float:
    return used / rows


def derived(m: dict[str, Any]) -> dict[str, Any]:
    """The figures of the tables, from one N's measurements."""
    n, built = m["rows"], m["built"]
    reloads = built["reloads"]
    first = reloads[0]["seconds"]
    d: dict[str, Any] = {
        "rows": n,
        "built_bytes_per_rule": [per_rule(r["rss"] - built["base"], n) for r in reloads],
        "c_bytes_per_rule": built["nbytes"] / n,
        # Peak during a reload over the RSS in service after it, the whole process (the measure).
        "peak_ratio": [r["peak"] / r["rss"] for r in reloads],
        # The same for the rules alone: both over the interpreter's own RSS before any rule.
        "peak_ratio_rules": [(r["peak"] - built["base"]) / (r["rss"] - built["base"]) for r in reloads],
        "peak_bytes": [r["peak"] for r in reloads],
        "rss_in_service": [r["rss"] for r in reloads],
        "reload_seconds": [r["seconds"] for r in reloads],
        "load": (m["load_measuring"], m["load_after"]),  # from the first child that measures
    }
    if "save_seconds" in built:
        d["save_seconds"] = built["save_seconds"]
        d["image_bytes"] = built["image_bytes"]
    for key in ("image", "from_image"):
        if key in m:
            d[f"{key}_bytes_per_rule"] = per_rule(m[key]["rss"] - m[key]["base"], n)
    if "image" in m:
        d["open_ms"] = m["image"]["open_seconds"] * 1e3
        d["reopen_ms"] = m["image"]["reopen_seconds"] * 1e3
        d["open_share"] = m["image"]["open_seconds"] / first
    if "pss" in m:
        pss = m["pss"]
        one_copy = pss["built_process"] - pss["bare_one"]  # the rules in service, once
        d["pss"] = [
            {
                **row,
                "one_copy": one_copy,
                "ratio": row["worker_pss"] / (one_copy + row["bare_pss"]),
            }
            for row in pss["by_count"]
        ]
        d["pss_built_process"] = pss["built_process"]
    return d


def share(part: float) -> str:
    """A small share as 1/N (1/52), a large one as a ratio (0.81x)."""
    return f"1/{1 / part:,.0f}" if 0 < part < 0.5 else f"{part:.2f}x"


def mb(value: float) -> str:
    return f"{value / 1e6:,.1f}"


def slash(values: Sequence[float], form: str) -> str:
    return " / ".join(format(v, form) for v in values)


# The columns of the memory table: heading, and the cell of one N's derived figures ("-": not measured).
COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("N", lambda d: f"{d['rows']:,}"),
    ("built B/rule, reload 1 / 2 / 3", lambda d: slash(d["built_bytes_per_rule"], ",.0f")),
    ("image B/rule (`Matcher.open`)", lambda d: f"{d['image_bytes_per_rule']:,.0f}"),
    ("`TcpMgm.from_image` B/rule", lambda d: f"{d['from_image_bytes_per_rule']:,.0f}"),
    ("C bytes/rule (`nbytes`)", lambda d: f"{d['c_bytes_per_rule']:,.0f}"),
    ("image file B/rule", lambda d: f"{d['image_bytes'] / d['rows']:,.0f}"),
    ("peak / in service, reload 1 / 2 / 3", lambda d: slash(d["peak_ratio"], ".2f")),
    ("the same over the bare interpreter", lambda d: slash(d["peak_ratio_rules"], ".2f")),
    ("reload s, 1 / 2 / 3", lambda d: slash(d["reload_seconds"], ".2f")),
    ("save s", lambda d: f"{d['save_seconds']:.3f}"),
    ("open ms (again)", lambda d: f"{d['open_ms']:.2f} ({d['reopen_ms']:.2f})"),
    ("open / reload 1", lambda d: share(d["open_share"])),
    ("load before → after", lambda d: f"{d['load'][0]:.2f} → {d['load'][1]:.2f}"),
)


def cell(figure: Callable[[dict[str, Any]], str], d: dict[str, Any]) -> str:
    try:
        return figure(d)
    except KeyError:
        return "-"


def markdown(results: Sequence[dict[str, Any]], header: str) -> str:
    rows = [derived(m) for m in results]
    lines = [header, ""]
    lines.append("| " + " | ".join(heading for heading, _ in COLUMNS) + " |")
    lines.append("|" + "---:|" * len(COLUMNS))
    lines += ["| " + " | ".join(cell(figure, d) for _, figure in COLUMNS) + " |" for d in rows]
    if any("pss" in d for d in rows):
        lines += [
            "",
            "| N | workers | workers' PSS MB | as many bare interpreters MB | one copy in service MB"
            " | workers / (one copy + bare) |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for d in rows:
            for row in d.get("pss", []):
                lines.append(
                    f"| {d['rows']:,} | {row['workers']} | {mb(row['worker_pss'])} | {mb(row['bare_pss'])}"
                    f" | {mb(row['one_copy'])} | {row['ratio']:.2f} |"
                )
        lines += [
            "",
            "One copy in service: the PSS of the process that built the rules itself (three reloads from SQLite)"
            " less that of one bare interpreter: "
            + ", ".join(f"N = {d['rows']:,}: {mb(d['pss_built_process'])} MB" for d in rows if "pss" in d)
            + " for the whole building process.",
        ]
    lines += ["", *targets(rows)]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def targets(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's targets against the largest N measured (they are set at N = 1,000,000)."""
    d = rows[-1]
    at = f"N = {d['rows']:,}" + ("" if d["rows"] == TARGET_N else f" (the target is for N = {TARGET_N:,})")
    out = [f"Targets, measured at {at}:", "", "| target | measured | status |", "|---|---|---|"]
    worst_built = max(d["built_bytes_per_rule"])
    out.append(
        f"| ≤ {TARGET_BYTES_PER_RULE} B per rule of RSS, built from the database | "
        f"{slash(d['built_bytes_per_rule'], ',.0f')} (reload 1 / 2 / 3)"
        f" | {verdict(worst_built <= TARGET_BYTES_PER_RULE)} |"
    )
    if "image_bytes_per_rule" in d:
        value = d["image_bytes_per_rule"]
        out.append(
            f"| ≤ {TARGET_BYTES_PER_RULE} B per rule of RSS, opened from an image | {value:,.0f}"
            f" | {verdict(value <= TARGET_BYTES_PER_RULE)} |"
        )
    worst_peak = max(d["peak_ratio"])
    out.append(
        f"| peak RSS during a reload ≤ {TARGET_PEAK_RATIO:g}x the RSS in service | {slash(d['peak_ratio'], '.2f')}x"
        f" (reload 1 / 2 / 3) | {verdict(worst_peak <= TARGET_PEAK_RATIO)} |"
    )
    worst_rules = max(d["peak_ratio_rules"])
    out.append(
        f"| the same for the rules alone (both over the bare interpreter) | {slash(d['peak_ratio_rules'], '.2f')}x"
        f" | {verdict(worst_rules <= TARGET_PEAK_RATIO)} |"
    )
    if "open_ms" in d:
        out.append(
            f"| open ≤ {TARGET_OPEN_MS:g} ms | {d['open_ms']:.2f} ms | {verdict(d['open_ms'] <= TARGET_OPEN_MS)} |"
        )
        out.append(
            f"| open ≤ 1/{1 / TARGET_OPEN_SHARE:.0f} of a SQLite reload | {share(d['open_share'])} of"
            f" {d['reload_seconds'][0]:.2f} s | {verdict(d['open_share'] <= TARGET_OPEN_SHARE)} |"
        )
    else:
        out.append("| image open ≤ 50 ms and ≤ 1/50 of a reload | not measured: no `Matcher.save` / `open` | - |")
    largest = [row for row in d.get("pss", []) if row["workers"] == max(WORKER_COUNTS)]
    if largest:
        row = largest[0]
        out.append(
            f"| {row['workers']} workers' PSS ≤ {TARGET_PSS_RATIO:g}x (one copy + {row['workers']} bare) |"
            f" {row['ratio']:.2f}x | {verdict(row['ratio'] <= TARGET_PSS_RATIO)} |"
        )
    return out


def plot(results: Sequence[dict[str, Any]], path: str, note: str) -> None:
    """RSS per rule against N, log-log: built (first reload), opened from the image, and the C bytes.

    The conventions of tcpmgm_bench.plot: matplotlib's object API without pyplot, ticks at the
    measured sizes written out, solid lines for what a process holds, dotted for the C arrays.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    rows = [derived(m) for m in results]
    lines = [
        ("built from SQLite, reload 1", [(d["rows"], d["built_bytes_per_rule"][0]) for d in rows], "-", "tab:red"),
        ("built, reload 3", [(d["rows"], d["built_bytes_per_rule"][-1]) for d in rows], "-", "tab:orange"),
        (
            "opened from the image (Matcher.open)",
            [(d["rows"], d["image_bytes_per_rule"]) for d in rows if "image_bytes_per_rule" in d],
            "-",
            "tab:blue",
        ),
        ("C bytes (Matcher.nbytes)", [(d["rows"], d["c_bytes_per_rule"]) for d in rows], ":", "tab:gray"),
    ]
    figure = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = figure.subplots()
    for label, points, style, color in lines:
        if points:
            ns, values = zip(*points)
            ax.plot(ns, values, style, color=color, marker="o", markersize=4, label=label, gid=label)
    ax.axhline(TARGET_BYTES_PER_RULE, color="tab:green", linestyle="--", linewidth=1, label="target at 1M: 300 B")
    sizes = [d["rows"] for d in rows]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.set_xlabel("N (carrier rules)")
    ax.set_ylabel("bytes per rule (RSS over the bare interpreter, /proc)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
    figure.suptitle("tcpmgm: memory per rule in service" + (f"\n{note}" if note else ""))
    figure.savefig(path)


def companion(title: str, command: Sequence[str]) -> str:
    """Another benchmark of the issue run as a child after the memory figures, its output kept,
    headed by the command and the load around it (so that one command prints every table)."""
    before = load()
    done = subprocess.run(command, capture_output=True, text=True, cwd=os.path.dirname(HERE))
    shown = " ".join(os.path.relpath(part) if os.path.isabs(part) else part for part in command[1:])
    body = done.stdout.rstrip() if done.returncode == 0 else f"failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return f"## {title}\n\n`python {shown}`, load average {before:.2f} → {load():.2f}:\n\n{body}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", help="comma-separated N (default 10000,100000)")
    parser.add_argument("--workers", help="comma-separated worker counts (default 1,4,16)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: N = 2,000, 1 and 2 workers")
    parser.add_argument("--json", help="also write the measurements and the derived figures to this file")
    parser.add_argument(
        "--profile", action="store_true", help="also print a cProfile of a reload and tracemalloc's top lines, per N"
    )
    parser.add_argument(
        "--reload-backends",
        help="then bench_reload.py on these backends (sqlite,postgres,mysql) at the N of 100,000 and more",
    )
    parser.add_argument(
        "--lookups", action="store_true", help="then `tcpmgm bench --workload carrier --markdown` at the same N"
    )
    parser.add_argument("--plot", help="also draw RSS per rule against N to this file (.png; needs matplotlib)")
    # A child's part (internal).
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--how", default="open", help=argparse.SUPPRESS)
    parser.add_argument("--wait", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.rows = int(args.rows or 0)  # the fill, built and image children are given one
        return child_main(args)
    sizes = [int(n) for n in args.rows.split(",")] if args.rows else list(QUICK_ROWS if args.quick else DEFAULT_ROWS)
    workers = (
        [int(n) for n in args.workers.split(",")]
        if args.workers
        else list(QUICK_WORKER_COUNTS if args.quick else WORKER_COUNTS)
    )
    if args.plot:
        from tcpmgm_bench.plot import require

        require(args.plot)
    from tcpmgm.matching.matcher import Matcher

    started = time.perf_counter()
    header = (
        f"Measured on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {Matcher.__module__}.{Matcher.__name__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {load():.2f} at the start."
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="tcpmgm-memory-") as tmp:
        for n in sizes:
            results.append(measure(n, workers, tmp, args.profile))
            print(f"# N = {n:,} done, load {load():.2f}, {time.perf_counter() - started:.0f} s so far", file=sys.stderr)
    header += f" {time.perf_counter() - started:.0f} s wall, load average {load():.2f} at the end."
    table = markdown(results, header)
    print(table)
    reload_sizes = ",".join(str(n) for n in sizes if n >= 100_000) or str(max(sizes))
    if args.reload_backends:
        reload_command = [sys.executable, os.path.join(HERE, "bench_reload.py"), "--rows", reload_sizes]
        print("\n" + companion("Reloads per backend", [*reload_command, "--backends", args.reload_backends]))
    if args.lookups:
        bench = [sys.executable, "-m", "tcpmgm", "bench", "--workload", "carrier", "--markdown"]
        bench += ["--sizes", ",".join(str(n) for n in sizes if n < 1_000_000)] + ["--million"] * (TARGET_N in sizes)
        print("\n" + companion("Lookups beside pytricia (carrier)", bench))
    for m in results:
        if "profile" in m:
            print(f"\n## Profile, N = {m['rows']:,}\n\n```\n{m['profile'].rstrip()}\n```")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"header": header, "measured": results, "derived": [derived(m) for m in results]}, file, indent=1)
    if args.plot:
        when = time.strftime("%Y-%m-%d", time.gmtime())
        loads = f"load {results[0]['load_measuring']:.1f} → {results[-1]['load_after']:.1f}"
        plot(results, args.plot, f"{Matcher.__name__}, {when}, {os.cpu_count()} CPUs, {loads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
