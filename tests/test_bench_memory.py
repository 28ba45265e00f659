"""The scripts of issue 12's benchmarks, smoke-tested (benchmarks/README.md#memory-reloads-and-images-issue-12):
``bench_memory.py --quick`` end to end, its peak-RSS probe, and ``bench_reload.py``'s driver
baselines (the loader's own ``SELECT``, every row).  No test looks at a time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from types import ModuleType

import pytest

import tcpmgm

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def script(name: str) -> ModuleType:
    """A benchmark script imported as a module (benchmarks/ is not a package; its scripts import each other)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux's /proc/PID/smaps_rollup")
def test_quick_memory_run_prints_the_tables_and_writes_the_json(tmp_path: Path) -> None:
    out, drawing = tmp_path / "memory.json", tmp_path / "memory.png"
    plotting = ["--plot", str(drawing)] if find_spec("matplotlib") else []  # the bench and test extras have it
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_memory.py"), "--quick", "--json", str(out), *plotting],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where its scratch database and image go
    )
    assert done.returncode == 0, done.stderr
    assert "| N | built B/rule" in done.stdout and "Targets, measured at N = 2,000" in done.stdout
    result = json.loads(out.read_text())
    (derived,) = result["derived"]
    assert derived["rows"] == 2_000
    assert [reload["loaded"] for reload in result["measured"][0]["built"]["reloads"]] == [2_000] * 3
    # Every peak is at least the RSS in service after its reload; the C bytes are the matcher's nbytes.
    assert all(ratio >= 1 for ratio in derived["peak_ratio"])
    assert derived["c_bytes_per_rule"] > 0
    # The image was written, opened by Matcher.open and TcpMgm.from_image, and served by the workers.
    assert derived["image_bytes"] > 0 and derived["open_ms"] > 0
    assert derived["image_bytes_per_rule"] > 0 and derived["from_image_bytes_per_rule"] > 0
    assert "| workers |" in done.stdout
    assert [row["workers"] for row in derived["pss"]] == [1, 2]
    assert all(row["worker_pss"] > 0 and row["bare_pss"] > 0 for row in derived["pss"])
    if plotting:
        assert drawing.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # The scratch folder is gone with its database and image; what was asked for stays.
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([out.name] + ([drawing.name] * bool(plotting)))


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc/self/clear_refs")
def test_peak_rss_sees_memory_freed_inside_the_block() -> None:
    bench_memory = script("bench_memory")
    peak = bench_memory.PeakRss()
    size = 64 << 20
    before = bench_memory.rss()
    with peak.during():
        block = b"\x01" * size  # written, so every page is resident
        del block
    assert peak.peak >= before + size * 0.9, (peak.how, before, peak.peak)
    assert bench_memory.rss() < peak.peak - size // 2


def test_sqlite_baseline_fetches_every_row_of_the_loaders_own_select(tmp_path: Path) -> None:
    bench_reload = script("bench_reload")
    path = tmp_path / "rules.db"
    url = f"sqlite:///{path}"
    tcpmgm.TcpMgm(url).create_schema()
    conn = sqlite3.connect(path, isolation_level=None)
    bench_reload.fill("sqlite", conn, bench_reload.carrier_rows(300))
    conn.close()
    # A manager on an open connection (reload then runs on it) shows its statements to the trace callback.
    watched = sqlite3.connect(path)
    statements: list[str] = []
    watched.set_trace_callback(statements.append)
    mgr = tcpmgm.TcpMgm(watched)
    mgr.reload()
    watched.close()
    selects = [s for s in statements if s.startswith("SELECT") and "WHERE" not in s and "tcp_mgm" in s]
    assert selects == [bench_reload.loader_select(mgr)]
    fetches = bench_reload.driver_fetches("sqlite", url, bench_reload.loader_select(mgr))
    assert {name: fetch() for name, fetch in fetches.items()} == {"fetchall": 300}


def test_reload_benchmark_runs_on_sqlite_and_judges_its_targets() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "bench_reload.py"),
            "--rows",
            "300",
            "--backends",
            "sqlite",
            "--reloads",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| sqlite | 300 |")]
    assert len(row.split(" | ")[2].split(" / ")) == 2  # one time per reload
    assert "| reload ≤ 1.5x `fetchall` | sqlite | 300 |" in done.stdout
    assert "| later reloads no slower than the first | sqlite | 300 |" in done.stdout
