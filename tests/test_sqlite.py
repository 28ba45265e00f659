"""The SQLite loader and ``TcpMgm``: schema versions, renames, version checks, strict mode, failed reloads."""

import ipaddress
import logging
import sqlite3

import pytest
from tables import create_plain_table, insert

import tcpmgm.service.manager
import tcpmgm.sql.loader
from tcpmgm import Profile, ReloadError, ReloadReport, RuleError, SchemaError, TcpMgm
from tcpmgm.model.errors import DatabaseError
from tcpmgm.sql.loader import load_rules
from tcpmgm.sql.schema import DIALECTS, OPENSIPS_RELEASES, SCHEMA_VERSIONS, TableNames, opensips_releases
from tcpmgm.sql.table import read_rows

# The tcp_mgm table as OpenSIPS's SQLite scripts lay it out (attrs right after
# priority, unlike tcpmgm's own DDL), in both versions.
OPENSIPS_DDL = """
CREATE TABLE version (table_name CHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT t_name_idx UNIQUE (table_name));
INSERT INTO version (table_name, table_version) VALUES ('tcp_mgm', {version});
CREATE TABLE tcp_mgm (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    proto CHAR(8) DEFAULT 'any' NOT NULL,
    remote_addr CHAR(43) DEFAULT NULL,
    remote_port INTEGER DEFAULT 0 NOT NULL,
    local_addr CHAR(43) DEFAULT NULL,
    local_port INTEGER DEFAULT 0 NOT NULL,
    priority INTEGER DEFAULT 0 NOT NULL,
    attrs CHAR(255) DEFAULT NULL,
    connect_timeout INTEGER DEFAULT 100 NOT NULL,
    con_lifetime INTEGER DEFAULT 120 NOT NULL,
    msg_read_timeout INTEGER DEFAULT 4 NOT NULL,
    send_threshold INTEGER DEFAULT 0 NOT NULL,
    no_new_conn INTEGER DEFAULT 0 NOT NULL,
    alias_mode INTEGER DEFAULT 0 NOT NULL,
    {parallel_read}
    keepalive INTEGER DEFAULT 1 NOT NULL,
    keepcount INTEGER DEFAULT 9 NOT NULL,
    keepidle INTEGER DEFAULT 7200 NOT NULL,
    keepinterval INTEGER DEFAULT 75 NOT NULL
);
"""


@pytest.fixture
def path(tmp_path):
    return tmp_path / "rules.db"


def url(path):
    return f"sqlite:///{path}"


def execute(path, *statements):
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def table_columns(path, table="tcp_mgm"):
    conn = sqlite3.connect(path)
    try:
        return [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
    finally:
        conn.close()


def version_rows(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT table_name, table_version FROM version").fetchall()
    finally:
        conn.close()


# -- schema versions -------------------------------------------------------------


def test_schema_version_2_is_the_default(path):
    mgr = TcpMgm(url(path))
    mgr.create_schema()
    assert "parallel_read" not in table_columns(path)
    assert version_rows(path) == [("tcp_mgm", 2)]
    new_id = mgr.add_rule({"proto": "tls", "remote_addr": "203.0.113.0/24", "connect_timeout": 1500})
    report = mgr.reload()
    assert (report.loaded, report.schema_version) == (1, 2)
    profile = mgr.lookup("tls", "203.0.113.9", 5061)
    assert (profile.id, profile.connect_timeout, profile.parallel_read) == (new_id, 1500, 0)


def test_schema_version_1_has_parallel_read(path):
    mgr = TcpMgm(url(path))
    mgr.create_schema(1)
    assert "parallel_read" in table_columns(path)
    assert version_rows(path) == [("tcp_mgm", 1)]
    mgr.add_rule({"id": 4, "proto": "tcp", "parallel_read": 2})
    report = mgr.reload()
    assert (report.loaded, report.schema_version) == (1, 1)
    assert mgr.lookup("tcp", "10.0.0.1").parallel_read == 2


@pytest.mark.parametrize("version, parallel_read", [(1, "parallel_read INTEGER DEFAULT 0 NOT NULL,"), (2, "")])
def test_tables_laid_out_by_opensips_load(path, version, parallel_read):
    conn = sqlite3.connect(path)
    conn.executescript(OPENSIPS_DDL.format(version=version, parallel_read=parallel_read))
    conn.execute(
        "INSERT INTO tcp_mgm (proto, remote_addr, attrs, keepidle) VALUES ('TLS', '10.0.0.0/8', 'max_msg_chunks=5', 60)"
    )
    conn.execute("INSERT INTO tcp_mgm (proto, local_addr) VALUES ('any', '192.0.2.10')")
    conn.commit()
    conn.close()
    mgr = TcpMgm(url(path))
    report = mgr.reload()
    assert (report.loaded, report.rejected, report.schema_version) == (2, (), version)
    profile = mgr.lookup("tls", "10.9.9.9")
    assert (profile.id, profile.keepidle, dict(profile.attrs)) == (1, 60, {"max_msg_chunks": 5})
    assert mgr.lookup("tcp", "192.0.2.1", 0, "192.0.2.10").id == 2


def test_asking_for_a_version_the_columns_do_not_have_fails(path):
    TcpMgm(url(path)).create_schema(2)
    with pytest.raises(ReloadError) as info:
        TcpMgm(url(path), schema_version=1).reload()
    assert isinstance(info.value.__cause__, SchemaError)
    assert "expected schema version 1, but its columns are those of version 2" in str(info.value)


def test_unknown_schema_version_is_refused(path):
    with pytest.raises(SchemaError, match=r"unknown schema version 3 \(known: 1, 2\)"):
        TcpMgm(url(path), schema_version=3)
    with pytest.raises(SchemaError, match=r"unknown schema version 5 \(known: 1, 2\)"):
        TcpMgm(url(path)).create_schema(5)


def test_each_schema_version_names_the_opensips_releases_that_read_it():
    assert OPENSIPS_RELEASES.keys() == SCHEMA_VERSIONS.keys()
    assert [opensips_releases(version) for version in SCHEMA_VERSIONS] == ["3.3 to 3.6", "4.0 and later"]
    assert opensips_releases(2, latest="4.1.0-dev") == "4.0 to 4.1.0-dev"
    assert opensips_releases(1, latest="4.1.0-dev") == "3.3 to 3.6"  # a closed range stays closed
    with pytest.raises(SchemaError):
        opensips_releases(3)


# -- renamed table and columns ----------------------------------------------------------

RENAMES = {"remote_addr": "peer_net", "priority": "prio", "connect_timeout": "conn_to_ms", "id": "rule_id"}


def test_renamed_table_and_columns_created_by_tcpmgm(path):
    mgr = TcpMgm(url(path), table="paths", columns=RENAMES)
    mgr.create_schema()
    assert table_columns(path, "paths")[:2] == ["rule_id", "proto"]
    assert {"peer_net", "prio", "conn_to_ms"} <= set(table_columns(path, "paths"))
    assert version_rows(path) == [("paths", 2)]
    mgr.add_rule({"id": 3, "proto": "tcp", "remote_addr": "10.0.0.0/8", "connect_timeout": 900})
    mgr.add_rule({"id": 4, "proto": "tcp", "remote_addr": "10.1.0.0/16", "priority": 1})
    assert mgr.reload().loaded == 2
    profile = mgr.lookup("tcp", "10.1.0.1")
    assert (profile.id, profile.connect_timeout) == (3, 900)


@pytest.mark.parametrize("version", [1, 2])
def test_renamed_columns_of_a_table_made_elsewhere(path, version):
    conn = sqlite3.connect(path)
    create_plain_table(conn, table="opensips_paths", schema_version=version, rename=RENAMES)
    insert(
        conn,
        {"id": 8, "proto": "ws", "remote_addr": "2001:db8::/32", "priority": 0, "connect_timeout": 42},
        table="opensips_paths",
        rename=RENAMES,
    )
    conn.close()
    mgr = TcpMgm(url(path), table="opensips_paths", columns=RENAMES)
    report = mgr.reload()
    assert (report.loaded, report.schema_version) == (1, version)
    assert mgr.lookup("ws", "2001:db8::5").connect_timeout == 42


def test_a_renamed_column_the_table_lacks_is_named(path):
    TcpMgm(url(path)).create_schema()
    mgr = TcpMgm(url(path), columns={"remote_addr": "peer_net"})
    with pytest.raises(ReloadError) as info:
        mgr.reload()
    assert isinstance(info.value.__cause__, SchemaError)
    assert "lacks column(s): peer_net" in str(info.value)


@pytest.mark.parametrize(
    "table, columns",
    [
        ("tcp_mgm; DROP TABLE version", None),
        ("tcp_mgm", {"nosuch": "x"}),
        ("tcp_mgm", {"proto": 'pro"to'}),
        ("tcp_mgm", {"proto": "remote_addr"}),
    ],
)
def test_bad_names_are_refused_before_any_sql(path, table, columns):
    with pytest.raises(SchemaError):
        TcpMgm(url(path), table=table, columns=columns)


# -- the version table -------------------------------------------------------------------


def test_version_mismatch_names_expected_and_found(path):
    mgr = TcpMgm(url(path))
    mgr.create_schema()
    mgr.add_rule({"proto": "tcp"})
    mgr.reload()
    execute(path, "UPDATE version SET table_version = 3 WHERE table_name = 'tcp_mgm'")
    with pytest.raises(ReloadError) as info:
        mgr.reload()
    assert isinstance(info.value.__cause__, SchemaError)
    assert "version table says 3, expected 2" in str(info.value)
    assert len(mgr.matcher) == 1  # the old rules stay


def test_version_row_of_v1_on_a_v2_table_is_a_mismatch(path):
    TcpMgm(url(path)).create_schema(2)
    execute(path, "UPDATE version SET table_version = 1")
    with pytest.raises(ReloadError, match="version table says 1, expected 2"):
        TcpMgm(url(path)).reload()


def test_non_numeric_version_is_a_schema_error(path):
    TcpMgm(url(path)).create_schema(2)
    execute(path, "UPDATE version SET table_version = 'two'")
    with pytest.raises(ReloadError, match="not a number"):
        TcpMgm(url(path)).reload()


def test_missing_version_table_is_tolerated(path):
    mgr = TcpMgm(url(path))
    mgr.create_schema()
    mgr.add_rule({"proto": "tcp"})
    execute(path, "DROP TABLE version")
    assert mgr.reload().loaded == 1


def test_missing_version_row_is_tolerated(path):
    mgr = TcpMgm(url(path))
    mgr.create_schema(1)
    execute(path, "DELETE FROM version")
    assert mgr.reload().schema_version == 1


# -- strict mode and failed reloads --------------------------------------------------------


def test_non_strict_reload_rejects_bad_rows_and_loads_the_rest(path):
    mgr = TcpMgm(url(path))
    mgr.create_schema()
    mgr.add_rule({"id": 1, "proto": "tcp"})
    execute(
        path,
        "INSERT INTO tcp_mgm (id, proto) VALUES (2, 'udp')",
        "INSERT INTO tcp_mgm (id, proto, remote_port) VALUES (3, 'tcp', 99999)",
    )
    report = mgr.reload()
    assert report.loaded == 1
    assert [(e.rule_id, e.column, e.value) for e in report.rejected] == [(2, "proto", "udp"), (3, "remote_port", 99999)]


def test_strict_reload_with_a_bad_row_fails_and_keeps_the_old_rules(path):
    mgr = TcpMgm(url(path), strict=True)
    mgr.create_schema()
    mgr.add_rule({"id": 1, "proto": "tcp", "keepidle": 10})
    first = mgr.reload()
    in_service = mgr.matcher
    mgr.add_rule({"id": 2, "proto": "tls"})
    execute(path, "INSERT INTO tcp_mgm (id, proto) VALUES (3, 'sctp')")
    with pytest.raises(ReloadError) as info:
        mgr.reload()
    [err] = info.value.report.rejected
    assert (err.rule_id, err.column, err.value, err.reason) == (
        3,
        "proto",
        "sctp",
        "'sctp' is not a TCP-based protocol",
    )
    assert "strict mode" in str(info.value) and "rule 3" in str(info.value)
    assert mgr.matcher is in_service and mgr.last_report is first
    assert mgr.lookup("tls", "10.0.0.1").id == 0  # rule 2 is not in service
    assert mgr.lookup("tcp", "10.0.0.1").keepidle == 10


def test_failed_reload_keeps_the_old_rules_until_one_succeeds(path):
    mgr = TcpMgm(url(path))
    mgr.create_schema()
    mgr.add_rule({"id": 1, "proto": "tcp", "remote_addr": "10.0.0.0/8", "con_lifetime": 30})
    mgr.reload()
    in_service = mgr.matcher
    execute(path, "DROP TABLE tcp_mgm")
    with pytest.raises(ReloadError) as info:
        mgr.reload()
    assert isinstance(info.value.__cause__, SchemaError)
    assert "old rules stay in service" in str(info.value) and "tcp_mgm" in str(info.value)
    assert mgr.matcher is in_service
    assert mgr.lookup("tcp", "10.2.3.4").con_lifetime == 30
    mgr.create_schema()
    mgr.add_rule({"id": 7, "proto": "tcp", "remote_addr": "10.0.0.0/8", "con_lifetime": 60})
    assert mgr.reload().loaded == 1
    assert mgr.lookup("tcp", "10.2.3.4").id == 7


def test_a_file_that_is_not_a_database_fails_the_reload(path):
    mgr = TcpMgm(url(path))
    mgr.create_schema()
    mgr.add_rule({"id": 1, "proto": "tcp"})
    mgr.reload()
    path.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(ReloadError):
        mgr.reload()
    assert mgr.lookup("tcp", "10.0.0.1").id == 1


# -- the report -----------------------------------------------------------------------------


def test_report_contents(path):
    mgr = TcpMgm(url(path), listeners={"internal": "10.0.0.1"})
    mgr.create_schema()
    execute(
        path,
        "INSERT INTO tcp_mgm (id, proto, remote_addr) VALUES (1, 'tcp', '10.1.2.3/8')",
        "INSERT INTO tcp_mgm (id, proto, local_addr) VALUES (2, 'any', 'internal')",
        "INSERT INTO tcp_mgm (id, proto, local_addr) VALUES (3, 'any', 'external')",
        "INSERT INTO tcp_mgm (id, proto, alias_mode) VALUES (4, 'tls', 5)",
    )
    report = mgr.reload()
    assert isinstance(report, ReloadReport) and mgr.last_report is report
    assert report.loaded == 2 and report.schema_version == 2
    assert all(isinstance(e, RuleError) for e in report.rejected)
    assert [str(e) for e in report.rejected] == [
        "rule 3: column 'local_addr', value 'external': neither an address nor a known socket tag "
        "(listeners: internal)",
        "rule 4: column 'alias_mode', value 5: must be between 0 and 2",
    ]
    assert [str(w) for w in report.warnings] == [
        "rule 1: column 'remote_addr', value '10.1.2.3/8': host bits set under the prefix; stored as 10.0.0.0/8",
    ]
    assert isinstance(report.seconds, float) and report.seconds >= 0
    lines = str(report).splitlines()
    assert lines[0].startswith("loaded 2 rule(s), rejected 2, 1 warning(s), schema version 2, ")
    assert lines[1:] == [f"  rejected: {e}" for e in report.rejected] + [f"  warning: {w}" for w in report.warnings]
    assert mgr.lookup("tcp", "192.0.2.1", 0, "10.0.0.1").id == 2


# -- loader details ----------------------------------------------------------------------------


def test_rows_are_read_in_batches(path):
    conn = sqlite3.connect(path)
    create_plain_table(conn)
    for n in range(1, 8):
        insert(conn, {"id": n, "proto": "tcp", "remote_port": 5000 + n})
    result = load_rules(conn, DIALECTS["sqlite"], TableNames(), batch_size=2)
    assert sorted(r.id for r in result.rules) == list(range(1, 8))


def test_null_profile_columns_take_the_managers_default(path):
    conn = sqlite3.connect(path)
    create_plain_table(conn)
    insert(conn, {"id": 1, "proto": "tcp", "keepidle": None, "keepcount": None, "connect_timeout": 700})
    conn.close()
    mgr = TcpMgm(url(path), default=Profile(id=5, keepidle=33, keepcount=2))
    report = mgr.reload()
    assert sorted((w.rule_id, w.column, w.reason) for w in report.warnings) == [
        (1, "keepcount", "NULL in a NOT NULL column, read as the default 2"),
        (1, "keepidle", "NULL in a NOT NULL column, read as the default 33"),
    ]
    matched = mgr.lookup("tcp", "10.0.0.1")
    assert (matched.id, matched.keepidle, matched.keepcount, matched.connect_timeout) == (1, 33, 2, 700)
    unmatched = mgr.lookup("tls", "10.0.0.1")
    assert unmatched == Profile(keepidle=33, keepcount=2)


def test_add_rule_validates_before_writing(path):
    mgr = TcpMgm(url(path))
    mgr.create_schema()
    with pytest.raises(RuleError) as info:
        mgr.add_rule({"proto": "udp", "remote_addr": "10.0.0.0/8"})
    assert (info.value.column, info.value.value) == ("proto", "udp")
    with pytest.raises(RuleError):
        mgr.add_rule({"proto": "tcp", "local_addr": "nosuchtag"})
    assert mgr.reload().loaded == 0
    assert mgr.add_rule({"proto": "tcp"}) == 1
    assert mgr.add_rule({"proto": "tls", "remote_addr": None}) == 2


def test_an_open_connection_can_be_the_source(path):
    TcpMgm(url(path)).create_schema()
    conn = sqlite3.connect(path)
    mgr = TcpMgm(conn)
    mgr.add_rule({"id": 9, "proto": "tcp", "local_addr": "192.0.2.10"})
    mgr.reload()
    assert mgr.lookup("tcp", "10.0.0.1", 0, "192.0.2.10").id == 9
    assert mgr.matcher.get(9).local == ipaddress.ip_network("192.0.2.10/32")
    conn.execute("SELECT 1")  # still open: the caller owns it
    conn.close()


def test_empty_manager_answers_the_default_before_any_reload(path):
    mgr = TcpMgm(url(path))
    assert mgr.lookup("tcp", "10.0.0.1").id == 0 and len(mgr.matcher) == 0 and mgr.last_report is None
    assert mgr.explain("tcp", "10.0.0.1").winner is None


def test_a_missing_database_file_is_an_error_and_is_not_created(tmp_path):
    missing = tmp_path / "typo.db"
    mgr = TcpMgm(url(str(missing)))
    with pytest.raises(ReloadError, match="does not exist"):
        mgr.reload()
    assert not missing.exists()
    mgr.create_schema()  # creating the schema is what may make the file
    assert missing.exists() and mgr.reload().loaded == 0


def test_a_missing_folder_is_named(tmp_path):
    folder = tmp_path / "var" / "lib" / "tcpmgm"
    mgr = TcpMgm(url(str(folder / "rules.db")))
    with pytest.raises(DatabaseError, match="does not exist") as created:
        mgr.create_schema()  # 'tcpmgm db init' on a folder nobody made
    with pytest.raises(ReloadError, match="does not exist") as reloaded:
        mgr.reload()
    for message in (str(created.value), str(reloaded.value)):
        assert f"folder {str(folder)!r} does not exist" in message
        assert "unable to open" not in message
    assert not (tmp_path / "var").exists()


# -- whatever fails during a reload, the old rules stay (issue 10, item 4) ------


def _serving_one_rule(path):
    mgr = TcpMgm(url(path))
    mgr.create_schema()
    mgr.add_rule({"proto": "tls", "remote_addr": "203.0.113.0/24", "connect_timeout": 1500})
    assert mgr.reload().loaded == 1
    mgr.add_rule({"proto": "tcp"})
    return mgr


def _assert_old_rules_serve(mgr):
    assert len(mgr.matcher) == 1
    assert mgr.lookup("tls", "203.0.113.1").connect_timeout == 1500
    assert mgr.lookup("tcp", "192.0.2.1").id == 0


def test_an_unexpected_matcher_failure_is_a_reload_error(path, monkeypatch, caplog):
    mgr = _serving_one_rule(path)

    class broken:  # the manager builds with Matcher.from_records
        @staticmethod
        def from_records(*args, **kwargs):
            raise ValueError("the matcher cannot take this")

    monkeypatch.setattr(tcpmgm.service.manager, "Matcher", broken)
    with (
        caplog.at_level(logging.ERROR, logger="tcpmgm"),
        pytest.raises(ReloadError, match="old rules stay in service") as info,
    ):
        mgr.reload()
    assert isinstance(info.value.__cause__, ValueError)
    assert "the matcher cannot take this" in str(info.value)
    assert any(r.exc_info for r in caplog.records)  # an unexpected failure keeps its traceback
    _assert_old_rules_serve(mgr)
    monkeypatch.undo()
    assert mgr.reload().loaded == 2


def test_an_unexpected_row_reader_failure_is_a_reload_error(path, monkeypatch):
    mgr = _serving_one_rule(path)

    class Broken:
        def __init__(self, *args, **kwargs):
            pass

        def read_batch(self, *args):
            raise RuntimeError("row reader bug")

    monkeypatch.setattr(tcpmgm.sql.loader, "row_reader", Broken)
    with pytest.raises(ReloadError, match="row reader bug") as info:
        mgr.reload()
    # The reader's own exception, not a driver failure made of it.
    assert isinstance(info.value.__cause__, RuntimeError)
    _assert_old_rules_serve(mgr)


def test_a_closed_caller_connection_fails_as_tcpmgms_error():
    """A driver's failure to make a cursor (here on a caller's connection it closed
    itself) is reported like any other failure of the work, not as the driver's
    own exception (which a caller catching TcpMgmError would not see)."""
    conn = sqlite3.connect(":memory:")
    mgr = TcpMgm(conn)
    mgr.create_schema()
    mgr.reload()
    conn.close()
    closed = "Cannot operate on a closed database"
    with pytest.raises(DatabaseError, match=f"cannot insert into 'tcp_mgm': {closed}"):
        mgr.add_rule({"proto": "tcp"})
    with pytest.raises(SchemaError, match=f"cannot create table 'tcp_mgm': {closed}"):
        mgr.create_schema()
    with pytest.raises(SchemaError, match=f"cannot read table 'tcp_mgm': {closed}"):
        read_rows(mgr.source, mgr.names)
    with pytest.raises(ReloadError, match=f"old rules stay in service: cannot read table 'tcp_mgm': {closed}") as info:
        mgr.reload()
    assert isinstance(info.value.__cause__, SchemaError)
