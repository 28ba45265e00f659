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
from tcpmgm.service import mi

SCRIPT = Path(sys.executable).parent / "tcpmgm"
if not SCRIPT.exists():
    # CI installs the package into the venv that runs the tests: a missing script there is a failure.
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"the tcpmgm console script is not installed next to {sys.executable}")
    pytest.skip(f"the tcpmgm console script is not installed next to {sys.executable}", allow_module_level=True)


def run(*args, cwd, env=None, check=None):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TCPMGM_")}
    environment.update(env or {})
    result = subprocess.run([str(SCRIPT), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120)
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
    new_id = run(
        "add",
        "--proto",
        "tls",
        "--remote-addr",
        "203.0.113.0/24",
        "--remote-port",
        "5061",
        "--connect-timeout",
        "1500",
        "--attrs",
        "max_msg_chunks=8",
        cwd=tmp_path,
        check=0,
    )
    assert new_id.stdout.strip() == "1"
    assert run("add", "--proto", "tcp", cwd=tmp_path, check=0).stdout.strip() == "2"

    rows = json.loads(run("list", "--json", cwd=tmp_path, check=0).stdout)
    assert [(r["id"], r["proto"], r["remote_addr"], r["connect_timeout"], r["attrs"]) for r in rows] == [
        (1, "tls", "203.0.113.0/24", 1500, "max_msg_chunks=8"),
        (2, "tcp", None, 100, None),
    ]
    assert "parallel_read" not in rows[0]

    lines = run("list", cwd=tmp_path, check=0).stdout.splitlines()
    header, rule = lines[0], lines[2]
    for column, value in (("proto", "tls"), ("remote_addr", "203.0.113.0/24"), ("connect_timeout", "1500")):
        assert rule.index(value) == header.index(column)  # aligned under its header
    assert set(lines[1]) == {"-", " "}

    assert run("rm", "1", cwd=tmp_path, check=0).stdout.strip() == "removed rule 1"
    assert [r["id"] for r in json.loads(run("list", "--json", cwd=tmp_path, check=0).stdout)] == [2]
    assert "no rule with id 1" in one_error_line(run("rm", "1", cwd=tmp_path), 1)


def test_db_init_help_names_the_opensips_releases_of_each_schema_version(tmp_path):
    shown = " ".join(run("db", "init", "--help", cwd=tmp_path, check=0).stdout.split())
    assert "1: OpenSIPS 3.3 to 3.6 (with parallel_read); 2: OpenSIPS 4.0 and later." in shown


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
    # The first line shows the connection looked up (issue 10, item 14), the winner comes next.
    lines = result.stdout.splitlines()
    assert lines[0] == "connection: tcp remote 10.1.2.3:5060, local 10.0.0.1:5060"
    assert lines[1].startswith("rule #1 tcp 10.0.0.0/8")
    assert any(line.split() == ["connect_timeout", "900"] for line in result.stdout.splitlines())
    result = run("match", "tls", "[2001:db8::7]:5061", "[2001:db8::1]:5061", "--json", cwd=table, check=0)
    assert json.loads(result.stdout)["rule"] == 3
    result = run("match", "any", "10.1.2.3:5060", "--explain", cwd=table, check=0)
    assert "#2 any 10.1.0.0/16:5060" in result.stdout
    assert "protocol 'any' where the winner names a protocol" in result.stdout
    explained = json.loads(run("match", "any", "10.1.2.3:5060", "--explain", "--json", cwd=table, check=0).stdout)
    assert [m["rule"] for m in explained["matches"]] == [1, 2]
    result = run("match", "tcp", "192.0.2.1:5060", cwd=table, check=0)
    assert result.stdout.splitlines()[:2] == [
        "connection: tcp remote 192.0.2.1:5060, local any",
        "rule 0: no rule matches (default profile)",
    ]
    assert "remote" in one_error_line(run("match", "tcp", "10.0.0.999:5060", cwd=table), 2)
    assert "port" in one_error_line(run("match", "tcp", "[::1]:99999", cwd=table), 2)


@pytest.mark.parametrize(
    "args",
    [
        ["2001:db8::1:5060"],  # read as 2001:db8::1:5060 port 0 before
        ["2001:db8::1"],
        ["[2001:db8::7]:5061", "2001:db8::1:5061"],
        ["10.1.2.3:5060", "fe80::1%eth0"],
    ],
)
def test_match_refuses_an_unbracketed_ipv6_address(table, args):
    """Issue 10, item 14: a usage error naming the [addr]:port form, not a silent port 0."""
    line = one_error_line(run("match", "tls", *args, cwd=table), 2)
    assert "[addr]:port" in line and "tcpmgm match: error:" in line


def test_match_prints_the_connection_as_understood(table):
    result = run("match", "TLS", "[2001:db8::7]:5061", "[::ffff:192.0.2.1]", cwd=table, check=0)
    assert result.stdout.splitlines()[0] == "connection: tls remote [2001:db8::7]:5061, local [::ffff:192.0.2.1]:0"
    found = json.loads(run("match", "tls", "[2001:db8::7]:5061", "--json", cwd=table, check=0).stdout)
    assert found["connection"] == {
        "proto": "tls",
        "remote_ip": "2001:db8::7",
        "remote_port": 5061,
        "local_ip": None,
        "local_port": 0,
    }
    assert found["rule"] == 3


def test_match_local_side_may_be_a_socket_tag(tmp_path):
    """Issue 10, item 15: LOCAL may name a listener, resolved as a rule's local_addr tag is."""
    run("db", "init", cwd=tmp_path, check=0)
    tags = ["--listener", "internal=10.0.0.1", "--listener", "public=192.0.2.10"]
    run(
        "add",
        "--id",
        "5",
        "--proto",
        "any",
        "--local-addr",
        "internal",
        "--keepidle",
        "60",
        *tags,
        cwd=tmp_path,
        check=0,
    )
    run(
        "add",
        "--id",
        "6",
        "--proto",
        "tcp",
        "--local-addr",
        "192.0.2.10",
        "--local-port",
        "5060",
        *tags,
        cwd=tmp_path,
        check=0,
    )
    result = run("match", "tcp", "10.2.3.4:5060", "internal", *tags, cwd=tmp_path, check=0)
    assert result.stdout.splitlines()[:2] == [
        "connection: tcp remote 10.2.3.4:5060, local 10.0.0.1:0 (socket tag 'internal')",
        "rule #5 any any:* <- internal:* prio 0",
    ]
    found = json.loads(
        run("match", "tcp", "10.2.3.4:5060", "public:5060", "--json", *tags, cwd=tmp_path, check=0).stdout
    )
    assert found["rule"] == 6
    assert found["connection"]["local_ip"] == "192.0.2.10" and found["connection"]["local_tag"] == "public"
    line = one_error_line(run("match", "tcp", "10.2.3.4:5060", "external:5060", *tags, cwd=tmp_path), 2)
    assert "'external:5060': neither an address nor a known socket tag (listeners: internal, public)" in line
    line = one_error_line(run("match", "tcp", "10.2.3.4:5060", "internal", cwd=tmp_path), 2)
    assert "listeners: none configured" in line


def test_add_stores_the_normalised_values_it_validated(tmp_path):
    """Issue 10, item 17: the table holds what loading reads, not what was typed."""
    run("db", "init", cwd=tmp_path, check=0)
    run(
        "add",
        "--id",
        "1",
        "--proto",
        "TCP",
        "--no-new-conn",
        "5",
        "--keepalive",
        "7",
        "--remote-addr",
        " 10.1.2.3/8",
        "--local-addr",
        "::ffff:192.0.2.1",
        cwd=tmp_path,
        check=0,
    )
    run(
        "add",
        "--id",
        "2",
        "--proto",
        "ANY",
        "--local-addr",
        "Internal",
        "--attrs",
        " max_msg_chunks = 4 ;",
        "--listener",
        "Internal=10.0.0.1",
        cwd=tmp_path,
        check=0,
    )
    with sqlite3.connect(tmp_path / "tcpmgm.db") as conn:
        rows = conn.execute(
            "SELECT id, proto, no_new_conn, keepalive, remote_addr, local_addr, attrs FROM tcp_mgm ORDER BY id"
        ).fetchall()
    assert rows == [
        (1, "tcp", 1, 1, "10.0.0.0/8", "192.0.2.1", None),
        (2, "any", 0, 1, None, "Internal", "max_msg_chunks=4"),
    ]


def test_renamed_table_and_columns(tmp_path):
    options = ["--table", "paths", "--column", "connect_timeout=connect_to", "--column", "remote_addr=peer"]
    run("db", "init", *options, cwd=tmp_path, check=0)
    run(
        "add",
        "--remote-addr",
        "192.0.2.0/24",
        "--connect-timeout",
        "5",
        "--proto",
        "tcp",
        *options,
        cwd=tmp_path,
        check=0,
    )
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
    run("add", "--proto", "any", "--local-addr", "internal", "--listener", "internal=10.0.0.1", cwd=tmp_path, check=0)
    result = run(
        "match",
        "tcp",
        "192.0.2.1:5060",
        "10.0.0.1:5060",
        "--json",
        "--listener",
        "internal=10.0.0.1",
        cwd=tmp_path,
        check=0,
    )
    assert json.loads(result.stdout)["rule"] == 1


def test_check_clean_table_with_a_warning_exits_0(table):
    # Written past `add`, which stores the prefix as 192.0.2.0/24 (issue 10, item 17).
    with sqlite3.connect(table / "tcpmgm.db") as conn:
        conn.execute("INSERT INTO tcp_mgm (id, proto, remote_addr) VALUES (4, 'tcp', '192.0.2.77/24')")
    result = run("check", cwd=table, check=0)
    assert result.stdout.splitlines()[0].startswith("loaded 4 rule(s), rejected 0")
    assert "warning: host-bits: rule 4" in result.stdout
    assert result.stdout.splitlines()[-1] == "0 error(s), 1 warning(s)"
    assert result.stderr == ""  # piped: no progress output


def test_check_reports_shadowed_duplicate_and_rejected_rules(table):
    run(
        "add",
        "--id",
        "4",
        "--proto",
        "tcp",
        "--remote-addr",
        "10.2.0.0/16",
        "--remote-port",
        "5060",
        "--priority",
        "1",
        cwd=table,
        check=0,
    )
    run("add", "--id", "5", "--proto", "tls", "--remote-addr", "2001:db8::/32", "--keepidle", "61", cwd=table, check=0)
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
        ("shadowed", 4, (1,)),
        ("duplicate", 5, (3,)),
        ("rejected", 6, ()),
    }


def test_check_shows_and_counts_every_warning(tmp_path):
    """Issue 10, item 13: "47 warning(s)" with none shown, and "warnings": 0 in JSON, for one table."""
    columns = ", ".join(
        f"{c} {'TEXT' if c in ('proto', 'remote_addr', 'local_addr', 'attrs') else 'INTEGER'}"
        for c in tcpmgm.model.rule.COLUMNS
        if c != "parallel_read"
    )
    with sqlite3.connect(tmp_path / "tcpmgm.db") as conn:  # not made by db init: NULLs allowed
        conn.execute(f"CREATE TABLE tcp_mgm ({columns})")
        conn.execute(
            "INSERT INTO tcp_mgm (id, proto, remote_addr, remote_port, local_port, priority, "
            "connect_timeout, con_lifetime, msg_read_timeout, send_threshold, no_new_conn, alias_mode, "
            "keepalive, keepcount, keepidle, keepinterval) "
            "VALUES (1, 'tcp', '10.1.2.3/8', 0, 0, 0, 100, 120, 4, 0, 0, 0, 1, 100000, 7200, 75)"
        )
        conn.execute("INSERT INTO tcp_mgm (id, proto, remote_addr, keepidle) VALUES (2, 'tls', '192.0.2.0/24', 9)")
    nulls = 12  # rule 2: every NOT NULL column but id, proto and keepidle
    result = run("check", cwd=tmp_path, check=0)
    lines = result.stdout.splitlines()
    shown = [line for line in lines if line.startswith("warning: ")]
    assert lines[-1] == f"0 error(s), {len(shown)} warning(s)" and len(shown) == 2 + nulls
    assert "warning: host-bits: rule 1: column 'remote_addr', value '10.1.2.3/8'" in result.stdout
    assert (
        "warning: kernel-clamp: rule 1: column 'keepcount', value 100000: outside the kernel's 1..127; "
        "tcpmgm.apply sets 127"
    ) in lines
    assert (
        "warning: null: rule 2: column 'con_lifetime', value None: NULL in a NOT NULL column, "
        "read as the default 120" in lines
    )
    assert "warning" not in lines[0]  # one count, the findings', not a second one of the loader's
    report = json.loads(run("check", "--json", cwd=tmp_path, check=0).stdout)
    warned = [f for f in report["findings"] if f["severity"] == "warning"]
    assert report["warnings"] == len(warned) == len(shown)
    assert [f["message"] for f in warned] == [line[len("warning: ") :].split(": ", 1)[1] for line in shown]
    assert {(f["kind"], f["rule_id"], f["column"]) for f in warned} >= {
        ("host-bits", 1, "remote_addr"),
        ("kernel-clamp", 1, "keepcount"),
        ("null", 2, "keepalive"),
    }


def test_check_shows_progress_on_a_terminal(table):
    leader, follower = pty.openpty()
    try:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("TCPMGM_")}
        process = subprocess.run(
            [str(SCRIPT), "check"], cwd=table, env=environment, stdout=subprocess.PIPE, stderr=follower, timeout=120
        )
        os.close(follower)
        follower = None
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other side is closed
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


@pytest.mark.parametrize(
    "args, needle",
    [
        (["list", "--table", "missing"], "cannot read table 'missing'"),
        (["match", "tcp", "10.0.0.1", "--table", "missing"], "cannot read table 'missing'"),
        (["check", "--table", "missing"], "cannot read table 'missing'"),
        (["list", "--db", "oracle://db/x"], "unsupported database URL scheme 'oracle'"),
        (["list", "--db", "sqlite:///no/such/dir/x.db"], "SQLite database 'no/such/dir/x.db' does not exist"),
        (["db", "init", "--db", "sqlite:///no/such/dir/x.db"], "cannot open SQLite database"),
        (["list", "--table", "bad;name"], "invalid SQL identifier"),
        (["db", "init"], "already exists"),
    ],
)
def test_expected_failures_are_one_line_exit_1(table, args, needle):
    assert needle in one_error_line(run(*args, cwd=table), 1)


@pytest.mark.parametrize(
    "args",
    [
        ["frob"],
        ["rm"],
        ["rm", "x"],
        ["list", "--column", "nope"],
        ["db", "init", "--schema-version", "3"],
        ["match", "tcp"],
    ],
)
def test_usage_mistakes_are_one_line_exit_2(tmp_path, args):
    assert "error" in one_error_line(run(*args, cwd=tmp_path), 2)


def test_python_dash_m(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tcpmgm", "db", "init"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "created table" in result.stdout


def test_mi_command_against_a_running_endpoint(table):
    mgr = tcpmgm.TcpMgm(f"sqlite:///{table / 'tcpmgm.db'}")
    mgr.reload()
    with mi.MIServer(mgr, "127.0.0.1", 0, token="t0k") as server:
        auth = ["--url", server.url, "--token", "t0k"]
        run("add", "--id", "7", "--proto", "ws", cwd=table, check=0)
        reloaded = json.loads(run("mi", "tcp_reload", *auth, cwd=table, check=0).stdout)
        assert reloaded["loaded"] == 4
        named = run("mi", "tcp_match", "proto=tcp", "remote=10.1.2.3:5060", "explain=true", *auth, cwd=table, check=0)
        assert json.loads(named.stdout)["rule"] == 1
        positional = run("mi", "tcp_match", "ws", "192.0.2.1", *auth, cwd=table, check=0)
        assert json.loads(positional.stdout)["rule"] == 7
        alias = run(
            "mi", "tcp_mgm:reload", cwd=table, env={"TCPMGM_MI_URL": server.url, "TCPMGM_MI_TOKEN": "t0k"}, check=0
        )
        assert json.loads(alias.stdout)["loaded"] == 4
        assert "unauthorized" in one_error_line(run("mi", "tcp_list", "--url", server.url, cwd=table), 1)
        assert "method not found" in one_error_line(run("mi", "tcp_nope", *auth, cwd=table), 1)
        assert "NAME=VALUE" in one_error_line(run("mi", "tcp_match", "tcp", "remote=x", *auth, cwd=table), 2)
        url = server.url
    assert "cannot reach" in one_error_line(run("mi", "tcp_list", "--url", url, cwd=table), 1)
