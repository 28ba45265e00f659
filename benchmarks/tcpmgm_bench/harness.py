"""``tcpmgm bench``: the compiled classifier beside the baselines of benchmarks/README.md#baselines, in one run.

For each workload of benchmarks/README.md#workloads (:mod:`tcpmgm_bench.workloads`) and each N it measures
the build time of :class:`tcpmgm.Matcher`, the C memory it owns per rule, the
cost of one ``lookup`` (``str`` addresses), the cost per lookup inside
``lookup_many`` (IPv4 and IPv6 batches apart), and the same single lookups
through every baseline: an empty Python function with the same arguments,
pytricia's and py-radix's longest-prefix match on the same remote prefixes
(``pip install '.[bench]'`` from a checkout), the compiled linear scan and the
pure-Python reference.  Slow baselines get fewer lookups at large N; every
figure is per lookup, so they stay comparable.

It prints two aligned tables (absolute figures, then ratios), or with
``--markdown`` one Markdown table per workload, the form benchmarks/README.md
shows; ``--plot FILE`` also draws the lookup figures against N
(:mod:`tcpmgm_bench.plot`).
"""

from __future__ import annotations

import gc
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional, TextIO

import click

from tcpmgm.matching.reference import ReferenceMatcher
from tcpmgm.model.text import aligned
from tcpmgm_bench import plot
from tcpmgm_bench.workloads import WORKLOADS, Workload, batch

__all__ = ["Row", "command", "format_markdown", "format_table", "measure"]

DEFAULT_SIZES = (100, 1_000, 10_000, 100_000)

Row = tuple[str, int, dict[str, Optional[float]]]  # workload, N, measure()'s figures


def _per_call(function: Callable[..., object], queries: Sequence[tuple[Any, ...]], repeat: int = 5) -> float:
    """Best-of-``repeat`` nanoseconds per call of ``function(*query)`` over ``queries``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for query in queries:
            function(*query)
        best = min(best, time.perf_counter() - start)
    return best / len(queries) * 1e9


def _empty(
    proto: str | None,
    remote_ip: Any,
    remote_port: int = 0,
    local_ip: Any = None,
    local_port: int = 0,
) -> None:
    return None


def _prefix_tries(workload: Workload) -> dict[str, Callable[[str], object]]:
    """Longest-prefix ``get`` of the bench extra's libraries, on the workload's remote prefixes.

    Each is called with the remote address alone, as its users would call it:
    no wrapper adds a Python call to the baseline's cost.
    """
    out: dict[str, Callable[[str], object]] = {}
    prefixes = {str(rule.remote) for rule in workload.rules if rule.remote is not None}
    try:
        import pytricia
    except ImportError:
        pass
    else:
        tree = pytricia.PyTricia(128)
        for prefix in prefixes:
            tree[prefix] = prefix
        out["pytricia"] = tree.get
    try:
        import radix
    except ImportError:
        pass
    else:
        rtree = radix.Radix()
        for prefix in prefixes:
            rtree.add(prefix)
        out["py-radix"] = rtree.search_best
    return out


def measure(name: str, n: int, queries: int = 20_000, seed: int = 0) -> dict[str, float | None]:
    """One row of the table: every figure for ``name`` at ``n`` rules."""
    from tcpmgm.matching import _matcher  # the benchmark is about the compiled classifier
    from tcpmgm_bench._linear_scan import LinearScanBaseline

    workload = WORKLOADS[name](n, queries, seed=seed)
    lookups = workload.lookups
    gc.collect()
    start = time.perf_counter()
    matcher = _matcher.Matcher(workload.rules)
    row: dict[str, float | None] = {
        "build_s": time.perf_counter() - start,
        "bytes_per_rule": matcher.nbytes / n,
        "single_ns": _per_call(matcher.lookup, lookups),
        "empty_ns": _per_call(_empty, lookups),
    }
    for version in (4, 6):
        buffers = batch(lookups, version)
        count = len(buffers.protos)
        if count:
            row[f"many_v{version}_ns"] = min(_timed(matcher.lookup_many, buffers) for _ in range(9)) / count * 1e9
        else:
            row[f"many_v{version}_ns"] = None
    remotes = [(query[1],) for query in lookups]
    for label, get in _prefix_tries(workload).items():
        row[f"{label}_ns"] = _per_call(get, remotes)
    linear = LinearScanBaseline(workload.rules)
    row["linear_ns"] = _per_call(linear.lookup, lookups[: max(20, min(len(lookups), 5_000_000 // n))], 1)
    reference = ReferenceMatcher(workload.rules)
    row["reference_ns"] = _per_call(reference.lookup, lookups[: max(5, min(len(lookups), 300_000 // n))], 1)
    return row


def _timed(function: Callable[..., object], arguments: Sequence[Any]) -> float:
    start = time.perf_counter()
    function(*arguments)
    return time.perf_counter() - start


def _ratio(baseline: float | None, ours: float | None) -> str:
    return "-" if baseline is None or not ours else f"{baseline / ours:.1f}x"


def _ns(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _rate(ns: float | None) -> str:
    """Millions of lookups per second at ``ns`` nanoseconds each."""
    return f"{1e3 / ns:.1f}" if ns else "-"


def format_table(rows: Sequence[Row]) -> str:
    """Two aligned tables: absolute figures, then how many times faster the matcher is."""
    first = [
        ("workload", "N", "build s", "B/rule", "lookup ns", "many v4 ns", "many v6 ns", "Mlookup/s v4", "Mlookup/s v6")
    ]
    second = [
        (
            "workload",
            "N",
            "vs empty call",
            "vs pytricia",
            "vs py-radix",
            "vs linear scan",
            "vs reference",
            "many v4 vs lookup",
        )
    ]
    for name, n, row in rows:
        rate = {v: _rate(row[f"many_v{v}_ns"]) for v in (4, 6)}
        first.append(
            (
                name,
                f"{n:,}",
                f"{row['build_s']:.3f}",
                f"{row['bytes_per_rule']:.0f}",
                _ns(row["single_ns"]),
                _ns(row["many_v4_ns"]),
                _ns(row["many_v6_ns"]),
                rate[4],
                rate[6],
            )
        )
        single = row["single_ns"]
        second.append(
            (
                name,
                f"{n:,}",
                _ratio(row["empty_ns"], single),
                _ratio(row.get("pytricia_ns"), single),
                _ratio(row.get("py-radix_ns"), single),
                _ratio(row["linear_ns"], single),
                _ratio(row["reference_ns"], single),
                _ratio(single, row["many_v4_ns"]),
            )
        )
    return "\n\n".join(aligned(table, right=True) for table in (first, second))


# The columns of format_markdown: heading, row key, digits after the point (ns and bytes: none).
_MARKDOWN_COLUMNS = (
    ("build s", "build_s", 3),
    ("B/rule", "bytes_per_rule", 0),
    ("lookup ns", "single_ns", 0),
    ("lookup_many ns, IPv4", "many_v4_ns", 0),
    ("lookup_many ns, IPv6", "many_v6_ns", 0),
    ("pytricia ns", "pytricia_ns", 0),
    ("py-radix ns", "py-radix_ns", 0),
    ("linear scan ns", "linear_ns", 0),
    ("reference ns", "reference_ns", 0),
    ("empty call ns", "empty_ns", 0),
)


def format_markdown(rows: Sequence[Row], note: str = "") -> str:
    """One Markdown table per workload, in the order of ``rows``: the form benchmarks/README.md shows.

    Every figure is absolute (a ratio is two columns of one line).  A column
    with no figure for the workload (no IPv6 lookups, a baseline not
    installed) is left out; "-" is a figure missing from some of its rows.
    """
    by_workload: dict[str, list[tuple[int, dict[str, float | None]]]] = {}
    for name, n, row in rows:
        by_workload.setdefault(name, []).append((n, row))
    parts = [note] if note else []
    for name, measured in by_workload.items():
        columns = [column for column in _MARKDOWN_COLUMNS if any(row.get(column[1]) is not None for _, row in measured)]
        lines = [
            "| N | " + " | ".join(heading for heading, _, _ in columns) + " |",
            "|---:" * (1 + len(columns)) + "|",
        ]
        for n, row in measured:
            cells = ["-" if row.get(key) is None else f"{row[key]:,.{digits}f}" for _, key, digits in columns]
            lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
        parts.append(f"### {name}\n\n" + "\n".join(lines))
    return "\n\n".join(parts)


@click.command("bench")
@click.option(
    "--workload",
    "workloads",
    multiple=True,
    type=click.Choice(sorted(WORKLOADS)),
    help="Workload(s) to run (default: all three).",
)
@click.option(
    "--sizes", default=",".join(map(str, DEFAULT_SIZES)), show_default=True, help="Comma-separated rule counts."
)
@click.option("--million", is_flag=True, help="Add N = 1,000,000 (slow to generate).")
@click.option("--queries", default=20_000, show_default=True, help="Lookups per measurement.")
@click.option("--seed", default=0, show_default=True, help="Workload seed.")
@click.option(
    "--markdown", is_flag=True, help="Print one Markdown table per workload (benchmarks/README.md's form) instead."
)
@click.option(
    "--plot",
    "plot_file",
    metavar="FILE",
    help="Also draw ns per lookup against N, log-log, one panel per workload, to FILE (.png, .svg, .pdf, ...;"
    " needs matplotlib: the bench extra).",
)
def command(
    workloads: Sequence[str],
    sizes: str,
    million: bool,
    queries: int,
    seed: int,
    markdown: bool,
    plot_file: str | None,
) -> None:
    """Benchmark the compiled classifier against the benchmarks/README.md#baselines baselines and print ratios."""
    try:
        counts = [int(size) for size in sizes.split(",") if size.strip()]
    except ValueError:
        raise click.BadParameter(f"not a list of integers: {sizes!r}", param_hint="--sizes") from None
    if million:
        counts.append(1_000_000)
    if plot_file is not None:
        plot.require(plot_file)
    names = list(workloads) or ["carrier", "ports", "nested"]
    show_progress = sys.stderr.isatty()
    load_before = _load()
    rows: list[Row] = []
    for name in names:
        for n in counts:
            if show_progress:
                click.echo(f"\r{name} N={n:,} ...".ljust(40), err=True, nl=False)
            rows.append((name, n, measure(name, n, queries, seed)))
    if show_progress:
        click.echo("\r".ljust(41) + "\r", err=True, nl=False)
    # Where and how busy: a wall-clock figure means little without them.
    note = f"{_machine()}; load average {load_before} → {_load()} (1 minute, before → after)"
    out: TextIO = sys.stdout
    out.write((format_markdown(rows, f"Measured on {note}.") if markdown else format_table(rows)) + "\n")
    if plot_file is not None:
        plot.draw(rows, plot_file, note)
        click.echo(f"plot written to {plot_file}", err=True)
    if not markdown:
        click.echo(note, err=True)


def _machine() -> str:
    """The processor (Linux names it in /proc/cpuinfo), the CPU count and the Python."""
    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            processor = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{processor}, {os.cpu_count()} CPUs, {python}"


def _load() -> str:
    """The 1-minute load average, as ``uptime`` shows it: the plot says how busy the machine was."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"
