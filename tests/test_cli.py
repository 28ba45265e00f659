"""The ``tcpmgm`` console script, run for real in a subprocess."""

import json
import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import tcpmgm
from tcpmgm import mi

SCRIPT = Path(sys.executable).parent / "tcpmgm"
if not SCRIPT.exists():
    # CI installs the package into the venv that runs the tests: a missing script there is a failure.
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"the tcpmgm console script is not installed next to {sys.executable}")
    pytest.skip(f"the tcpmgm console script is not installed next to {sys.executable}", allow_module_level=True)


def run(*args, cwd, env=None, check=None):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TCPMGM_")}
    environment.update(env or {})
    result = subprocess.run([str(SCRIPT), *args], cwd=cwd, env=environment, capture_output=True, text=True,
                            timeout=120)
    if check is not None:
        assert result.returncode == check, (result.stdout, result.stderr)
    return result


def one_error_line(result, code):
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def table(tmp_path):
    """A fresh default table (./tcpmgm.db in tmp_path) with three rules, written in-process (fast)."""
    mgr = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'tcpmgm.db'}")
    mgr.create_schema()
    mgr.add_rule({"id": 1, "proto": "tcp", "remote_addr": "10.0.0.0/8", "connect_timeout": 900})
    mgr.add_rule({"id": 2, "proto": "any", "remote_addr": "10.1.0.0/16", "remote_port": 5060, "no_new_conn": 1})
    mgr.add_rule({"id": 3, "proto": "tls", "remote_addr": "2001:db8::/32", "keepidle": 60})
    return tmp_path


def test_init_add_list_rm_on_the_default_database(tmp_path):
    result = run("db", "init", cwd=tmp_path, check=0)
    assert "schema version 2" in result.stdout and "sqlite:///tcpmgm.db" in result.stdout
    assert (tmp_path / "tcpmgm.db").exists()
    new_id = run("add", "--proto", "tls", "--remote-addr", "203.0.113.0/24", "--remote-port", "5061",
                 "--connect-timeout", "1500", "--attrs", "max_msg_chunks=8", cwd=tmp_path, check=0)
    assert new_id.stdout.strip() == "1"
    assert run("add", "--proto", "tcp", cwd=tmp_path, check=0).stdout.strip() == "2"

    rows = json.loads(run("list", "--json", cwd=tmp_path, check=0).stdout)
    assert [(r["id"], r["proto"], r["remote_addr"], r["connect_timeout"], r["attrs"]) for r in rows] == [
        (1, "tls", "203.0.113.0/24", 1500, "max_msg_chunks=8"), (2, "tcp", None, 100, None),
    ]
    assert "parallel_read" not in rows[0]

    lines = run("list", cwd=tmp_path, check=0).stdout.splitlines()
    header, rule = lines[0], lines[2]
    for column, value in (("proto", "tls"), ("remote_addr", "203.0.113.0/24"), ("connect_timeout", "1500")):
        assert rule.index(value) == header.index(column)      # aligned under its header
    assert set(lines[1]) == {"-", " "}

    assert run("rm", "1", cwd=tmp_path, check=0).stdout.strip() == "removed rule 1"
    assert [r["id"] for r in json.loads(run("list", "--json", cwd=tmp_path, check=0).stdout)] == [2]
    assert "no rule with id 1" in one_error_line(run("rm", "1", cwd=tmp_path), 1)


def test_db_url_from_the_environment_and_the_option(tmp_path):
    url = f"sqlite:///{tmp_path / 'env.db'}"
    run("db", "init", "--schema-version", "1", cwd=tmp_path, env={"TCPMGM_DB": url}, check=0)
    run("add", "--proto", "bin", "--parallel-read", "2", cwd=tmp_path, env={"TCPMGM_DB": url}, check=0)
    rows = json.loads(run("list", "--json", "--db", url, cwd=tmp_path, check=0).stdout)
    assert rows[0]["proto"] == "bin" and rows[0]["parallel_read"] == 2
    assert not (tmp_path / "tcpmgm.db").exists()


def test_add_refuses_invalid_rows_before_writing(table):
    line = one_error_line(run("add", "--proto", "udp", "--remote-addr", "192.0.2.0/24", cwd=table), 1)
    assert line == "tcpmgm: error: rule not added: column 'proto', value 'udp': 'udp' is not a TCP-based protocol"
    line = one_error_line(run("add", "--id", "9", "--remote-addr", "10.0.0.0/33", cwd=table), 1)
    assert "rule 9" in line and "remote_addr" in line and "/33" in line
    line = one_error_line(run("add", "--remote-port", "abc", cwd=table), 2)
    assert "--remote-port" in line
    assert [r["id"] for r in json.loads(run("list", "--json", cwd=table, check=0).stdout)] == [1, 2, 3]


def test_match_ipv4_ipv6_and_explain(table):
    result = run("match", "tcp", "10.1.2.3:5060", "10.0.0.1:5060", cwd=table, check=0)
    assert result.stdout.startswith("rule #1 tcp 10.0.0.0/8")
    assert any(line.split() == ["connect_timeout", "900"] for line in result.stdout.splitlines())
    result = run("match", "tls", "[2001:db8::7]:5061", "[2001:db8::1]:5061", "--json", cwd=table, check=0)
    assert json.loads(result.stdout)["rule"] == 3
    result = run("match", "any", "10.1.2.3:5060", "--explain", cwd=table, check=0)
    assert "#2 any 10.1.0.0/16:5060" in result.stdout
    assert "protocol 'any' where the winner names a protocol" in result.stdout
    explained = json.loads(run("match", "any", "10.1.2.3:5060", "--explain", "--json", cwd=table, check=0).stdout)
    assert [m["rule"] for m in explained["matches"]] == [1, 2]
    result = run("match", "tcp", "192.0.2.1:5060", cwd=table, check=0)
    assert result.stdout.startswith("rule 0: no rule matches")
    assert "remote" in one_error_line(run("match", "tcp", "10.0.0.999:5060", cwd=table), 2)
    assert "port" in one_error_line(run("match", "tcp", "[::1]:99999", cwd=table), 2)


def test_renamed_table_and_columns(tmp_path):
    options = ["--table", "paths", "--column", "connect_timeout=connect_to", "--column", "remote_addr=peer"]
    run("db", "init", *options, cwd=tmp_path, check=0)
    run("add", "--remote-addr", "192.0.2.0/24", "--connect-timeout", "5", "--proto", "tcp", *options,
        cwd=tmp_path, check=0)
    with sqlite3.connect(tmp_path / "tcpmgm.db") as conn:
        assert conn.execute("SELECT peer, connect_to FROM paths").fetchall() == [("192.0.2.0/24", 5)]
    rows = json.loads(run("list", "--json", *options, cwd=tmp_path, check=0).stdout)
    assert rows[0]["remote_addr"] == "192.0.2.0/24" and rows[0]["connect_timeout"] == 5
    result = run("match", "tcp", "192.0.2.9:5060", "--json", *options, cwd=tmp_path, check=0)
    assert json.loads(result.stdout)["profile"]["connect_timeout"] == 5
    # Forgetting the renames is an error naming the columns, as for check and match, not a shorter listing.
    for command in (["list"], ["list", "--json"], ["check"]):
        error = one_error_line(run(*command, "--table", "paths", cwd=tmp_path), 1)
        assert "table 'paths' lacks column(s): remote_addr, connect_timeout" in error


def test_listener_tags(tmp_path):
    run("db", "init", cwd=tmp_path, check=0)
    assert "socket tag" in one_error_line(run("add", "--local-addr", "internal", cwd=tmp_path), 1)
    run("add", "--proto", "any", "--local-addr", "internal", "--listener", "internal=10.0.0.1", cwd=tmp_path,
        check=0)
    result = run("match", "tcp", "192.0.2.1:5060", "10.0.0.1:5060", "--json", "--listener", "internal=10.0.0.1",
                 cwd=tmp_path, check=0)
    assert json.loads(result.stdout)["rule"] == 1


def test_check_clean_table_with_a_warning_exits_0(table):
    run("add", "--id", "4", "--proto", "tcp", "--remote-addr", "192.0.2.77/24", cwd=table, check=0)
    result = run("check", cwd=table, check=0)
    assert result.stdout.splitlines()[0].startswith("loaded 4 rule(s), rejected 0")
    assert "warning: host-bits: rule 4" in result.stdout
    assert result.stdout.splitlines()[-1] == "0 error(s), 1 warning(s)"
    assert result.stderr == ""   # piped: no progress output


def test_check_reports_shadowed_duplicate_and_rejected_rules(table):
    run("add", "--id", "4", "--proto", "tcp", "--remote-addr", "10.2.0.0/16", "--remote-port", "5060",
        "--priority", "1", cwd=table, check=0)
    run("add", "--id", "5", "--proto", "tls", "--remote-addr", "2001:db8::/32", "--keepidle", "61",
        cwd=table, check=0)
    with sqlite3.connect(table / "tcpmgm.db") as conn:
        conn.execute("INSERT INTO tcp_mgm (id, proto, remote_addr) VALUES (6, 'sctp', NULL)")
    result = run("check", cwd=table)
    assert result.returncode == 1, result.stderr
    assert "error: shadowed: rule 4 never wins: rule 1 matches" in result.stdout
    assert "error: duplicate: rule 5 has the same filters and priority as rule 3" in result.stdout
    assert "error: rejected: rule 6: column 'proto'" in result.stdout
    report = json.loads(run("check", "--json", cwd=table).stdout)
    assert report["loaded"] == 5 and report["rejected"] == 1 and report["errors"] == 3
    assert {(f["kind"], f["rule_id"], tuple(f["by"])) for f in report["findings"]} == {
        ("shadowed", 4, (1,)), ("duplicate", 5, (3,)), ("rejected", 6, ()),
    }


def test_check_shows_progress_on_a_terminal(table):
    leader, follower = pty.openpty()
    try:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("TCPMGM_")}
        process = subprocess.run([str(SCRIPT), "check"], cwd=table, env=environment, stdout=subprocess.PIPE,
                                 stderr=follower, timeout=120)
        os.close(follower)
        follower = None
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:      # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower is not None:
            os.close(follower)
    assert process.returncode == 0
    assert b"loading" in shown and b"linting" in shown


@pytest.mark.parametrize("args, needle", [
    (["list", "--table", "missing"], "cannot read table 'missing'"),
    (["match", "tcp", "10.0.0.1", "--table", "missing"], "cannot read table 'missing'"),
    (["check", "--table", "missing"], "cannot read table 'missing'"),
    (["list", "--db", "oracle://db/x"], "unsupported database URL scheme 'oracle'"),
    (["list", "--db", "sqlite:///no/such/dir/x.db"], "SQLite database 'no/such/dir/x.db' does not exist"),
    (["db", "init", "--db", "sqlite:///no/such/dir/x.db"], "cannot open SQLite database"),
    (["list", "--table", "bad;name"], "invalid SQL identifier"),
    (["db", "init"], "already exists"),
])
def test_expected_failures_are_one_line_exit_1(table, args, needle):
    assert needle in one_error_line(run(*args, cwd=table), 1)


@pytest.mark.parametrize("args", [["frob"], ["rm"], ["rm", "x"], ["list", "--column", "nope"],
                                  ["db", "init", "--schema-version", "3"], ["match", "tcp"]])
def test_usage_mistakes_are_one_line_exit_2(tmp_path, args):
    assert "error" in one_error_line(run(*args, cwd=tmp_path), 2)


def test_python_dash_m(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tcpmgm", "db", "init"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "created table" in result.stdout


def test_mi_command_against_a_running_endpoint(table):
    mgr = tcpmgm.TcpMgm(f"sqlite:///{table / 'tcpmgm.db'}")
    mgr.reload()
    with mi.MIServer(mgr, "127.0.0.1", 0, token="t0k") as server:
        auth = ["--url", server.url, "--token", "t0k"]
        run("add", "--id", "7", "--proto", "ws", cwd=table, check=0)
        reloaded = json.loads(run("mi", "tcp_reload", *auth, cwd=table, check=0).stdout)
        assert reloaded["loaded"] == 4
        named = run("mi", "tcp_match", "proto=tcp", "remote=10.1.2.3:5060", "explain=true", *auth,
                    cwd=table, check=0)
        assert json.loads(named.stdout)["rule"] == 1
        positional = run("mi", "tcp_match", "ws", "192.0.2.1", *auth, cwd=table, check=0)
        assert json.loads(positional.stdout)["rule"] == 7
        alias = run("mi", "tcp_mgm:reload", cwd=table, env={"TCPMGM_MI_URL": server.url,
                                                            "TCPMGM_MI_TOKEN": "t0k"}, check=0)
        assert json.loads(alias.stdout)["loaded"] == 4
        assert "unauthorized" in one_error_line(run("mi", "tcp_list", "--url", server.url, cwd=table), 1)
        assert "method not found" in one_error_line(run("mi", "tcp_nope", *auth, cwd=table), 1)
        assert "NAME=VALUE" in one_error_line(run("mi", "tcp_match", "tcp", "remote=x", *auth, cwd=table), 2)
        url = server.url
    assert "cannot reach" in one_error_line(run("mi", "tcp_list", "--url", url, cwd=table), 1)
