"""model/key.py: the key as a table, and everything that ranks rules held to it.

``key_of`` and ``order_of`` are written out from ``LEVELS`` when the module
loads; here they are held to the table read level by level.  The compiled row
reader writes plain rows into a matcher's records in C: on thousands of
generated plain rows the rules the records give back carry exactly the order,
key and attributes that ``Rule.from_row`` gives (docs/behaviour.md#which-rule-wins).
"""

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rule_order import rules as made_rules

from tcpmgm import Rule, RuleError
from tcpmgm.matching import records
from tcpmgm.model import key
from tcpmgm.model.key import LENGTH_OFFSET, LEVELS, Kind, key_difference, key_of, order_of
from tcpmgm.model.limits import ID_MAX, PRIORITY_MAX, PRIORITY_MIN
from tcpmgm.model.rule import ATTRIBUTES
from tcpmgm.sql import rows
from tcpmgm.sql.schema import SCHEMA_VERSIONS


def _level_value(level, rule):
    """A rule's value at ``level``, read from the table as its comments say."""
    value = getattr(rule, level.attribute)
    if level.kind is Kind.ANY_NONE:
        return value is None
    if level.kind is Kind.ANY_ZERO:
        return value == 0
    if level.kind is Kind.LENGTH:
        return -(value[2] if value is not None else 0)
    return value


def _packed(rule):
    """Rule.order read from the table: each level above the next by its width."""
    order = 0
    for level in LEVELS:
        offset = LENGTH_OFFSET if level.kind is Kind.LENGTH else 0
        value = _level_value(level, rule) + offset
        assert level is LEVELS[0] or 0 <= value < 1 << level.bits, f"{level.name} outside its width"
        order = order * (1 << level.bits) + value
    return order


def test_the_table():
    """One level per attribute reading, each attribute one the rule keeps, the id last and widest."""
    assert len({level.name for level in LEVELS}) == len(LEVELS)
    assert {level.attribute for level in LEVELS} <= set(ATTRIBUTES)
    assert LEVELS[0].name == "priority" and LEVELS[-1].name == "id" and key.ID_BITS == 64
    assert sum(level.bits for level in LEVELS[:-1]) == 53  # the compiled matcher reads it as an int64


@settings(max_examples=2000, deadline=None)
@given(made_rules())
def test_key_and_order_are_the_table(rule):
    assert key_of(rule) == rule.key() == tuple(_level_value(level, rule) for level in LEVELS)
    assert order_of(rule) == rule.order == _packed(rule)


def test_key_values_are_what_they_were():
    """Bools for the "any" levels, minus the prefix lengths: Rule.key() is public."""
    rule = Rule.from_row({"id": 7, "proto": "tcp", "remote_addr": "10.0.0.0/8", "priority": -3})
    assert rule.key() == (-3, False, False, -8, True, True, 0, True, 7)
    assert [type(value) for value in rule.key()] == [int, bool, bool, int, bool, bool, int, bool, int]


@settings(max_examples=1000, deadline=None)
@given(made_rules(), made_rules())
def test_key_difference_names_the_first_level_that_differs(a, b):
    loser, winner = (a, b) if a.key() > b.key() else (b, a)
    reason = key_difference(loser, winner)
    if loser.key() == winner.key():
        assert reason == "it is the winner"
        return
    first = next(level for level in LEVELS if _level_value(level, loser) != _level_value(level, winner))
    assert reason.startswith(first.reason)


# -- the compiled row reader's packing -------------------------------------------------

PROTOS = ["any", "tcp", "tls", "ws", "wss"]


@st.composite
def networks(draw):
    """Prefix text without host bits, IPv4-mapped ones included, or NULL (any)."""
    kind = draw(st.sampled_from(["none", "v4", "v6", "mapped"]))
    if kind == "none":
        return None
    bits = 32 if kind == "v4" else 128
    low = 96 if kind == "mapped" else 0
    length = draw(st.sampled_from([low, bits, bits - 1, low + 1]) | st.integers(low, bits))
    value = draw(st.integers(0, (1 << bits) - 1))
    if kind == "mapped":
        value = 0xFFFF << 32 | value & 0xFFFFFFFF
    value = value >> (bits - length) << (bits - length) if length else 0
    network = (ipaddress.IPv4Network if bits == 32 else ipaddress.IPv6Network)((value, length))
    return str(network.network_address) if length == bits and draw(st.booleans()) else str(network)


@st.composite
def plain_rows(draw, columns):
    """A row the compiled reader makes itself (most of the time: a mixed family goes to from_row)."""
    row = {
        "id": draw(st.integers(1, 3) | st.integers(1, ID_MAX) | st.sampled_from([ID_MAX - 1, ID_MAX])),
        "proto": draw(st.sampled_from(PROTOS)),
        "remote_addr": draw(networks()),
        "remote_port": draw(st.sampled_from([0, 1, 5060, 65535, None])),
        "local_addr": draw(networks()),
        "local_port": draw(st.sampled_from([0, 1, 5061, 65535, None])),
        "priority": draw(
            st.integers(-2, 2) | st.integers(PRIORITY_MIN, PRIORITY_MAX) | st.sampled_from([PRIORITY_MIN, PRIORITY_MAX])
        ),
    }
    return tuple(row.get(column) for column in columns)


@pytest.fixture(scope="module")
def known_protocols():
    for proto in PROTOS:  # the compiled reader knows a spelling once from_row has accepted it
        Rule.from_row({"id": 1, "proto": proto})


@pytest.mark.skipif(not rows.COMPILED, reason="compiled modules disabled by TCPMGM_NO_EXTENSIONS")
@pytest.mark.parametrize("columns", [SCHEMA_VERSIONS[2], tuple(reversed(SCHEMA_VERSIONS[1]))], ids=["v2", "reversed"])
@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_compiled_readers_records_give_the_order_from_row_gives(known_protocols, columns, data):
    values = data.draw(plain_rows(columns))
    reader = rows.RowReader(columns)
    made, rejected = records.RuleRecords(), []
    reader.read_batch([values], made, rejected, [])
    try:
        expected = Rule.from_row(dict(zip(columns, values)))
    except RuleError:  # a remote and a local of two families: from_row refuses, the C path leaves it
        assert not reader._plain(values) and len(rejected) == 1 and len(made) == 0
        return
    assert reader._plain(values), "every other row here is plain"
    (rule,) = made.rules()
    assert rule.order == expected.order == order_of(expected) == _packed(rule)
    assert rule.key() == expected.key()
    # The declared attributes, each as from_row has it.
    assert {name: getattr(rule, name) for name in ATTRIBUTES} == {name: vars(expected)[name] for name in ATTRIBUTES}
