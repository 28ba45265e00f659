"""``tcpmgm demo``: the installed console script and ``python -m tcpmgm``, in a subprocess."""

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import tcpmgm
import tcpmgm.tools.demo

# What the demo's sample connections must be answered with (docs/behaviour.md four use
# cases, docs/behaviour.md#which-rule-wins order): (proto, remote, rule id, a value that differs from the default).
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


def test_demo_refreshes_its_own_database(tmp_path):
    db_path = tmp_path / "custom.db"
    assert_demo_output(run([console_script(), "demo", "--path", "custom.db"], cwd=tmp_path), db_path)
    with sqlite3.connect(db_path) as conn:  # an earlier run's leftovers go with the refresh
        conn.execute("DELETE FROM tcp_mgm WHERE id = 1")
    again = run([console_script(), "demo", "--path", str(db_path)], cwd=tmp_path)
    assert_demo_output(again, db_path)


def _rules_database(path):
    mgr = tcpmgm.TcpMgm(f"sqlite:///{path}")
    mgr.create_schema()
    mgr.add_rule({"id": 41, "proto": "tcp", "remote_addr": "192.0.2.0/24"})


@pytest.mark.parametrize(
    "make",
    ids=["text-file", "rules-database", "other-sqlite-header", "other-sqlite-db"],
    argvalues=[
        lambda path: path.write_bytes(b"left over from before"),  # a text file became a database
        _rules_database,  # real rules became the demo's six rows
        lambda path: path.write_bytes(b"SQLite format 3\x00" + bytes(84)),  # an SQLite header, not the demo's
        lambda path: sqlite3.connect(path).execute("PRAGMA user_version = 7").connection.close(),
    ],
)
def test_demo_refuses_to_replace_a_file_it_did_not_write(tmp_path, make):
    """Issue 10, item 16: an existing file is replaced only if it is a demo database, or with --force."""
    db_path = tmp_path / "precious.db"
    make(db_path)
    before = db_path.read_bytes()
    result = run([console_script(), "demo", "--path", "precious.db"], cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == (
        f"tcpmgm: error: {db_path} exists and is not a tcpmgm demo database; not replacing it "
        "(choose another --path, or --force to replace it)"
    )
    assert db_path.read_bytes() == before
    forced = run([console_script(), "demo", "--path", "precious.db", "--force"], cwd=tmp_path)
    assert_demo_output(forced, db_path)
    assert tcpmgm.tools.demo.is_demo_database(str(db_path))


def test_demo_refuses_a_directory(tmp_path):
    (tmp_path / "rules").mkdir()
    for extra in ([], ["--force"]):
        result = run([console_script(), "demo", "--path", "rules", *extra], cwd=tmp_path)
        assert result.returncode == 1 and "is a directory" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "rules").is_dir()


def test_python_dash_m_demo(tmp_path):
    result = run([sys.executable, "-m", "tcpmgm", "demo"], cwd=tmp_path)
    assert_demo_output(result, tmp_path / "tcpmgm-demo.db")
