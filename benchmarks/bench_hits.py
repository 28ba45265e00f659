"""What counting hits costs a lookup: the compiled matcher with ``count_hits`` on beside off, in one run.

    python benchmarks/bench_hits.py                          # wall clock: carrier, ports, nested at 1,000 and 100,000
    python benchmarks/bench_hits.py --workload carrier --sizes 100000 --rounds 15
    python benchmarks/bench_hits.py --callgrind              # instructions per lookup under callgrind
    python benchmarks/bench_hits.py --threads                # lookup_many from one thread and from two

Wall clock (benchmarks/README.md#hit-counts): for each workload and N, one matcher counting and
one not, built from the same rules; each round times ``lookup()`` over the workload's lookups
and ``lookup_many`` over its IPv4 batch on both, in an order that alternates from round to round,
so that a drift of the machine's speed falls on both alike.  A figure is the best round in
nanoseconds per lookup; the ratio is counting over not counting.

``--callgrind`` runs each case in a child process under ``valgrind --tool=callgrind`` with
collection on inside ``Matcher.lookup`` and ``Matcher.lookup_many`` only (the build and the Python
loop around the calls are not counted), and prints instructions per lookup: repeatable where
wall clock is not, and this machine has no hardware counters.  ``--worker`` is that child.

``--threads`` times ``lookup_many`` over the IPv4 batch from one thread and from two at once (the
same number of calls in all), counting on and off: with counting on, the pass that turns ranks
into ids holds the GIL, so two threads share that part of each batch instead of running it side
by side.  A figure is the best round's ns per lookup; "2 threads / 1" is the speed-up.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable

from tcpmgm.matching import _matcher  # the hot path measured is the compiled classifier's
from tcpmgm_bench.harness import _load, _machine
from tcpmgm_bench.workloads import WORKLOADS, batch

CASES = ("single", "many")
# Every compiled function whose name holds Matcher_ and lookup: the wrappers and bodies of
# lookup and lookup_many (and what they call, which callgrind counts inside them).
TOGGLE = "*Matcher_*lookup*"


def _seconds(function: Callable[..., object], calls: Sequence[tuple[Any, ...]]) -> float:
    start = time.perf_counter()
    for arguments in calls:
        function(*arguments)
    return time.perf_counter() - start


def wall_clock(name: str, n: int, queries: int, rounds: int) -> dict[str, float]:
    """Best-of-``rounds`` ns per lookup for (single, many) x (on, off), and the two ratios."""
    workload = WORKLOADS[name](n, queries, seed=0)
    matchers = {"on": _matcher.Matcher(workload.rules), "off": _matcher.Matcher(workload.rules, count_hits=False)}
    singles = workload.lookups
    four = batch(singles, 4)
    best: dict[str, float] = {}
    gc.collect()
    for index in range(rounds):
        for state in ("on", "off") if index % 2 else ("off", "on"):
            matcher = matchers[state]
            timings = {
                "single": _seconds(matcher.lookup, singles) / len(singles),
                "many": _seconds(matcher.lookup_many, [four]) / len(four.protos),
            }
            for case, seconds in timings.items():
                key = f"{case}_{state}"
                best[key] = min(best.get(key, float("inf")), seconds * 1e9)
    for case in CASES:
        best[f"{case}_ratio"] = best[f"{case}_on"] / best[f"{case}_off"]
    return best


def threaded(name: str, n: int, queries: int, rounds: int, calls: int = 8) -> dict[str, float]:
    """Best-of-``rounds`` ns per lookup of ``calls`` IPv4 batches from 1 thread and from 2 threads
    (``calls // 2`` each), counting on and off, and the speed-ups."""
    workload = WORKLOADS[name](n, queries, seed=0)
    matchers = {"on": _matcher.Matcher(workload.rules), "off": _matcher.Matcher(workload.rules, count_hits=False)}
    four = batch(workload.lookups, 4)

    def run(matcher: Any, threads: int) -> float:
        start = threading.Barrier(threads + 1)

        def calling() -> None:
            start.wait()
            for _ in range(calls // threads):
                matcher.lookup_many(*four)

        workers = [threading.Thread(target=calling) for _ in range(threads)]
        for thread in workers:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in workers:
            thread.join()
        return time.perf_counter() - began

    best: dict[str, float] = {}
    gc.collect()
    for index in range(rounds):
        for state in ("on", "off") if index % 2 else ("off", "on"):
            for threads in (1, 2):
                key = f"{state}_{threads}"
                seconds = run(matchers[state], threads) / (calls * len(four.protos))
                best[key] = min(best.get(key, float("inf")), seconds * 1e9)
    for state in ("on", "off"):
        best[f"{state}_speedup"] = best[f"{state}_1"] / best[f"{state}_2"]
    return best


def worker(case: str, counting: str, name: str, n: int, queries: int) -> None:
    """The child that callgrind watches: the lookups of one case, once warm.

    ``counting`` is ``on``, ``off`` or ``default`` (``Matcher(rules)`` as built with no
    argument: counting on; and the only choice of a matcher from before counting existed)."""
    workload = WORKLOADS[name](n, queries, seed=0)
    if counting == "default":
        matcher = _matcher.Matcher(workload.rules)
    else:
        matcher = _matcher.Matcher(workload.rules, count_hits=counting == "on")
    if case == "single":
        for query in workload.lookups:
            matcher.lookup(*query)
    else:
        matcher.lookup_many(*batch(workload.lookups, 4))


def instructions(case: str, counting: str, name: str, n: int, queries: int) -> float:
    """Instructions per lookup of ``case``, counted by callgrind in a child process."""
    lookups = queries if case == "single" else len(batch(WORKLOADS[name](n, queries, seed=0).lookups, 4).protos)
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--toggle-collect={TOGGLE}",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        case,
        counting,
        f"--workload={name}",
        f"--sizes={n}",
        f"--queries={queries}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1)) / lookups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS), help="default: all three")
    parser.add_argument("--sizes", default="1000,100000", help="comma-separated rule counts")
    parser.add_argument("--queries", type=int, default=20_000, help="lookups per round")
    parser.add_argument("--rounds", type=int, default=9, help="rounds per figure (wall clock)")
    parser.add_argument("--callgrind", action="store_true", help="instructions per lookup instead of wall clock")
    parser.add_argument("--threads", action="store_true", help="lookup_many from one thread and from two")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "COUNTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = args.workload or ["carrier", "ports", "nested"]
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.worker:
        worker(args.worker[0], args.worker[1], names[0], sizes[0], args.queries)
        return 0
    load_before = _load()
    if args.threads:
        columns = "1 thread ns | 2 threads ns | 2 threads / 1"
        print(f"| workload | N | off: {columns} | on: {columns} |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
    elif args.callgrind:
        print("| workload | N | lookup instr, off | on | lookup_many instr, off | on |")
        print("|---|---:|---:|---:|---:|---:|")
    else:
        print("| workload | N | lookup ns, off | on | on/off | lookup_many ns, off | on | on/off |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        for n in sizes:
            if args.threads:
                row = threaded(name, n, args.queries, args.rounds)
                cells = [f"{row[key]:.1f}" for key in ("off_1", "off_2")] + [f"{row['off_speedup']:.2f}"]
                cells += [f"{row[key]:.1f}" for key in ("on_1", "on_2")] + [f"{row['on_speedup']:.2f}"]
                print(f"| {name} | {n:,} | " + " | ".join(cells) + " |", flush=True)
                continue
            if args.callgrind:
                figures = [
                    instructions(case, state, name, n, args.queries) for case in CASES for state in ("off", "on")
                ]
                print(f"| {name} | {n:,} | " + " | ".join(f"{value:,.1f}" for value in figures) + " |", flush=True)
                continue
            row = wall_clock(name, n, args.queries, args.rounds)
            cells = [
                f"{row['single_off']:.0f}",
                f"{row['single_on']:.0f}",
                f"{row['single_ratio']:.3f}",
                f"{row['many_off']:.1f}",
                f"{row['many_on']:.1f}",
                f"{row['many_ratio']:.3f}",
            ]
            print(f"| {name} | {n:,} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n{_machine()}; load average {load_before} → {_load()} (1 minute, before → after)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
