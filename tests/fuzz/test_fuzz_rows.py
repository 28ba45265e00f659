"""Fuzz: ``Rule.from_row`` and the compiled row reader on rows of arbitrary values.

Whatever a driver (or an attacker with write access to the table) puts in a
column, of whatever type, ``from_row`` gives a ``Rule`` within the ranges of
docs/behaviour.md#a-rule or a ``RuleError`` whose message is short and can always be formatted;
nothing else comes out.  The compiled ``RowReader`` gives the same outcome on
the same row: its records give back the same rule, attribute for attribute,
with the same warnings, or it refuses the row with the same message.
The example budget comes from the hypothesis profile (tests/conftest.py).
"""

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from row_outcomes import HugeRepr, PureReader, PureRecords, RaisingRepr, batch_outcome

from tcpmgm import Rule, RuleError
from tcpmgm.matching import records
from tcpmgm.model.limits import (
    ATTR_MAX,
    ATTR_MIN,
    ID_MAX,
    ID_MIN,
    PORT_MAX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    PROFILE_INT_MAX,
)
from tcpmgm.model.profile import PROFILE_FIELDS, attr_spec
from tcpmgm.model.rule import COLUMNS
from tcpmgm.sql import rows
from tcpmgm.sql.schema import SCHEMA_VERSIONS

LISTENERS = {"internal": "10.0.0.1", "v6": "2001:db8::1", "broken": "not an address", "zoned": "fe80::1%eth0"}
MESSAGE_LIMIT = 400  # the value is cut to ~40 characters; the rest is the id, column and reason


BOUNDARIES = [
    0,
    1,
    -1,
    65535,
    65536,
    PRIORITY_MIN - 1,
    PRIORITY_MIN,
    PRIORITY_MAX,
    PRIORITY_MAX + 1,
    ID_MAX,
    ID_MAX + 1,
    2**64,
    2**50,
    -(2**63),
    10**5000,
    -(10**5000),
]
INTS = st.one_of(st.integers(), st.integers(-(2**80), 2**80), st.sampled_from(BOUNDARIES))
DECIMALS = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.builds(
        lambda digits, exponent: Decimal(f"{digits}E{exponent}"),
        st.integers(-(10**6), 10**6),
        st.integers(-(10**7), 10**7),
    ),
    st.sampled_from(
        [
            Decimal("sNaN"),
            Decimal("-Infinity"),
            Decimal("1E+100000"),
            Decimal("1" * 5000),
            Decimal("2.000"),
            Decimal("-0"),
            Decimal("1E-100000"),
        ]
    ),
)
NEAR_VALID = st.sampled_from(
    [
        "tcp",
        "TCP",
        " tls ",
        "any",
        "ANY",
        "udp",
        "hep_udp",
        "wss\x00",
        "t\u0441p",
        "",
        "10.0.0.0/8",
        " 10.0.0.0/8",
        "10.0.0.0/8 ",
        "10.0.0.0/33",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "10.0.0.0/\u00b2",
        "10.0.0.0/0008",
        "10.0.0.0/" + "0" * 300 + "8",
        "10.0.0.0/" + "9" * 5000,
        "10.1.2.3/8",
        "10.0.0.1/",
        "::ffff:1.2.3.4",
        "::ffff:1.2.3.0/120",
        "::ffff:0:0/96",
        "2001:db8::/32",
        "2001:db8::1/129",
        "::/0",
        "fe80::1%eth0",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "256.0.0.1",
        "\uff11.2.3.4",
        "internal",
        "v6",
        "broken",
        "zoned",
        "INTERNAL",
        "5060",
        " 5060 ",
        "+7",
        "-0",
        "0x10",
        "1_000",
        "1e3",
        "\u0663",
        "9" * 30,
        "9" * 5000,
        "0" * 5000 + "7",
        "max_msg_chunks=10",
        "max_msg_chunks",
        "max_msg_chunks=-2147483648",
        "max_msg_chunks=2147483648",
        "max_msg_chunks=" + "9" * 5000,
        "nope=1",
        ";;",
        "max_msg_chunks=\u0663",
        "x" * 10_000,
    ]
)
TEXT = st.one_of(
    st.text(), NEAR_VALID, st.builds(lambda a, b, c: a + b + c, st.text(max_size=2), NEAR_VALID, st.text(max_size=2))
)
BYTES = st.one_of(st.binary(), TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    st.floats(),
    DECIMALS,
    TEXT,
    BYTES,
    BYTES.map(bytearray),
    BYTES.map(memoryview),
    st.lists(st.integers(), max_size=3),
    st.builds(object),
    st.builds(RaisingRepr),
    st.builds(HugeRepr),
)


@st.composite
def row_values(draw, columns):
    """A row whose every column is either a plausible value or an arbitrary one."""
    plausible = {
        "id": st.integers(ID_MIN, 100),
        "proto": st.sampled_from(["tcp", "any", "tls"]),
        "remote_addr": st.sampled_from([None, "10.0.0.0/8", "2001:db8::/32"]),
        "local_addr": st.sampled_from([None, "10.0.0.1", "internal"]),
    }
    return tuple(
        draw(st.one_of(plausible[name], ANY_VALUE) if name in plausible else st.one_of(st.none(), ANY_VALUE))
        for name in columns
    )


def check_rule(rule: Rule) -> None:
    assert ID_MIN <= rule.id <= ID_MAX and PRIORITY_MIN <= rule.priority <= PRIORITY_MAX
    assert 0 <= rule.remote_port <= PORT_MAX and 0 <= rule.local_port <= PORT_MAX
    for name in PROFILE_FIELDS:
        value = getattr(rule.profile, name)
        if name == "attrs":
            for name, number in value.items():  # each value within its own name's range, so within ATTR_MIN..MAX
                spec = attr_spec(name)
                assert spec is not None and spec.minimum <= number <= spec.maximum
                assert ATTR_MIN <= number <= ATTR_MAX
        else:
            assert type(value) in (int, bool) and 0 <= value <= PROFILE_INT_MAX


def check_error(err: RuleError) -> None:
    assert err.column in COLUMNS and err.reason
    assert len(str(err)) <= MESSAGE_LIMIT
    assert len(repr(err)) <= 2 * MESSAGE_LIMIT


COLUMN_ORDERS = [SCHEMA_VERSIONS[2], SCHEMA_VERSIONS[1]]


@pytest.mark.parametrize("columns", COLUMN_ORDERS, ids=["v2", "v1"])
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_from_row_gives_a_rule_or_a_rule_error(columns, data):
    row = dict(zip(columns, data.draw(row_values(columns))))
    listeners = data.draw(st.sampled_from([None, LISTENERS]))
    try:
        rule = Rule.from_row(row, listeners=listeners)
    except RuleError as err:
        check_error(err)
    else:
        check_rule(rule)
        for warning in rule.warnings:
            assert len(str(warning)) <= MESSAGE_LIMIT


@pytest.mark.skipif(not rows.COMPILED, reason="compiled modules disabled by TCPMGM_NO_EXTENSIONS")
@pytest.mark.parametrize("columns", COLUMN_ORDERS, ids=["v2", "v1"])
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_compiled_reader_agrees_with_from_row(columns, data):
    values = data.draw(row_values(columns))
    listeners = data.draw(st.sampled_from([None, LISTENERS]))
    first = batch_outcome(PureReader(columns, listeners=listeners), PureRecords(), values)  # registers spellings
    assert batch_outcome(rows.RowReader(columns, listeners=listeners), records.RuleRecords(), values) == first
