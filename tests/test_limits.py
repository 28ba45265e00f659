"""docs/behaviour.md#a-rule ranges (tcpmgm.model.limits): one row out of range is one rejected row.

``Rule.from_row``, ``Rule(...)``, the compiled row reader and both matchers
accept exactly the ids 1..2**63-1, the priorities -2**31..2**31-1 and the
profile integers 0..2**31-1; a row outside them is rejected by name and the
other rows load, whichever twins (compiled or pure) do the work.
"""

import sqlite3

import pytest
from click.testing import CliRunner
from row_outcomes import PureRecords, batch_outcome
from tables import create_plain_table, insert

import tcpmgm
from tcpmgm import ReferenceMatcher, Rule, RuleError
from tcpmgm.matching import matcher as matcher_module
from tcpmgm.matching import records
from tcpmgm.model.limits import ID_MAX, PRIORITY_MAX, PRIORITY_MIN, PROFILE_INT_MAX
from tcpmgm.model.profile import PROFILE_FIELDS, default_profile
from tcpmgm.service import manager
from tcpmgm.sql import rows
from tcpmgm.sql._rows_py import RowReader as PureReader
from tcpmgm.sql.schema import SCHEMA_VERSIONS
from tcpmgm.tools.cli import cli

PROFILE_INTS = tuple(name for name in PROFILE_FIELDS if name != "attrs")
RANGED = {"alias_mode", "parallel_read"}  # 0..2 by the model, before any storage range
PRIORITY_REASON = f"must be between {PRIORITY_MIN} and {PRIORITY_MAX}"


def row(**columns):
    return {"id": 7, "proto": "tcp", **columns}


def expected_refusal(column, value):
    """(rule_id, reason) for a boundary value from_row must refuse, else None."""
    if column == "id":
        if value < 1:
            return None, "id must be a positive integer (0 is the default profile)"
        return (None, f"id must be at most {ID_MAX}") if value > ID_MAX else None
    if column == "priority":
        return None if PRIORITY_MIN <= value <= PRIORITY_MAX else (7, PRIORITY_REASON)
    if value > PROFILE_INT_MAX:
        return 7, f"must be at most {PROFILE_INT_MAX}"
    return (7, "must be between 0 and 2") if column in RANGED else None


BOUNDARY_ROWS = (
    [("id", v) for v in (0, 1, ID_MAX, ID_MAX + 1, 2**64)]
    + [("priority", v) for v in (PRIORITY_MIN - 1, PRIORITY_MIN, PRIORITY_MAX, PRIORITY_MAX + 1, 2**50)]
    + [(name, v) for name in PROFILE_INTS for v in (PROFILE_INT_MAX, PROFILE_INT_MAX + 1)]
)


@pytest.mark.parametrize("column, value", BOUNDARY_ROWS)
def test_from_row_takes_exactly_the_ranges(column, value):
    refusal = expected_refusal(column, value)
    if refusal is None:
        rule = Rule.from_row(row(**{column: value}))
        held = rule.id if column == "id" else rule.priority if column == "priority" else getattr(rule.profile, column)
        assert held == (bool(value) if column in ("no_new_conn", "keepalive") else value)
        return
    rule_id, reason = refusal
    with pytest.raises(RuleError) as info:
        Rule.from_row(row(**{column: value}))
    err = info.value
    assert (err.rule_id, err.column, err.value, err.reason) == (rule_id, column, value, reason)
    assert str(err) == f"rule {'?' if rule_id is None else rule_id}: column {column!r}, value {value}: {reason}"


@pytest.mark.skipif(not rows.COMPILED, reason="compiled modules disabled by TCPMGM_NO_EXTENSIONS")
@pytest.mark.parametrize("columns", [SCHEMA_VERSIONS[2], SCHEMA_VERSIONS[1]], ids=["v2", "v1"])
def test_compiled_reader_takes_exactly_what_from_row_takes(columns):
    compiled, pure = rows.RowReader(columns), PureReader(columns)
    for column, value in BOUNDARY_ROWS:
        if column not in columns:
            continue
        values = tuple(row(**{column: value}).get(c) for c in columns)
        expected = batch_outcome(pure, PureRecords(), values)
        assert batch_outcome(compiled, records.RuleRecords(), values) == expected, (column, value)


@pytest.mark.parametrize(
    "fields, column, reason",
    [
        (dict(id=0), "id", "id must be a positive integer (0 is the default profile)"),
        (dict(id=ID_MAX + 1), "id", f"id must be at most {ID_MAX}"),
        (dict(id=2**64), "id", f"id must be at most {ID_MAX}"),
        (dict(id=3, priority=PRIORITY_MAX + 1), "priority", PRIORITY_REASON),
        (dict(id=3, priority=PRIORITY_MIN - 1), "priority", PRIORITY_REASON),
        (dict(id=3, remote_port=65536), "remote_port", "port must be between 0 (any) and 65535"),
        (dict(id=3, local_port=-1), "local_port", "port must be between 0 (any) and 65535"),
    ],
)
def test_rule_made_directly_checks_the_same_ranges(fields, column, reason):
    with pytest.raises(RuleError) as info:
        Rule(**fields)
    assert (info.value.column, info.value.value, info.value.reason) == (column, fields[column], reason)


def test_rules_at_the_extremes_rank_alike_in_both_matchers(matcher_cls):
    rules = [
        Rule(id=1, priority=PRIORITY_MAX),
        Rule(id=ID_MAX, priority=PRIORITY_MIN),
        Rule(id=2),
        Rule(id=ID_MAX - 1, priority=PRIORITY_MIN),
    ]
    matcher = matcher_cls(rules)
    assert [r.id for r in matcher] == [r.id for r in ReferenceMatcher(rules)] == [ID_MAX - 1, ID_MAX, 2, 1]
    assert matcher.lookup(None, None).id == ID_MAX - 1


def _around_validation(rule_id, priority):
    """A rule made the way from_row makes its own, skipping the checks (as no caller should)."""
    return Rule._from_checked(rule_id, None, None, 0, None, 0, priority, default_profile(), None, ())


@pytest.mark.skipif(not matcher_module.COMPILED, reason="compiled classifier not in use")
@pytest.mark.parametrize(
    "rule_id, priority, message",
    [
        (ID_MAX + 1, 0, f"rule ?: column 'id', value {ID_MAX + 1}: id must be at most {ID_MAX}"),
        (3, 2**45, f"rule 3: column 'priority', value {2**45}: {PRIORITY_REASON}"),
        (4, -(2**45), f"rule 4: column 'priority', value {-(2**45)}: {PRIORITY_REASON}"),
        (5, PRIORITY_MAX + 1, f"rule 5: column 'priority', value {PRIORITY_MAX + 1}: {PRIORITY_REASON}"),
    ],
)
def test_compiled_matcher_refuses_rules_outside_the_ranges_by_name(rule_id, priority, message):
    """The compiled matcher packs ids and Rule.order into C integers: its check is the ranges'."""
    with pytest.raises(RuleError) as info:
        matcher_module.Matcher([Rule(id=1), _around_validation(rule_id, priority)])
    assert str(info.value) == message


# -- a table with one row out of range ------------------------------------------------


@pytest.fixture
def table(tmp_path):
    """SQLite (whose INTEGER holds 2**50): good rows around rows out of range."""
    path = tmp_path / "rules.db"
    conn = sqlite3.connect(path)
    create_plain_table(conn)
    insert(conn, {"id": 1, "proto": "tcp", "remote_addr": "10.0.0.0/8"})
    insert(conn, {"id": 2, "proto": "tcp", "remote_addr": "10.1.0.0/16", "priority": 2**50})
    insert(conn, {"id": 3, "proto": "tls", "remote_addr": "2001:db8::/32", "priority": PRIORITY_MIN})
    insert(conn, {"id": 4, "proto": "tcp", "remote_addr": "10.2.0.0/16", "keepidle": PROFILE_INT_MAX + 1})
    insert(conn, {"id": ID_MAX, "proto": "tcp", "remote_addr": "10.3.0.0/16", "priority": -1})
    conn.close()
    return f"sqlite:///{path}"


READERS = [pytest.param(PureReader, id="pure-reader")]
if rows.COMPILED:
    READERS.append(pytest.param(rows.RowReader, id="compiled-reader"))


@pytest.mark.parametrize("reader", READERS)
def test_reload_rejects_the_row_out_of_range_and_loads_the_others(table, reader, matcher_cls, monkeypatch):
    monkeypatch.setattr(rows, "RowReader", reader)  # the reader rows.row_reader makes
    monkeypatch.setattr(manager, "Matcher", matcher_cls)
    mgr = tcpmgm.TcpMgm(table)
    report = mgr.reload()
    assert type(mgr.matcher) is matcher_cls
    assert report.loaded == 3 and sorted(r.id for r in mgr.matcher) == [1, 3, ID_MAX]
    assert [(e.rule_id, e.column, e.value) for e in report.rejected] == [
        (2, "priority", 2**50),
        (4, "keepidle", PROFILE_INT_MAX + 1),
    ]
    assert mgr.lookup("tcp", "10.1.2.3").id == 1
    assert mgr.lookup("tcp", "10.3.0.1").id == ID_MAX
    assert mgr.lookup("tls", "2001:db8::1").id == 3


def test_check_reports_the_row_as_rejected_not_shadowed(table):
    result = CliRunner().invoke(cli, ["check", "--db", table])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    rejected = [line for line in lines if "rule 2:" in line]
    assert rejected and all("priority" in line and PRIORITY_REASON in line for line in rejected), result.output
    assert "shadowed" not in result.output and "never wins" not in result.output


def test_match_answers_from_the_good_rows(table):
    result = CliRunner().invoke(cli, ["match", "--db", table, "tcp", "10.1.2.3:5060"])
    assert result.exception is None, result.output
    assert result.exit_code == 0, result.output
    assert any(line.startswith("rule #1 ") for line in result.output.splitlines()), result.output
    assert "2 row(s) rejected" in result.output
