"""``tcpmgm demo``: the installed console script and ``python -m tcpmgm``, in a subprocess."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# What the demo's sample connections must be answered with (SPEC 1's four use
# cases, SPEC 4's order): (proto, remote, rule id, a value that differs from the default).
EXPECTED_TABLE = [
    ("tls", "203.0.113.45:5061", "1", "connect_timeout=1500"),
    ("tcp", "[2001:db8:1000::7]:5060", "2", "connect_timeout=800"),
    ("tcp", "198.51.100.23:40312", "3", "no_new_conn=1"),
    ("bin", "10.0.0.2:5566", "4", "attrs=max_msg_chunks=64"),
    ("bin", "10.0.0.3:5566", "5", "keepidle=60"),
    ("tcp", "192.0.2.99:5060", "0", "(default)"),
]
REJECTED = "rejected: rule 6: column 'proto', value 'udp': 'udp' is not a TCP-based protocol"


def console_script():
    """The ``tcpmgm`` script installed beside this interpreter (where pip put it)."""
    candidate = Path(sys.executable).parent / ("tcpmgm.exe" if os.name == "nt" else "tcpmgm")
    found = str(candidate) if candidate.exists() else shutil.which("tcpmgm")
    if found is None:
        pytest.fail(f"the tcpmgm console script is not installed next to {sys.executable}")
    return found


def run(command, cwd):
    env = {k: v for k, v in os.environ.items() if k != "TCPMGM_DB"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def assert_demo_output(result, db_path):
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    out = result.stdout
    assert f"demo database: {db_path}" in out.splitlines()
    assert db_path.is_file()
    assert "loaded 5 rule(s), rejected 1, 0 warning(s), schema version 2" in out
    assert REJECTED in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["tls"], ["tcp"], ["bin"])]
    assert [(r[0], r[1], r[3]) for r in rows] == [(p, remote, rule) for p, remote, rule, _ in EXPECTED_TABLE]
    for cells, (_, _, _, difference) in zip(rows, EXPECTED_TABLE):
        assert difference in " ".join(cells[4:])


def test_console_script_demo(tmp_path):
    result = run([console_script(), "demo"], cwd=tmp_path)
    assert_demo_output(result, tmp_path / "tcpmgm-demo.db")


def test_demo_refreshes_an_existing_file(tmp_path):
    db_path = tmp_path / "custom.db"
    db_path.write_bytes(b"left over from before")
    result = run([console_script(), "demo", "--path", "custom.db"], cwd=tmp_path)
    assert_demo_output(result, db_path)
    again = run([console_script(), "demo", "--path", str(db_path)], cwd=tmp_path)
    assert_demo_output(again, db_path)


def test_python_dash_m_demo(tmp_path):
    result = run([sys.executable, "-m", "tcpmgm", "demo"], cwd=tmp_path)
    assert_demo_output(result, tmp_path / "tcpmgm-demo.db")
