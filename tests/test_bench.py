"""``tcpmgm bench``'s outputs for a reader: ``--markdown`` tables, and ``--plot FILE`` (the points
it draws, the file it writes, on a tiny measurement).

The drawing needs matplotlib, which the bench and the test extras install (CI
draws); installed without it, those tests skip and say why.  The points and the
refusals run everywhere.  No test looks at a time.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from importlib.util import find_spec
from pathlib import Path

import pytest
from click.testing import CliRunner

from tcpmgm.tools.cli import cli
from tcpmgm_bench.harness import format_markdown
from tcpmgm_bench.plot import SERIES, series

NO_MATPLOTLIB = "matplotlib is not installed (it comes with the test and the bench extras)"


def test_markdown_is_one_table_per_workload() -> None:
    figures: dict[str, float | None] = {"build_s": 0.0125, "bytes_per_rule": 10630.4, "single_ns": 1234.4}
    rows = [
        ("carrier", 100, {**figures, "many_v4_ns": 50.2, "many_v6_ns": None}),
        ("ports", 100, {**figures, "many_v6_ns": None}),
        ("carrier", 100_000, {**figures, "many_v4_ns": None, "many_v6_ns": 60.0}),
    ]
    parts = format_markdown(rows, "Measured here.").split("\n\n")
    assert parts[0] == "Measured here."
    assert [part.splitlines()[0] for part in parts[1::2]] == ["### carrier", "### ports"]
    # Absolute figures; a column with no figure for the workload is left out, "-" fills the others.
    assert parts[2].splitlines() == [
        "| N | build s | B/rule | lookup ns | lookup_many ns, IPv4 | lookup_many ns, IPv6 |",
        "|---:|---:|---:|---:|---:|---:|",
        "| 100 | 0.013 | 10,630 | 1,234 | 50 | - |",
        "| 100,000 | 0.013 | 10,630 | 1,234 | - | 60 |",
    ]
    assert parts[4].splitlines()[0] == "| N | build s | B/rule | lookup ns |"


def test_points_follow_n_and_leave_out_what_was_not_measured() -> None:
    rows = [
        ("ports", 1_000, {"single_ns": 30.0, "many_v4_ns": 3.0, "many_v6_ns": None, "linear_ns": 300.0}),
        ("carrier", 100, {"single_ns": 10.0, "many_v6_ns": 2.0, "pytricia_ns": None}),
        ("ports", 100, {"single_ns": 20.0, "many_v4_ns": 2.0, "many_v6_ns": None, "linear_ns": 200.0}),
    ]
    assert series(rows) == {
        "ports": {
            "single_ns": [(100, 20.0), (1_000, 30.0)],
            "many_v4_ns": [(100, 2.0), (1_000, 3.0)],
            "linear_ns": [(100, 200.0), (1_000, 300.0)],
        },
        "carrier": {"single_ns": [(100, 10.0)], "many_v6_ns": [(100, 2.0)]},
    }


def test_every_series_is_a_figure_the_harness_measures() -> None:
    from tcpmgm_bench.harness import measure

    row = measure("carrier", 100, queries=50)
    # The prefix tries are measured when the bench extra installed them, and only then.
    tries = {"pytricia": "pytricia", "py-radix": "radix"}  # name in the figures: module
    absent = {f"{name}_ns" for name, module in tries.items() if find_spec(module) is None}
    assert {line.key for line in SERIES} - absent <= set(row)
    assert not absent & set(row)
    # The reference is left off the plot on purpose (plot.py says why).
    assert "reference_ns" in row and "reference_ns" not in {line.key for line in SERIES}


def test_plot_without_matplotlib_is_a_usage_error_before_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry makes the import raise ImportError, whether an earlier test imported matplotlib or not.
    for name in ["matplotlib", *(name for name in sys.modules if name.startswith("matplotlib."))]:
        monkeypatch.setitem(sys.modules, name, None)
    result = CliRunner().invoke(cli, ["bench", "--sizes", "100", "--plot", "lookup.png"])
    assert result.exit_code == 2, result.output
    assert "--plot needs matplotlib" in result.output and ".[bench]" in result.output
    assert "workload" not in result.output  # no table: nothing was measured


def test_plot_refuses_a_file_name_it_cannot_write(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason=NO_MATPLOTLIB)
    for name, message in [
        (tmp_path / "lookup.txt", "the file name must end in one of"),
        (tmp_path / "missing" / "lookup.png", "no folder"),
    ]:
        result = CliRunner().invoke(cli, ["bench", "--sizes", "100", "--plot", str(name)])
        assert result.exit_code == 2, result.output
        assert message in result.output and "workload" not in result.output
        assert not name.exists()


@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_plot_of_a_tiny_measurement(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("matplotlib", reason=NO_MATPLOTLIB)
    path = tmp_path / f"lookup.{suffix}"
    arguments = ["bench", "--sizes", "100,200", "--queries", "40", "--workload", "carrier", "--workload", "ports"]
    result = CliRunner().invoke(cli, [*arguments, "--plot", str(path)])
    assert result.exit_code == 0, result.output
    assert "lookup ns" in result.output  # the table is printed as without --plot
    if suffix == "png":
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        return
    # Each line is a group with the id workload:key.  ports has no IPv6 lookups, so no IPv6 line.
    ids = {element.get("id") for element in ElementTree.parse(path).iter()}
    tries = {f"{label}_ns" for label, module in [("pytricia", "pytricia"), ("py-radix", "radix")] if find_spec(module)}
    measured = {"single_ns", "many_v4_ns", "linear_ns", "empty_ns"} | tries
    drawn = {identifier for identifier in ids if identifier and identifier.split(":")[0] in ("carrier", "ports")}
    assert drawn == {f"carrier:{key}" for key in measured | {"many_v6_ns"}} | {f"ports:{key}" for key in measured}
