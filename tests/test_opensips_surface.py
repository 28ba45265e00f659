"""What an operator sees of tcpmgm.opensips: TcpMgm's rules as read and OpenSIPS's order of them,
`tcpmgm check --opensips`, `tcpmgm match --explain`, and the admin endpoint's methods."""

import json
import os
import pty
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from checkout import CHECKOUT
from mi_endpoints import KINDS, start

import tcpmgm
from tcpmgm.opensips import Difference, OpenSIPSOrder
from tcpmgm.opensips.report import Report
from tcpmgm.service import mi

# A tcp /16 inside a tcp /8 at the same priority, and a tls rule read between them: OpenSIPS's
# comparator finds the tls rule equal to both, so its merge sort keeps the /8 first.
NESTED = [
    {"id": 1, "proto": "tcp", "remote_addr": "10.0.0.0/8", "connect_timeout": 900},
    {"id": 2, "proto": "tls", "remote_addr": "192.0.2.0/24"},
    {"id": 3, "proto": "tcp", "remote_addr": "10.1.0.0/16", "connect_timeout": 300},
]


def manager(path, rows):
    mgr = tcpmgm.TcpMgm(f"sqlite:///{path}")
    mgr.create_schema()
    for row in rows:
        mgr.add_rule(row)
    return mgr


def test_the_manager_keeps_the_order_the_database_returned(tmp_path):
    mgr = manager(tmp_path / "rules.db", [{"id": 9, "proto": "tcp"}, {"id": 2, "proto": "tls"}])
    with sqlite3.connect(mgr.source.path) as conn:  # a row the loader rejects is left out, in its place
        conn.execute("INSERT INTO tcp_mgm (id, proto) VALUES (4, 'udp')")
        conn.execute("INSERT INTO tcp_mgm (id, proto) VALUES (7, 'any')")
    assert mgr.rules_as_read == ()
    mgr.reload()
    # SQLite returns a plain SELECT in rowid order, here the id's (an INTEGER PRIMARY KEY).
    assert [rule.id for rule in mgr.rules_as_read] == [2, 7, 9]
    assert [rule.id for rule in mgr.matcher] == [2, 9, 7]  # named protocols first
    assert set(mgr.rules_as_read) == set(mgr.matcher)


def test_the_order_as_read_is_the_plain_selects_on_every_backend(scratch):
    mgr = tcpmgm.TcpMgm(scratch.url)
    mgr.create_schema()
    for row in [
        {"id": 1, "proto": "tcp"},
        {"id": 2, "proto": "tcp", "remote_addr": "10.0.0.0/8"},
        {"id": 3, "proto": "tls", "remote_addr": "192.0.2.0/24"},
    ]:
        mgr.add_rule(row)
    # PostgreSQL writes an updated row anew: its plain SELECT then returns it last.
    scratch.execute("UPDATE tcp_mgm SET connect_timeout = 5 WHERE id = 1")
    mgr.reload()
    as_read = [rule.id for rule in mgr.rules_as_read]
    assert as_read == [row[0] for row in scratch.execute("SELECT id FROM tcp_mgm")]
    assert as_read != [rule.id for rule in mgr.matcher]  # not the documented order
    mgr.close()


def test_opensips_order_is_built_once_per_reload(tmp_path):
    mgr = manager(tmp_path / "rules.db", NESTED)
    mgr.reload()
    order = mgr.opensips_order
    assert isinstance(order, OpenSIPSOrder) and mgr.opensips_order is order
    assert [rule.id for rule in order.paths] == [1, 2, 3]
    # where the two orders part: tcpmgm's documented order picks the /16, OpenSIPS the /8
    assert mgr.lookup("tcp", "10.1.2.3").id == 3
    assert order.lookup("tcp", "10.1.2.3").id == 1
    # as the README says: the same rows read the other way round sort as documented
    assert OpenSIPSOrder(reversed(mgr.rules_as_read)).lookup("tcp", "10.1.2.3").id == 3
    mgr.add_rule({"id": 4, "proto": "tcp", "remote_addr": "10.1.2.0/24"})
    assert mgr.opensips_order is order  # not before the next reload
    mgr.reload()
    assert mgr.opensips_order is not order and len(mgr.opensips_order) == 4


def test_opensips_order_answers_with_the_managers_default(tmp_path):
    default = tcpmgm.default_profile().replace(connect_timeout=1234)
    mgr = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'rules.db'}", default=default)
    mgr.create_schema()
    mgr.reload()
    answer = mgr.opensips_order.lookup("tcp", "198.51.100.1")
    assert answer.id == 0 and answer.connect_timeout == 1234


@pytest.fixture
def nested(tmp_path):
    mgr = manager(tmp_path / "tcpmgm.db", NESTED)
    mgr.reload()
    return mgr


# -- tcpmgm match --explain ------------------------------------------------------------


SCRIPT = Path(sys.executable).parent / "tcpmgm"


def tcpmgm_cli(*args, cwd):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TCPMGM_")}
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120, check=False
    )


def test_match_explain_says_where_opensips_picks_another_rule(nested, tmp_path):
    result = tcpmgm_cli("match", "--explain", "tcp", "10.1.2.3:5060", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("rule #3 ") and lines[-1] == "OpenSIPS would pick rule 1"
    answer = json.loads(tcpmgm_cli("match", "--explain", "--json", "tcp", "10.1.2.3", cwd=tmp_path).stdout)
    assert (answer["rule"], answer["opensips_rule"]) == (3, 1)


def test_match_explain_says_nothing_of_opensips_where_it_agrees(nested, tmp_path):
    for connection in (("tcp", "10.2.0.1:5060"), ("tls", "192.0.2.1"), ("ws", "198.51.100.1")):
        result = tcpmgm_cli("match", "--explain", *connection, cwd=tmp_path)
        assert result.returncode == 0 and "OpenSIPS" not in result.stdout, result.stdout
    assert "OpenSIPS" not in tcpmgm_cli("match", "tcp", "10.1.2.3", cwd=tmp_path).stdout  # only with --explain


def test_match_explain_says_when_opensips_picks_no_rule(nested, tmp_path):
    # OpenSIPS matches an IPv4-mapped IPv6 address as IPv6, where tcpmgm matches it as IPv4.
    result = tcpmgm_cli("match", "--explain", "tcp", "[::ffff:10.2.0.1]:5060", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("rule #1 ") and lines[-1] == "OpenSIPS would pick no rule"


# -- tcpmgm check --opensips ----------------------------------------------------------


def test_check_opensips_reports_the_difference_and_exits_1(nested, tmp_path):
    result = tcpmgm_cli("check", "--opensips", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "OpenSIPS 4.0 to 4.1.0-dev:"
    assert lines[1] == "  picks another rule than documented (1 case(s)):"
    assert "OpenSIPS picks rule 1, documented rule 3" in lines[2] and "rule 2 (tls)" in lines[2]
    report = json.loads(tcpmgm_cli("check", "--opensips", "--json", cwd=tmp_path).stdout)
    assert report["differs"] is True
    [difference] = report["differences"]
    assert (difference["opensips_id"], difference["documented_id"]) == (1, 3)
    # the witness really parts the two orders
    connection = difference["connection"]
    assert nested.lookup(*connection).id == 3 and nested.opensips_order.lookup(*connection).id == 1


def test_check_opensips_exits_0_when_both_orders_agree_and_shows_pitfalls(tmp_path):
    mgr = manager(tmp_path / "tcpmgm.db", [{**row, "priority": 1 if row["id"] == 2 else 0} for row in NESTED])
    mgr.add_rule({"id": 4, "proto": "tcp", "remote_addr": "198.51.100.0/24", "keepalive": 0})
    result = tcpmgm_cli("check", "--opensips", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "  picks the documented rule for every connection checked" in result.stdout.splitlines()
    report = json.loads(tcpmgm_cli("check", "--opensips", "--json", cwd=tmp_path).stdout)
    assert report["differs"] is False and report["differences"] == []
    # OpenSIPS loads rule 4 but turns its keepalive back on (a row it rejected would part the orders:
    # test_check_opensips_leaves_the_rows_opensips_rejects_out_of_its_side)
    assert [(p["kind"], p["rule_ids"]) for p in report["pitfalls"]] == [("keepalive-override", [4])]


def test_check_opensips_leaves_the_rows_opensips_rejects_out_of_its_side(tmp_path):
    # The README's example with rule 1's attrs as tcpmgm writes them: OpenSIPS rejects the row.
    rows = [{**NESTED[0], "attrs": "max_msg_chunks=10"}, *NESTED[1:]]
    manager(tmp_path / "tcpmgm.db", rows)
    result = tcpmgm_cli("check", "--opensips", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "OpenSIPS picks rule 1" not in result.stdout  # it never loads rule 1
    lines = result.stdout.splitlines()
    assert lines[1].startswith("  compared without the 1 row(s) it does not load") and lines[2] == "      rows: 1"
    assert "OpenSIPS picks no rule, documented rule 1: OpenSIPS does not load rule 1" in result.stdout
    assert "[attrs-value]" in result.stdout and "[uninitialised-entry]" in result.stdout
    report = json.loads(tcpmgm_cli("check", "--opensips", "--json", cwd=tmp_path).stdout)
    assert report["not_loaded"] == [1]
    assert [(d["opensips_id"], d["documented_id"]) for d in report["differences"]] == [(0, 1)]
    # the witness: OpenSIPS's order of the rows it loads has no rule there, the documented one rule 1
    mgr = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'tcpmgm.db'}")
    mgr.reload()
    connection = report["differences"][0]["connection"]
    loaded = [rule for rule in mgr.rules_as_read if rule.id not in report["not_loaded"]]
    assert mgr.lookup(*connection).id == 1 and OpenSIPSOrder(loaded).lookup(*connection).id == 0


def test_check_without_opensips_keeps_its_lint(nested, tmp_path):
    result = tcpmgm_cli("check", cwd=tmp_path)
    assert result.returncode == 0 and "OpenSIPS" not in result.stdout
    assert result.stdout.splitlines()[-1] == "0 error(s), 0 warning(s)"


def test_check_opensips_shows_progress_on_a_terminal_only(nested, tmp_path):
    leader, follower = pty.openpty()
    try:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("TCPMGM_")}
        process = subprocess.run(
            [str(SCRIPT), "check", "--opensips"],
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
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
    assert process.returncode == 1
    assert b"comparing with OpenSIPS" in shown and b"comparing" not in process.stdout
    assert "comparing" not in tcpmgm_cli("check", "--opensips", cwd=tmp_path).stderr  # stderr no terminal


# -- the admin endpoint ----------------------------------------------------------------


@pytest.fixture(params=KINDS)
def url(request, nested):
    server, where = start(request.param, nested)
    yield where
    server.stop()


def test_tcp_match_explain_gives_the_rule_opensips_picks(url):
    answer = mi.call(url, "tcp_match", {"proto": "tcp", "remote": "10.1.2.3:5060", "explain": True})
    assert (answer["rule"], answer["opensips_rule"]) == (3, 1)
    answer = mi.call(url, "tcp_match", {"proto": "tcp", "remote": "[::ffff:10.2.0.1]:5060", "explain": True})
    assert (answer["rule"], answer["opensips_rule"]) == (1, 0)
    answer = mi.call(url, "tcp_match", {"proto": "tcp", "remote": "192.0.2.1", "explain": True})
    assert (answer["rule"], answer["opensips_rule"]) == (0, 0)
    assert "opensips_rule" not in mi.call(url, "tcp_match", ["tcp", "10.1.2.3"])


def test_tcp_opensips_check_answers_the_report(url, nested, tmp_path):
    report = mi.call(url, "tcp_opensips_check")
    assert report == json.loads(tcpmgm_cli("check", "--opensips", "--json", cwd=tmp_path).stdout)
    assert report["differs"] is True and report["opensips_version"] == "4.0 to 4.1.0-dev"
    assert "tcp_opensips_check" in mi.call(url, "which")
    assert "OpenSIPS" in mi.call(url, "help", ["tcp_opensips_check"])["Help"]


# Four copies of the example on four /8s: four cases where OpenSIPS picks another rule.
FOUR_CASES = [
    {"id": 3 * k + n, "proto": proto, "remote_addr": network}
    for k in range(4)
    for n, proto, network in (
        (1, "tcp", f"{10 + k}.0.0.0/8"),
        (2, "tls", f"192.0.{k}.0/24"),
        (3, "tcp", f"{10 + k}.1.0.0/16"),
    )
]


@pytest.mark.parametrize("kind", KINDS)
def test_tcp_opensips_check_answers_its_differences_in_pages(kind, tmp_path):
    mgr = manager(tmp_path / "tcpmgm.db", FOUR_CASES)
    whole = json.loads(tcpmgm_cli("check", "--opensips", "--json", cwd=tmp_path).stdout)
    assert whole["differences_total"] == len(whole["differences"]) == 4 and whole["next_offset"] is None
    server, where = start(kind, mgr, limits=mi.Limits(check_limit=3))
    try:
        first = mi.call(where, "tcp_opensips_check")  # the default page is the largest
        assert (len(first["differences"]), first["offset"], first["next_offset"]) == (3, 0, 3)
        last = mi.call(where, "tcp_opensips_check", {"offset": first["next_offset"]})
        assert (len(last["differences"]), last["offset"], last["next_offset"]) == (1, 3, None)
        assert first["differences"] + last["differences"] == whole["differences"]
        # every page carries the rest of the report whole
        assert {k: v for k, v in first.items() if k not in ("differences", "next_offset")} == {
            k: v for k, v in whole.items() if k not in ("differences", "next_offset")
        }
        assert mi.call(where, "tcp_opensips_check", ["1", "2"])["differences"] == whole["differences"][1:3]
        assert mi.call(where, "tcp_opensips_check", {"offset": 10**30})["differences"] == []
        for params in ({"limit": 4}, {"limit": 0}, {"offset": -1}):
            with pytest.raises(mi.MIError) as refused:
                mi.call(where, "tcp_opensips_check", params)
            assert refused.value.code == mi.INVALID_PARAMS
    finally:
        server.stop()


def test_tcp_opensips_check_of_a_large_table_fits_the_response_limit(nested, monkeypatch):
    # A report with more differences than one answer could hold (a 10,000-rule table can have
    # 20,000), each as long as a witness of IPv6 rules makes it.
    many = [
        Difference(
            ("tls", f"2001:db8:{i % 65536:x}::ffff", 65535, "2001:db8:ffff::ffff", 65535),
            i + 1,
            i + 2,
            f"rule {i + 2} (tls, 2001:db8:{i:x}::/48, port 65535) sorted after rule {i + 1} " + "x" * 300,
        )
        for i in range(20_000)
    ]
    report = Report(many, [], [], "4.0 to 4.1.0-dev")
    assert len(json.dumps(report.to_json())) > mi.Limits().max_response  # whole, it would not fit
    monkeypatch.setattr(mi, "check_table", lambda table: report)
    dispatcher = mi.Dispatcher(nested)
    offset, seen = 0, []
    while offset is not None:
        request = {"jsonrpc": "2.0", "method": "tcp_opensips_check", "params": {"offset": offset}, "id": 1}
        status, body = dispatcher.handle(json.dumps(request).encode())
        answer = json.loads(body)["result"]
        assert status == 200 and len(body) <= mi.Limits().max_response
        assert len(answer["differences"]) <= mi.Limits().check_limit and answer["differences_total"] == 20_000
        seen += [d["opensips_id"] for d in answer["differences"]]
        offset = answer["next_offset"]
    assert seen == list(range(1, 20_001))


# -- the README's worked example -------------------------------------------------------

README = CHECKOUT / "README.md"


def readme_sessions():
    """The console blocks of the README's "OpenSIPS compatibility" section: lists of (command, output lines)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## OpenSIPS compatibility\n", 1)[1].split("\n## ", 1)[0]
    sessions = []
    for block in re.findall(r"```console\n(.*?)```", section, flags=re.DOTALL):
        session = []
        for line in block.splitlines():
            if line.startswith("$ "):
                session.append((line[2:], []))
            else:
                session[-1][1].append(line)
        sessions.append(session)
    return sessions


@pytest.mark.skipif(not README.exists(), reason="not run from a source checkout")
def test_the_readme_example_gives_the_output_it_shows(tmp_path):
    sessions = readme_sessions()
    assert len(sessions) == 2  # the example, then the table rewritten
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TCPMGM_")}
    environment["PATH"] = f"{SCRIPT.parent}{os.pathsep}{environment.get('PATH', '')}"
    statuses = []
    for session in sessions:
        for command, shown in session:
            done = subprocess.run(
                command, shell=True, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
            )
            assert done.stdout.splitlines() == shown, (command, done.stderr)
            if command.startswith("tcpmgm check --opensips"):
                statuses.append(done.returncode)
    assert statuses == [1, 0]  # OpenSIPS picks otherwise, then both orders agree
