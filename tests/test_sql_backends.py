"""The same table behaviour on SQLite, PostgreSQL and MariaDB (each test runs on all three)."""

import io
import logging
import sys

import pytest
from dbservers import opensips_ddl

import tcpmgm
from tcpmgm.model.errors import ReloadError, RuleError, SchemaError
from tcpmgm.sql.db import work_on

TLS_TRUNK = {"proto": "tls", "remote_addr": "203.0.113.0/24", "connect_timeout": 1500}


def insert(s, table, row):
    columns = ", ".join(row)
    s.execute(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(row))})", list(row.values()))


def test_create_schema_add_rule_reload(scratch):
    mgr = tcpmgm.TcpMgm(scratch.url)
    mgr.create_schema()
    first = mgr.add_rule(TLS_TRUNK)
    second = mgr.add_rule({"proto": "tcp", "remote_addr": "198.51.100.7", "no_new_conn": 1})
    assert second == first + 1  # ids come back from the database (RETURNING on PostgreSQL)
    explicit = mgr.add_rule({"id": 40, "proto": "ws", "remote_port": 8080})
    assert explicit == 40
    report = mgr.reload()
    assert (report.loaded, report.rejected, report.schema_version) == (3, (), 2)
    assert mgr.lookup("tls", "203.0.113.9", 5061).id == first
    assert mgr.lookup("tls", "203.0.113.9", 5061).connect_timeout == 1500
    assert mgr.lookup("tcp", "198.51.100.7", 5060).no_new_conn is True
    assert mgr.lookup("ws", "192.0.2.1", 8080).id == 40
    assert scratch.execute("SELECT table_version FROM version WHERE table_name = %s", ("tcp_mgm",)) == [(2,)]
    columns = [c.lower() for c in _columns(scratch, "tcp_mgm")]
    assert "parallel_read" not in columns and "keepinterval" in columns
    mgr.close()


def test_automatic_ids_continue_after_explicit_ones(scratch):
    mgr = tcpmgm.TcpMgm(scratch.url)
    mgr.create_schema()
    assert mgr.add_rule({"id": 5, "proto": "tcp"}) == 5
    assert mgr.add_rule({"proto": "tls"}) == 6
    assert mgr.reload().loaded == 2


def test_create_schema_version_1(scratch):
    mgr = tcpmgm.TcpMgm(scratch.url)
    mgr.create_schema(1)
    mgr.add_rule({"proto": "tcp", "parallel_read": 2})
    report = mgr.reload()
    assert report.schema_version == 1
    assert mgr.lookup("tcp", "192.0.2.1").parallel_read == 2
    assert scratch.execute("SELECT table_version FROM version WHERE table_name = %s", ("tcp_mgm",)) == [(1,)]


def _columns(scratch, table):
    conn = scratch.connect()
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT * FROM {table} WHERE 1 = 0")
        return [d[0] for d in cur.description]
    finally:
        conn.close()


@pytest.mark.parametrize("version", [1, 2])
def test_reads_table_created_by_opensips_script(scratch, version):
    for statement in opensips_ddl(scratch.backend, version=version):
        scratch.execute(statement)
    scratch.execute("INSERT INTO version (table_name, table_version) VALUES (%s, %s)", ("tcp_mgm", version))
    # CHAR columns come back padded or not depending on the server; upper-case proto; NULL addresses.
    insert(
        scratch,
        "tcp_mgm",
        {
            "proto": "TLS",
            "remote_addr": "203.0.113.0/24",
            "remote_port": 5061,
            "priority": -1,
            "attrs": "max_msg_chunks=10",
            "keepidle": 30,
        },
    )
    insert(scratch, "tcp_mgm", {"proto": "any", "local_addr": "192.0.2.10", "local_port": 5060})
    insert(scratch, "tcp_mgm", {"proto": "bin", "remote_addr": "2001:db8::/32"})
    mgr = tcpmgm.TcpMgm(scratch.url)
    report = mgr.reload()
    assert (report.loaded, report.rejected, report.schema_version) == (3, (), version)
    trunk = mgr.lookup("tls", "203.0.113.1", 5061, "192.0.2.10", 5060)
    assert (trunk.id, trunk.keepidle, dict(trunk.attrs)) == (1, 30, {"max_msg_chunks": 10})
    assert mgr.lookup("tcp", "198.51.100.1", 1, "192.0.2.10", 5060).id == 2
    assert mgr.lookup("bin", "2001:db8:5::1", 1).id == 3
    assert mgr.lookup("tcp", "2001:db8:5::1", 1).id == 0


def test_renamed_table_and_columns(scratch):
    rename = {"connect_timeout": "conn_to", "remote_addr": "peer", "id": "rule_id"}
    for statement in opensips_ddl(scratch.backend, table="paths", rename=rename):
        scratch.execute(statement)
    insert(scratch, "paths", {"proto": "tcp", "peer": "10.0.0.0/8", "conn_to": 900})
    mgr = tcpmgm.TcpMgm(scratch.url, table="paths", columns=rename)
    assert mgr.reload().loaded == 1
    assert mgr.lookup("tcp", "10.9.9.9").connect_timeout == 900
    assert mgr.add_rule({"proto": "tls", "remote_addr": "10.1.0.0/16"}) == 2


def test_missing_version_table_is_tolerated(scratch):
    scratch.execute(opensips_ddl(scratch.backend)[1])
    insert(scratch, "tcp_mgm", {"proto": "tcp"})
    assert tcpmgm.TcpMgm(scratch.url).reload().loaded == 1


def test_version_mismatch_keeps_old_rules(scratch):
    mgr = tcpmgm.TcpMgm(scratch.url)
    mgr.create_schema()
    mgr.add_rule(TLS_TRUNK)
    mgr.reload()
    scratch.execute("UPDATE version SET table_version = %s WHERE table_name = %s", (1, "tcp_mgm"))
    with pytest.raises(ReloadError, match=r"version table says 1, expected 2"):
        mgr.reload()
    assert mgr.lookup("tls", "203.0.113.9").connect_timeout == 1500
    with pytest.raises(ReloadError, match=r"expected schema version 1, but its columns are those of version 2"):
        tcpmgm.TcpMgm(scratch.url, schema_version=1).reload()


def test_missing_table_keeps_old_rules(scratch):
    mgr = tcpmgm.TcpMgm(scratch.url)
    mgr.create_schema()
    mgr.add_rule(TLS_TRUNK)
    mgr.reload()
    scratch.execute("DROP TABLE tcp_mgm")
    with pytest.raises(ReloadError, match=r"cannot read table 'tcp_mgm'") as info:
        mgr.reload()
    assert "\n" not in str(info.value)
    assert mgr.lookup("tls", "203.0.113.9").id == 1
    # The next reload, once the table is back, works on the same manager.
    mgr.create_schema()
    mgr.add_rule({"proto": "tcp"})
    assert mgr.reload().loaded == 1


def test_columns_of_the_wrong_type_reject_their_rows(scratch):
    wrong = {"mysql": "VARCHAR(20)", "postgres": "VARCHAR(20)", "sqlite": "TEXT"}[scratch.backend]
    ddl = opensips_ddl(scratch.backend)[1]
    ddl = ddl.replace(opensips_column(scratch.backend, "remote_port"), f"remote_port {wrong} DEFAULT '0'")
    ddl = ddl.replace(opensips_column(scratch.backend, "attrs"), "attrs INTEGER DEFAULT NULL")
    scratch.execute(ddl)
    insert(scratch, "tcp_mgm", {"id": 1, "proto": "tcp", "remote_port": "5060"})
    insert(scratch, "tcp_mgm", {"id": 2, "proto": "tcp", "remote_port": "sip"})
    insert(scratch, "tcp_mgm", {"id": 3, "proto": "tcp", "attrs": 7})
    report = tcpmgm.TcpMgm(scratch.url).reload()
    assert report.loaded == 1
    errors = {e.rule_id: e for e in report.rejected}
    assert (errors[2].column, errors[2].value, errors[2].reason) == ("remote_port", "sip", "not an integer")
    assert (errors[3].column, errors[3].value, errors[3].reason) == ("attrs", 7, "expected text, got int")
    with pytest.raises(ReloadError, match=r"strict mode: 2 row\(s\) rejected"):
        tcpmgm.TcpMgm(scratch.url, strict=True).reload()


def opensips_column(backend, name):
    """The definition a column has in opensips_ddl, to swap it for another."""
    line = next(text for text in opensips_ddl(backend)[1].splitlines() if f"{name}" in text.split()[0])
    return line.strip().rstrip(",")


def test_null_where_the_schema_forbids_it_reads_the_default_with_a_warning(scratch):
    for statement in opensips_ddl(scratch.backend, not_null=False):
        scratch.execute(statement)
    insert(scratch, "tcp_mgm", {"id": 1, "proto": "tcp", "remote_addr": None, "attrs": None})
    insert(scratch, "tcp_mgm", {"id": 2, "proto": None})
    insert(scratch, "tcp_mgm", {"id": 3, "proto": "tcp", "connect_timeout": None})
    insert(scratch, "tcp_mgm", {"id": 4, "proto": "tcp", "remote_port": None})
    insert(scratch, "tcp_mgm", {"id": None, "proto": "tcp"})
    mgr = tcpmgm.TcpMgm(scratch.url)
    report = mgr.reload()
    # id and proto have no default: those rows are refused.
    found = sorted(((e.rule_id or 0), e.column, e.value) for e in report.rejected)
    assert found == [(0, "id", None), (2, "proto", None)]
    assert all(isinstance(e, RuleError) and "NULL" in str(e) for e in report.rejected)
    # Elsewhere NULL is read as the column's default, and the row says so.
    assert report.loaded == 3
    assert sorted((w.rule_id, w.column, w.reason) for w in report.warnings) == [
        (3, "connect_timeout", "NULL in a NOT NULL column, read as the default 100"),
        (4, "remote_port", "NULL in a NOT NULL column, read as the default 0"),
    ]
    assert mgr.lookup("tcp", "192.0.2.1", 5060).id == 1
    assert mgr.matcher.get(3).profile.connect_timeout == 100


def test_an_open_connection_is_accepted(scratch):
    tcpmgm.TcpMgm(scratch.url).create_schema()
    conn = scratch.connect()
    try:
        mgr = tcpmgm.TcpMgm(conn)
        assert mgr.source.dialect.name == scratch.backend
        new_id = mgr.add_rule(TLS_TRUNK)
        assert mgr.reload().loaded == 1
        assert mgr.lookup("tls", "203.0.113.1").id == new_id
        mgr.close()
        conn.cursor().execute("SELECT 1")  # still open: the caller owns it
    finally:
        conn.close()


def test_rows_stream_in_batches(scratch):
    mgr = tcpmgm.TcpMgm(scratch.url)
    mgr.create_schema()
    scratch.executemany(
        "INSERT INTO tcp_mgm (id, proto, remote_port) VALUES (%s, %s, %s)",
        [(i, "tcp", i) for i in range(1, 51)],
    )
    from tcpmgm.sql.loader import load_rules

    with mgr.source.connection() as conn:
        result = load_rules(conn, mgr.source.dialect, mgr.names, batch_size=7)
        with work_on(conn, "streaming", stream=mgr.source.dialect) as cur:
            kind = type(cur).__name__
    assert sorted(r.id for r in result.rules) == list(range(1, 51))
    # Rows wait on the server until fetched: a named cursor / unbuffered cursor.
    assert kind == {"postgres": "ServerCursor", "mysql": "SSCursor", "sqlite": "Cursor"}[scratch.backend]


def test_check_with_a_progress_bar_still_streams_the_rows(scratch, monkeypatch, capsys):
    """``tcpmgm check`` on a terminal counts the rows it fetches for its progress bar,
    and reads them with the same streaming cursor as a reload."""
    import tcpmgm.sql.db
    from tcpmgm.tools.cli import main

    mgr = tcpmgm.TcpMgm(scratch.url)
    mgr.create_schema()
    rows = [(i, "tcp", 5060 + i) for i in range(1, 4)]
    scratch.executemany("INSERT INTO tcp_mgm (id, proto, remote_port) VALUES (%s, %s, %s)", rows)
    kinds = []
    made = tcpmgm.sql.db._streaming_cursor

    def spied(conn, dialect):
        cur = made(conn, dialect)
        kinds.append(type(cur).__name__)
        return cur

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(tcpmgm.sql.db, "_streaming_cursor", spied)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert main(["check", "--db", scratch.url]) == 0
    assert "loading" in sys.stderr.getvalue()
    assert "loaded 3 rule(s)" in capsys.readouterr().out
    assert kinds == [{"postgres": "ServerCursor", "mysql": "SSCursor", "sqlite": "Cursor"}[scratch.backend]]
    mgr.close()


INJECTIONS = ["tcp_mgm; DROP TABLE sentinel", 'x" OR 1=1 --', "x` OR 1=1 #", "a b", "x'", ""]
CANONICAL = [
    "id",
    "proto",
    "remote_addr",
    "remote_port",
    "local_addr",
    "local_port",
    "priority",
    "attrs",
    "connect_timeout",
    "con_lifetime",
    "msg_read_timeout",
    "send_threshold",
    "no_new_conn",
    "alias_mode",
    "parallel_read",
    "keepalive",
    "keepcount",
    "keepidle",
    "keepinterval",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_through_any_name_is_refused(scratch, payload):
    scratch.execute("CREATE TABLE sentinel (x INTEGER)")
    with pytest.raises(SchemaError, match="invalid SQL identifier"):
        tcpmgm.TcpMgm(scratch.url, table=payload)
    for column in CANONICAL:
        with pytest.raises(SchemaError, match="invalid SQL identifier"):
            tcpmgm.TcpMgm(scratch.url, columns={column: payload})
    assert scratch.execute("SELECT count(*) FROM sentinel") == [(0,)]


def test_reserved_words_as_names_are_quoted_everywhere(scratch):
    """Names that are SQL keywords only work if every statement quotes them."""
    keywords = {
        "id": "select",
        "proto": "from",
        "remote_addr": "where",
        "priority": "order",
        "attrs": "group",
        "keepalive": "table",
    }
    mgr = tcpmgm.TcpMgm(scratch.url, table="union", columns=keywords)
    mgr.create_schema()
    mgr.add_rule({"proto": "tcp", "remote_addr": "10.0.0.0/8", "priority": 3, "attrs": "max_msg_chunks=2"})
    assert mgr.reload().loaded == 1
    assert dict(mgr.lookup("tcp", "10.1.1.1").attrs) == {"max_msg_chunks": 2}


def test_failed_reload_is_logged_without_traceback_noise(scratch, caplog):
    mgr = tcpmgm.TcpMgm(scratch.url, table="nowhere")
    with caplog.at_level(logging.ERROR, logger="tcpmgm"), pytest.raises(ReloadError):
        mgr.reload()
    assert any("old rules stay in service" in r.getMessage() for r in caplog.records)
