"""OpenSIPS's pitfalls on hand-written tables (docs/opensips.md#opensips-pitfalls).

Each table is stored the way an operator would have it (SQLite files without
constraints from tests/tables.py, and the real PostgreSQL and MariaDB servers
for the batches), read back raw in database order as OpenSIPS reads it, and
the pitfalls are asserted with their rows and what their messages say.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from tables import create_plain_table, insert

from tcpmgm import TcpMgm
from tcpmgm.model.errors import ArgumentError, SchemaError, TcpMgmError
from tcpmgm.model.profile import register_attr
from tcpmgm.model.protocols import register_protocol
from tcpmgm.opensips import report as report_module
from tcpmgm.opensips.comparison import Comparison, Difference, compare
from tcpmgm.opensips.pitfalls import Pitfall, batch_rows, modparam_lines, not_loaded, pitfalls
from tcpmgm.opensips.report import Report, check_table
from tcpmgm.sql.table import read_rows

LISTENERS = {"pub": "192.0.2.1", "priv": "10.9.0.1"}


@pytest.fixture
def sqlite_path(tmp_path: Any) -> Iterator[str]:
    path = str(tmp_path / "rules.db")
    yield path


def sqlite_table(
    path: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    schema_version: int = 2,
    rename: Mapping[str, str] | None = None,
    version_row: int | str | None = "schema",
) -> TcpMgm:
    """A plain SQLite table holding ``rows`` in this order (columns left out take OpenSIPS's defaults),
    and a ``version`` row saying ``version_row`` (by default the schema version; None: no row)."""
    conn = sqlite3.connect(path)
    try:
        create_plain_table(conn, schema_version=schema_version, rename=rename)
        for row in rows:
            insert(conn, row, rename=rename)
        if version_row is not None:
            conn.execute("CREATE TABLE version (table_name TEXT, table_version INTEGER)")
            recorded = schema_version if version_row == "schema" else version_row
            conn.execute("INSERT INTO version VALUES ('tcp_mgm', ?)", (recorded,))
            conn.commit()
    finally:
        conn.close()
    return TcpMgm(f"sqlite:///{path}", columns=rename, listeners=LISTENERS, schema_version=schema_version)


def found(mgr: TcpMgm, *, schema_version: int = 2, **options: Any) -> dict[str, list[Pitfall]]:
    rows = read_rows(mgr.source, mgr.names, by_id=False)
    by_kind: dict[str, list[Pitfall]] = {}
    for pitfall in pitfalls(
        rows,
        backend=mgr.source.dialect.name,
        columns=mgr.names.columns,
        listeners=mgr.listeners,
        schema_version=schema_version,
        **options,
    ):
        by_kind.setdefault(pitfall.kind, []).append(pitfall)
    return by_kind


def only(by_kind: dict[str, list[Pitfall]], kind: str) -> Pitfall:
    assert len(by_kind.get(kind, [])) == 1, by_kind
    return by_kind[kind][0]


def rule(rule_id: int, **columns: Any) -> dict[str, Any]:
    return {"id": rule_id, "proto": "tcp", **columns}


# -- rows OpenSIPS rejects ----------------------------------------------------------------


def test_attrs_item_with_a_value_is_rejected_whole(sqlite_path: str) -> None:
    mgr = sqlite_table(
        sqlite_path,
        [
            rule(1, attrs="max_msg_chunks=10"),
            rule(2, attrs="max_msg_chunks"),
            rule(3),
            rule(4, attrs=" max_msg_chunks ; max_msg_chunks=3 "),
        ],
    )
    by_kind = found(mgr)
    value = only(by_kind, "attrs-value")
    assert value.rule_ids == (1, 4)
    assert "max_msg_chunks=10" in value.message and "max_msg_chunks=3" in value.message
    assert "rejects" in value.message and "sets the attribute to 0" in value.message
    # tcpmgm reads the same rows as documented: all four load.
    assert mgr.reload().loaded == 4
    assert mgr.lookup("tcp", "10.0.0.1").attrs == {"max_msg_chunks": 10}
    # A bare name is what OpenSIPS takes: rows 2 and 3 leave nothing behind.
    assert only(by_kind, "uninitialised-entry").rule_ids == (1, 4)
    assert set(by_kind) == {"attrs-value", "uninitialised-entry"}


def test_attrs_names_known_to_tcpmgm_only_are_unknown_to_opensips(sqlite_path: str) -> None:
    register_attr("pitfall_probe_attr")
    mgr = sqlite_table(
        sqlite_path,
        [rule(1, attrs="pitfall_probe_attr"), rule(2, attrs="max_msg_chunks"), rule(3, attrs="pitfall_probe_attr=2")],
    )
    by_kind = found(mgr)
    unknown = only(by_kind, "unknown-attr")
    assert unknown.rule_ids == (1, 3)
    assert "pitfall_probe_attr" in unknown.message and "max_msg_chunks" in unknown.message
    assert only(by_kind, "attrs-value").rule_ids == (3,)
    assert only(by_kind, "uninitialised-entry").rule_ids == (1, 3)
    assert "tcpmgm has registered" in unknown.message and "neither" not in unknown.message


def test_an_attrs_name_neither_knows_is_not_called_tcpmgm_only(sqlite_path: str) -> None:
    register_attr("pitfall_probe_attr")
    mgr = sqlite_table(
        sqlite_path,
        [rule(1, attrs="pitfall_no_such_attr"), rule(2, attrs="pitfall_probe_attr"), rule(3, attrs="max_msg_chunks")],
    )
    unknown_to_both, tcpmgm_only = found(mgr)["unknown-attr"]  # grouped by what tcpmgm knows, in row order
    assert tcpmgm_only.rule_ids == (2,) and unknown_to_both.rule_ids == (1,)
    assert "pitfall_no_such_attr" not in tcpmgm_only.message and "tcpmgm has registered" in tcpmgm_only.message
    assert "pitfall_no_such_attr" in unknown_to_both.message
    assert "neither OpenSIPS nor tcpmgm" in unknown_to_both.message and "registered" not in unknown_to_both.message
    report = mgr.reload()  # tcpmgm rejects the row too, as the message says
    assert report.loaded == 2 and [error.rule_id for error in report.rejected] == [1]


def test_empty_attrs_items_are_rejected(sqlite_path: str) -> None:
    mgr = sqlite_table(
        sqlite_path,
        [rule(1, attrs=""), rule(2, attrs="max_msg_chunks;"), rule(3, attrs="max_msg_chunks"), rule(4, attrs=None)],
    )
    by_kind = found(mgr)
    assert only(by_kind, "attrs-empty-item").rule_ids == (1, 2)
    assert mgr.reload().loaded == 4  # tcpmgm skips an empty item


def test_null_in_a_not_null_column_is_a_rejected_row(sqlite_path: str) -> None:
    mgr = sqlite_table(
        sqlite_path,
        [rule(1, keepidle=None), rule(2), rule(3, keepidle=None, connect_timeout=None), rule(4, remote_addr="")],
    )
    by_kind = found(mgr)
    messages = {p.message: p.rule_ids for p in by_kind["rejected-row"]}
    assert messages == {
        "OpenSIPS rejects these rows: keepidle is NULL, which its schema does not allow.": (1, 3),
        "OpenSIPS rejects these rows: connect_timeout is NULL, which its schema does not allow.": (3,),
        "OpenSIPS rejects these rows: remote_addr is not an address in ip[/len] form, NULL or 'any'.": (4,),
    }
    report = mgr.reload()  # tcpmgm reads the NULLs as defaults and '' as any
    assert report.loaded == 4 and report.rejected == ()
    entry = only(by_kind, "uninitialised-entry")
    assert entry.rule_ids == (1, 3, 4)
    assert "3 row(s)" in entry.message and "never written" in entry.message


def test_protocols_registered_in_tcpmgm_only_are_rejected(sqlite_path: str) -> None:
    register_protocol("pitfallproto")
    mgr = sqlite_table(sqlite_path, [rule(1, proto="pitfallproto"), rule(2, proto="WS"), rule(3, proto="any")])
    unknown = only(found(mgr), "unknown-proto")
    assert unknown.rule_ids == (1,)
    assert "pitfallproto" in unknown.message


def test_local_addr_forms_opensips_cannot_match(sqlite_path: str) -> None:
    mgr = sqlite_table(
        sqlite_path,
        [
            rule(1, local_addr="192.0.2.0/24"),
            rule(2, local_addr="192.0.2.1/32"),
            rule(3, local_addr="pub", local_port=5060),
            rule(4, local_addr="192.0.2.9"),
            rule(5, local_addr="192.0.2.1"),
            rule(6, local_addr="pub"),
            rule(7, local_addr="ANY"),
            rule(8, local_addr=None),
            rule(9, local_addr="10.9.0.1", remote_addr="2001:db8::/32"),
        ],
    )
    by_kind = found(mgr)
    form = only(by_kind, "local-addr-form")
    assert form.rule_ids == (1, 2, 3, 4)
    for shown in ("'192.0.2.0/24' (an ip/len network)", "'192.0.2.1/32'", "'pub' with local_port 5060"):
        assert shown in form.message
    assert "and 1 more" in form.message  # the first three forms are named, the fourth counted
    families = only(by_kind, "rejected-row")
    assert families.rule_ids == (9,) and "different IP families" in families.message
    assert only(by_kind, "uninitialised-entry").rule_ids == (1, 2, 3, 4, 9)


def test_a_local_address_no_listener_has_is_flagged_only_when_listeners_are_known(sqlite_path: str) -> None:
    mgr = sqlite_table(sqlite_path, [rule(1, local_addr="192.0.2.9"), rule(2, local_addr="192.0.2.1")])
    rows = read_rows(mgr.source, mgr.names, by_id=False)
    with_listeners = [p for p in pitfalls(rows, backend="sqlite", listeners=LISTENERS) if p.kind == "local-addr-form"]
    assert [p.rule_ids for p in with_listeners] == [(1,)]
    assert "no listener tcpmgm knows" in with_listeners[0].message
    assert pitfalls(rows, backend="sqlite") == []


# -- rows OpenSIPS loads otherwise --------------------------------------------------------


def test_keepalive_off_is_overridden_by_a_keepalive_timer(sqlite_path: str) -> None:
    mgr = sqlite_table(
        sqlite_path,
        [
            rule(1, keepalive=0),  # the table's default timers: 9, 7200, 75
            rule(2, keepalive=0, keepcount=0, keepidle=0, keepinterval=0),
            rule(3, keepalive=0, keepcount=0, keepidle=0, keepinterval=30),
            rule(4, keepalive=1),
            rule(5, keepalive=0, attrs="max_msg_chunks=1"),  # rejected anyway: not a keepalive row
        ],
    )
    by_kind = found(mgr)
    override = only(by_kind, "keepalive-override")
    assert override.rule_ids == (1, 3)
    assert "turns keepalive on" in override.message


def test_parallel_read_of_schema_version_1(sqlite_path: str) -> None:
    mgr = sqlite_table(sqlite_path, [rule(1, parallel_read=1), rule(2), rule(3, parallel_read=2)], schema_version=1)
    by_kind = found(mgr, schema_version=1)
    dropped = only(by_kind, "parallel-read")
    assert dropped.rule_ids == (1, 3)
    assert "schema version 2" in dropped.message and "version row says 1" in dropped.message
    assert "parallel-read" not in found(sqlite_table(sqlite_path + "2", [rule(1)]))


def test_parallel_read_out_of_range_is_rejected_on_version_1(sqlite_path: str) -> None:
    mgr = sqlite_table(sqlite_path, [rule(1, parallel_read=3)], schema_version=1)
    rejected = only(found(mgr, schema_version=1), "rejected-row")
    assert rejected.rule_ids == (1,) and "parallel_read is above 2" in rejected.message


# -- batches ------------------------------------------------------------------------------


def test_default_batch_is_the_private_memory_over_the_row_estimate() -> None:
    # tcp_db.c: estimate_available_rows(8 + 42 + 42 + 3 + 4 * NO_INT_VALS, NO_DB_COLS), 256 bytes a column,
    # over a default build's 16 MB of private memory.
    assert batch_rows(2) == 3525
    assert batch_rows(1) == 3342
    assert batch_rows(2, pkg_memory=64 * 1024 * 1024) == 14101
    assert batch_rows(2, pkg_memory=100) == 5  # no estimate: tcp_reload_paths falls back to 5


def test_batch_loss_keeps_only_the_last_batch_in_database_order(sqlite_path: str) -> None:
    ids = [7, 3, 9, 1, 10, 2, 8, 4, 6, 5]  # SQLite returns a plain table in insertion (rowid) order
    mgr = sqlite_table(sqlite_path, [rule(i) for i in ids])
    loss = only(found(mgr, batch=4), "batch-loss")
    assert loss.rule_ids == tuple(ids[:8])  # 10 rows, batches of 4, 4 and 2: the last 2 stay
    assert "db_sqlite" in loss.message and "at most 4 rows" in loss.message
    assert "loads the last 2" in loss.message and "loses the first 8" in loss.message
    assert only(found(mgr, batch=5), "batch-loss").rule_ids == tuple(ids[:5])  # an exact multiple: a full batch
    assert "batch-loss" not in found(mgr, batch=10)
    assert "batch-loss" not in found(mgr)  # the default batch is far larger


def test_rejected_rows_of_lost_batches_leave_no_entry(sqlite_path: str) -> None:
    bad = {"attrs": "max_msg_chunks=1"}
    mgr = sqlite_table(sqlite_path, [rule(1, **bad), rule(2), rule(3), rule(4, **bad), rule(5)])
    by_kind = found(mgr, batch=2)
    assert only(by_kind, "attrs-value").rule_ids == (1, 4)
    assert only(by_kind, "batch-loss").rule_ids == (1, 2, 3, 4)
    assert "uninitialised-entry" not in by_kind  # the last batch (row 5) is clean
    by_kind = found(mgr, batch=3)
    assert only(by_kind, "batch-loss").rule_ids == (1, 2, 3)
    assert only(by_kind, "uninitialised-entry").rule_ids == (4,)


def _server_table(scratch: Any, ids: Sequence[int]) -> TcpMgm:
    mgr = TcpMgm(scratch.url)
    mgr.create_schema()
    for rule_id in ids:
        scratch.execute("INSERT INTO tcp_mgm (id, proto) VALUES (%s, %s)", (rule_id, "tcp"))
    return mgr


def test_batch_loss_on_postgresql_follows_heap_order(pg_scratch: Any) -> None:
    mgr = _server_table(pg_scratch, [1, 2, 3, 4, 5, 6])
    # An updated row's new version goes to the end of the heap: a plain SELECT returns it last.
    pg_scratch.execute("UPDATE tcp_mgm SET priority = 1 WHERE id = %s", (2,))
    order = [row["id"] for row in read_rows(mgr.source, mgr.names, by_id=False)]
    assert order == [1, 3, 4, 5, 6, 2]
    loss = only(found(mgr, batch=4), "batch-loss")
    assert loss.rule_ids == (1, 3, 4, 5)
    assert "db_postgres" in loss.message and "loads the last 2" in loss.message
    # The report reads the same order (and create_schema's version row satisfies OpenSIPS).
    assert [(p.kind, p.rule_ids) for p in check_table(mgr, batch=4).pitfalls] == [("batch-loss", (1, 3, 4, 5))]
    mgr.close()


def test_batch_loss_on_mariadb_follows_primary_key_order(my_scratch: Any) -> None:
    mgr = _server_table(my_scratch, [5, 1, 4, 2, 3, 6])
    # InnoDB returns a plain SELECT in primary key order, whatever the order of the INSERTs.
    assert [row["id"] for row in read_rows(mgr.source, mgr.names, by_id=False)] == [1, 2, 3, 4, 5, 6]
    loss = only(found(mgr, batch=4), "batch-loss")
    assert loss.rule_ids == (1, 2, 3, 4)
    assert "db_mysql" in loss.message
    assert [(p.kind, p.rule_ids) for p in check_table(mgr, batch=4).pitfalls] == [("batch-loss", (1, 2, 3, 4))]
    mgr.close()


# -- renames ------------------------------------------------------------------------------


def test_modparam_lines_account_for_the_off_by_one_renames() -> None:
    renames = {"id": "rid", "priority": "prio", "attrs": "flags", "no_new_conn": "nnc", "alias_mode": "am"}
    assert modparam_lines({**renames, "keepalive": "ka"}, table="paths") == [
        'modparam("tcp_mgm", "db_table", "paths")',
        'modparam("tcp_mgm", "id_col", "rid")',
        'modparam("tcp_mgm", "direction_col", "prio")',
        'modparam("tcp_mgm", "priority_col", "flags")',
        'modparam("tcp_mgm", "send_threshold_col", "nnc")',
        'modparam("tcp_mgm", "alias_mode_col", "am")',
        'modparam("tcp_mgm", "keepalive_col", "ka")',
    ]
    # Schema version 1 (OpenSIPS 3.x): parallel_read_col is right, every parameter after it one off again.
    assert modparam_lines(
        {**renames, "parallel_read": "pr", "keepalive": "ka", "keepinterval": "ki"}, schema_version=1
    ) == [
        'modparam("tcp_mgm", "id_col", "rid")',
        'modparam("tcp_mgm", "direction_col", "prio")',
        'modparam("tcp_mgm", "priority_col", "flags")',
        'modparam("tcp_mgm", "send_threshold_col", "nnc")',
        'modparam("tcp_mgm", "no_new_conn_col", "am")',
        'modparam("tcp_mgm", "parallel_read_col", "pr")',
        'modparam("tcp_mgm", "alias_mode_col", "ka")',
        'modparam("tcp_mgm", "keepidle_col", "ki")',
    ]
    assert modparam_lines({}) == []
    assert modparam_lines({"parallel_read": "pr"}) == []  # OpenSIPS 4 reads no such column
    with pytest.raises(SchemaError):
        modparam_lines({"direction": "dir"})


def test_renamed_columns_whose_parameter_renames_another_column(sqlite_path: str) -> None:
    rename = {"priority": "prio", "keepalive": "ka", "remote_addr": "remote"}
    mgr = sqlite_table(sqlite_path, [rule(1)], rename=rename)
    renamed = found(mgr)["column-rename"]
    assert [p.rule_ids for p in renamed] == [()]
    assert "priority_col parameter renames attrs, not priority" in renamed[0].message
    assert "direction_col" in renamed[0].message
    # On schema version 1 keepalive_col is one off too (alias_mode_col renames keepalive there).
    on_version_1 = [p.message for p in pitfalls([], backend="sqlite", columns=rename, schema_version=1)]
    renames_on_1 = [m for m in on_version_1 if "_col parameter" in m]
    assert len(renames_on_1) == 2
    assert "keepalive_col parameter renames keepcount, not keepalive" in renames_on_1[1]
    assert "alias_mode_col" in renames_on_1[1]


def test_unknown_backend_and_schema_version() -> None:
    with pytest.raises(SchemaError):
        pitfalls([], backend="oracle")
    with pytest.raises(SchemaError, match=r"unknown schema version 3 \(known: 1, 2\)"):
        pitfalls([], backend="sqlite", schema_version=3)
    with pytest.raises(SchemaError):
        batch_rows(3)
    with pytest.raises(ArgumentError, match="at least one row") as refused:
        pitfalls([], backend="sqlite", batch=0)
    assert isinstance(refused.value, (TcpMgmError, ValueError))


# -- the report ---------------------------------------------------------------------------


def test_check_table_end_to_end_on_sqlite(sqlite_path: str) -> None:
    rename = {"priority": "prio"}
    mgr = sqlite_table(
        sqlite_path,
        [
            # In this database order (not the order of the ids) OpenSIPS sorts rule 24 after rule 8.
            rule(30, remote_addr="192.0.2.0/24", keepalive=0, priority=1),
            rule(8, remote_addr="10.0.0.0/8"),
            rule(5, proto="tls", remote_addr="10.0.0.0/16"),
            rule(24, remote_addr="10.1.0.0/16"),
            rule(31, proto="udp"),  # tcpmgm refuses it too: not among the rules compared
        ],
        rename=rename,
    )
    done: list[int] = []
    report = check_table(mgr, progress=done.append)
    assert report.differs and sum(done) > 0
    assert [(d.opensips_id, d.documented_id) for d in report.differences] == [(8, 24)]
    assert "rule 5 (tls) compared equal to both" in report.differences[0].reason
    assert [(p.kind, p.rule_ids) for p in report.pitfalls] == [
        ("rejected-row", (31,)),
        ("uninitialised-entry", (31,)),
        ("keepalive-override", (30,)),
        ("column-rename", ()),
    ]
    assert report.modparams == ['modparam("tcp_mgm", "direction_col", "prio")']
    assert report.opensips_version == "4.0 to 4.1.0-dev"

    as_json = json.loads(json.dumps(report.to_json()))
    assert as_json["differs"] is True
    (difference,) = as_json["differences"]
    assert (difference["opensips_id"], difference["documented_id"]) == (8, 24)
    assert len(difference["connection"]) == 5 and difference["connection"][0] == "tcp"
    assert [p["kind"] for p in as_json["pitfalls"]] == [p.kind for p in report.pitfalls]
    assert as_json["pitfalls"][2]["rule_ids"] == [30]
    assert as_json["modparams"] == report.modparams

    text = "\n".join(report.lines())
    assert text.startswith("OpenSIPS 4.0 to 4.1.0-dev:")
    assert "OpenSIPS picks rule 8, documented rule 24" in text
    assert "[keepalive-override]" in text and "rows: 30" in text
    assert 'modparam("tcp_mgm", "direction_col", "prio")' in text
    mgr.close()


def test_check_table_agrees_when_the_database_order_does(sqlite_path: str) -> None:
    mgr = sqlite_table(
        sqlite_path,
        [
            rule(5, proto="tls", remote_addr="10.0.0.0/16"),
            rule(8, remote_addr="10.0.0.0/8"),
            rule(24, remote_addr="10.1.0.0/16"),
        ],
    )
    report = check_table(mgr)
    assert not report.differs and report.pitfalls == [] and report.modparams == []
    mgr.reload()
    assert report.exhaustive and report.candidates == compare(mgr.rules_as_read).candidates > 0
    assert report.to_json() == {
        "opensips_version": "4.0 to 4.1.0-dev",
        "differs": False,
        "exhaustive": True,
        "candidates": report.candidates,
        "not_loaded": [],
        "differences_total": 0,
        "offset": 0,
        "next_offset": None,
        "differences": [],
        "pitfalls": [],
        "modparams": [],
    }
    assert report.lines() == [
        "OpenSIPS 4.0 to 4.1.0-dev:",
        "  picks the documented rule for every connection checked",
        "  no pitfalls",
    ]
    mgr.close()


def test_a_cut_comparison_never_says_every_connection_was_checked(sqlite_path: str, monkeypatch: Any) -> None:
    mgr = sqlite_table(
        sqlite_path, [rule(5, proto="tls", remote_addr="10.0.0.0/16"), rule(8, remote_addr="10.0.0.0/8")]
    )
    whole = check_table(mgr)
    cut = Comparison([], exhaustive=False, candidates=3)
    monkeypatch.setattr(report_module, "compare", lambda *args, **options: cut)
    report = check_table(mgr)
    assert (report.exhaustive, report.candidates, report.differs) == (False, 3, False)
    text = report.lines()
    assert "  picks the documented rule for every connection checked" in whole.lines()
    assert not any("every connection checked" in line for line in text)
    assert "  picks the documented rule for each of the 3 connection(s) checked" in text
    assert any(line.startswith("  the comparison was cut: 3 candidate connection(s) asked") for line in text)
    assert {k: report.to_json()[k] for k in ("exhaustive", "candidates", "differs")} == {
        "exhaustive": False,
        "candidates": 3,
        "differs": False,
    }
    for page in ({"offset": -1}, {"limit": 0}):
        with pytest.raises(ArgumentError, match="a page starts at an offset of 0 or more"):
            report.to_json(**page)
    # with differences too, the cut is said
    differing = dataclasses.replace(report, differences=[Difference(("tcp", "10.0.0.1", 1, None, 1), 8, 5, "why")])
    assert differing.differs and any("the comparison was cut" in line for line in differing.lines())
    mgr.close()


def test_the_rows_opensips_does_not_load_are_those_of_the_batch_loss_and_uninitialised_entries(
    sqlite_path: str,
) -> None:
    mgr = sqlite_table(
        sqlite_path,
        [
            *(rule(1), rule(2, proto="udp"), rule(3), rule(4)),
            *(rule(5, attrs="max_msg_chunks=1"), rule(6), rule(7, proto="udp")),
        ],
    )
    computed = [pitfall for group in found(mgr, batch=4).values() for pitfall in group]
    # OpenSIPS keeps the last batch, 5 to 7, and rejects 5 and 7 of it
    assert not_loaded(computed) == (1, 2, 3, 4, 5, 7)
    report = check_table(mgr, batch=4)
    assert report.not_loaded == (1, 2, 3, 4, 5, 7) and report.to_json()["not_loaded"] == [1, 2, 3, 4, 5, 7]
    # All rules of one key: the documented order takes the lowest id, 1; OpenSIPS the first row it
    # loads: 6 when it keeps only the last batch, 1 (of 1, 3, 4 and 6) when there is one batch.
    assert [(d.opensips_id, d.documented_id) for d in report.differences] == [(6, 1)]
    one_batch = check_table(mgr)
    assert one_batch.not_loaded == (2, 5, 7) and not one_batch.differs
    mgr.close()


def test_check_table_of_a_version_1_table_and_its_batches(sqlite_path: str) -> None:
    mgr = sqlite_table(sqlite_path, [rule(i, parallel_read=i % 2) for i in (4, 2, 3, 1)], schema_version=1)
    report = check_table(mgr, batch=3)
    assert report.opensips_version == "3.3 to 3.6"
    assert [(p.kind, p.rule_ids) for p in report.pitfalls] == [("batch-loss", (4, 2, 3)), ("parallel-read", (3, 1))]
    long_list = Report([], [Pitfall("batch-loss", tuple(range(1, 31)), "lost")], [], "x").lines()
    assert long_list[-1] == "      rows: " + ", ".join(map(str, range(1, 21))) + ", ... (30 in all)"
    mgr.close()


def test_check_table_reports_the_version_row_opensips_needs(sqlite_path: str) -> None:
    missing = check_table(sqlite_table(sqlite_path, [rule(1)], version_row=None))
    (pitfall,) = missing.pitfalls
    assert (pitfall.kind, pitfall.rule_ids) == ("version-row", ())
    assert "no row for this table" in pitfall.message and "refuses to load the table" in pitfall.message
    assert "table_name 'tcp_mgm', table_version 2" in pitfall.message
    wrong = check_table(sqlite_table(sqlite_path + "2", [rule(1)], version_row=1))
    assert [p.message.split(":")[0] for p in wrong.pitfalls] == [
        "The version row says 1, but the columns are those of schema version 2"
    ]


def test_repeated_ids_are_all_loaded_by_opensips(sqlite_path: str) -> None:
    mgr = sqlite_table(
        sqlite_path,
        [rule(3), rule(1), rule(3, remote_addr="10.0.0.0/8"), rule(1, attrs="max_msg_chunks=2"), rule(3)],
    )
    by_kind = found(mgr)
    repeated = only(by_kind, "duplicate-id")
    assert repeated.rule_ids == (3, 3)  # the second 1 is rejected by OpenSIPS anyway
    assert "only the first" in repeated.message
    report = mgr.reload()
    assert report.loaded == 2 and [e.reason for e in report.rejected] == ["duplicate id"] * 3
