"""``tcpmgm bench --plot FILE``: nanoseconds per lookup against N, log-log, one panel per workload.

The lines are the compiled classifier's single and batch lookups and the single
lookups of the baselines of benchmarks/README.md#baselines that were measured
(pytricia and py-radix only when the ``bench`` extra is installed).  The
pure-Python reference is left out: it is two to three decades above the linear
scan and would flatten every other line; its ratio is in the table.

matplotlib (the ``bench`` extra) is imported only here, and only when a plot is
asked for: :func:`require` checks it, and the file name, before minutes of
measuring, and :func:`draw` writes the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import click

if TYPE_CHECKING:
    from matplotlib.artist import Artist

    from tcpmgm_bench.harness import Row

__all__ = ["SERIES", "Series", "draw", "require", "series"]


class Series(NamedTuple):
    """One line of every panel: which figure of a row it plots, and how."""

    key: str  # the row's key (harness.measure)
    label: str
    style: str  # matplotlib line style: solid for the matcher, dashed for the tries, dotted for the rest
    color: str


SERIES = (
    Series("single_ns", "Matcher.lookup (str addresses)", "-", "tab:blue"),
    Series("many_v4_ns", "Matcher.lookup_many, IPv4 batch", "-", "tab:green"),
    Series("many_v6_ns", "Matcher.lookup_many, IPv6 batch", "-", "tab:olive"),
    Series("pytricia_ns", "pytricia get (remote address only)", "--", "tab:orange"),
    Series("py-radix_ns", "py-radix search_best (remote address only)", "--", "tab:red"),
    Series("linear_ns", "compiled linear scan", ":", "tab:purple"),
    Series("empty_ns", "empty Python call (the floor)", ":", "tab:gray"),
)


def series(rows: Sequence[Row]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """The points to draw: workload -> series key -> (N, ns per lookup), N ascending.

    Workloads keep the order of ``rows``.  A figure that was not measured (no
    IPv6 lookups in the workload, a baseline not installed) is left out, and so
    is a series left with no point.
    """
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for name, n, row in rows:
        lines = out.setdefault(name, {})
        for line in SERIES:
            value = row.get(line.key)
            if value is not None:
                lines.setdefault(line.key, []).append((n, value))
    for lines in out.values():
        for points in lines.values():
            points.sort()
    return out


def require(path: str) -> None:
    """Fail now, not after the measurements, if the plot could not be written to ``path``."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise click.UsageError(f"--plot needs matplotlib ({error}); from a checkout: pip install '.[bench]'") from None
    formats = Figure().canvas.get_supported_filetypes()
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    if suffix not in formats:
        raise click.BadParameter(
            f"{path!r}: the file name must end in one of .{', .'.join(sorted(formats))}", param_hint="--plot"
        )
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise click.BadParameter(f"{path!r}: no folder {folder!r}", param_hint="--plot")


def draw(rows: Sequence[Row], path: str, note: str = "") -> None:
    """Write the plot of ``rows`` to ``path`` (format from its suffix), ``note`` under the title.

    Each line carries the id ``workload:key`` (an SVG keeps it as the id of the
    line's group), so that a test, or a reader of the SVG, can tell which
    series were drawn.
    """
    # The object API without pyplot: no global figure state, no GUI backend chosen.
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    points = series(rows)
    figure = Figure(figsize=(4.8 * max(1, len(points)), 5.2), layout="constrained")
    axes = figure.subplots(1, max(1, len(points)), sharey=True, squeeze=False)[0]
    for ax, (name, lines) in zip(axes, points.items()):
        for line in SERIES:
            if line.key not in lines:
                continue
            ns, values = zip(*lines[line.key])
            ax.plot(
                ns,
                values,
                line.style,
                color=line.color,
                marker="o",
                markersize=4,
                label=line.label,
                gid=f"{name}:{line.key}",
            )
        sizes = sorted({n for each in lines.values() for n, _ in each})
        ax.set_xscale("log")
        ax.set_yscale("log")
        # Ticks at the measured sizes, written out: "100,000" reads faster than 10^5.
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(name)
        ax.set_xlabel("N (rules)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("ns per lookup (best of the passes; a batch per element)")
    # One legend for the figure, each series once, whichever panels it is in.
    legend: dict[str, Artist] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    figure.legend(
        list(legend.values()),
        list(legend),
        loc="outside lower center",
        ncols=min(4, len(legend)) or 1,
        fontsize="small",
    )
    figure.suptitle("tcpmgm bench: time per lookup against the number of rules" + (f"\n{note}" if note else ""))
    figure.savefig(path)
