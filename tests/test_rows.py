"""The compiled row reader against its pure twin (``Rule.from_row``), on generated rows.

The compiled reader makes rules itself only for rows that need no judgement
and hands every other row to ``Rule.from_row``; here both readers get the same
rows, plain ones and ones a value away from plain, and must return the same
rule (every attribute, profile and warnings included) or the same error, one
row at a time and through ``read_batch`` (repeated ids, NULLs in NOT NULL
columns).
"""

import ipaddress

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from row_outcomes import attributes, outcome

from tcpmgm.model.limits import ID_MAX, PRIORITY_MAX, PRIORITY_MIN, PROFILE_INT_MAX
from tcpmgm.model.profile import Profile
from tcpmgm.sql import rows
from tcpmgm.sql._rows_py import RowReader as PureReader
from tcpmgm.sql.schema import NULLABLE_COLUMNS, SCHEMA_VERSIONS

pytestmark = pytest.mark.skipif(not rows.COMPILED, reason="compiled modules disabled by TCPMGM_NO_EXTENSIONS")

RANGED = {"no_new_conn": 1, "keepalive": 1, "alias_mode": 2, "parallel_read": 2}
ODD_INTS = st.one_of(
    st.integers(2, 3),
    st.integers(-3, -1),
    st.sampled_from([2**63, PROFILE_INT_MAX + 1]),
    st.sampled_from([True, False, 1.0, 2.5, "7", " 8 ", b"9", "x"]),
)
PORTS = st.one_of(st.sampled_from([0, 1, 5060, 65535, None]), st.integers(0, 65535))
ODD_PORTS = st.sampled_from([65536, -1, "5060", 5060.0, True, 70000])


def _v4(draw):
    value = draw(st.integers(0, 2**32 - 1))
    length = draw(st.sampled_from([0, 8, 24, 32]) | st.integers(0, 33))
    value = value >> (32 - min(length, 32)) << (32 - min(length, 32)) if draw(st.integers(0, 3)) and length else value
    return f"{ipaddress.IPv4Address(value)}/{length}"


def _v6(draw):
    value = draw(st.integers(0, 2**128 - 1) | st.integers(0, 2**32 - 1).map(lambda v: 0xFFFF << 32 | v))
    length = draw(st.sampled_from([0, 48, 64, 96, 104, 128]) | st.integers(0, 129))
    value = (
        value >> (128 - min(length, 128)) << (128 - min(length, 128)) if draw(st.integers(0, 3)) and length else value
    )
    return f"{ipaddress.IPv6Address(value)}/{length}"


PLAIN_ADDRESSES = st.one_of(
    st.none(),
    st.ip_addresses().map(str),
    st.composite(lambda d: _v4(d))(),
    st.composite(lambda d: _v6(d))(),
)
ODD_ADDRESSES = st.sampled_from(
    [
        "any",
        "",
        "ANY",
        " 10.0.0.1",
        "10.0.0.1 ",
        "010.0.0.1",
        "10.0.0.0/",
        "10.0.0.0/8/9",
        "10.0.0.0/0008",
        "fe80::1%eth0",
        "::ffff:10.0.0.1",
        "1.2.3",
        "10.0.0.1\x00",
        "sip_tag",
        "\uff110.0.0.1",
        "::/0",
        "0.0.0.0/0",
        b"10.0.0.1",
        167772161,
    ]
)


@st.composite
def rows_of(draw, columns):
    """A row whose values are each plain, then up to two columns given an odd value."""
    values = {
        "id": draw(st.integers(1, 2**40) | st.sampled_from([ID_MAX - 1, ID_MAX])),
        "proto": draw(st.sampled_from(["any", "tcp", "tls", "ws"])),
        "remote_addr": draw(PLAIN_ADDRESSES),
        "local_addr": draw(PLAIN_ADDRESSES),
        "remote_port": draw(PORTS),
        "local_port": draw(PORTS),
        "priority": draw(
            st.one_of(
                st.integers(-5, 5),
                st.none(),
                st.integers(PRIORITY_MIN, PRIORITY_MAX),
                st.sampled_from([PRIORITY_MIN, PRIORITY_MAX]),
            )
        ),
        "attrs": None,
    }
    odd = {
        "id": st.sampled_from([0, -1, None, "12", 1.0, True, ID_MAX + 1, 2**64, 2**70]),
        "proto": st.sampled_from(["TCP", " tcp", "udp", "nope", None, 5, b"tcp"]),
        "remote_addr": ODD_ADDRESSES,
        "local_addr": ODD_ADDRESSES,
        "remote_port": ODD_PORTS,
        "local_port": ODD_PORTS,
        "priority": st.sampled_from([PRIORITY_MAX + 1, PRIORITY_MIN - 1, 2**50, 2**70, "3", 1.5, True]),
        "attrs": st.sampled_from(
            [
                "",
                "max_msg_chunks=4",
                "nope=1",
                "tos=184;nodelay=1;linger=0",
                "syncnt=0",
                "syncnt",
                "nodelay=2",
                "tos=256",
                "mark=-1",
                "sndbuf=x",
                "rcvbuf=65536;tcp_user_timeout=2147483648",
            ]
        ),
    }
    for name in columns:
        if name not in values:
            values[name] = draw(st.none() | st.integers(0, RANGED.get(name, PROFILE_INT_MAX)))
            odd[name] = ODD_INTS
    for name in draw(st.lists(st.sampled_from(columns), max_size=2)):
        values[name] = draw(odd[name])
    return tuple(values[name] for name in columns)


COLUMN_ORDERS = [SCHEMA_VERSIONS[2], SCHEMA_VERSIONS[1], tuple(reversed(SCHEMA_VERSIONS[2]))]
DEFAULTS = [None, Profile(connect_timeout=7, keepalive=False, no_new_conn=True, attrs={"max_msg_chunks": 3})]


@pytest.mark.parametrize("columns", COLUMN_ORDERS, ids=["v2", "v1", "reversed"])
@pytest.mark.parametrize("defaults", DEFAULTS, ids=["spec-defaults", "own-defaults"])
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_reader_equals_from_row(columns, defaults, data):
    values = data.draw(rows_of(columns))
    compiled = rows.RowReader(columns, defaults=defaults)
    pure = PureReader(columns, defaults=defaults)
    first = outcome(pure, values)  # from_row first: it registers accepted protocol spellings
    event("shortcut" if compiled._plain(values) is not None else "from_row")
    assert outcome(compiled, values) == first


@pytest.mark.parametrize("columns", COLUMN_ORDERS, ids=["v2", "v1", "reversed"])
def test_typical_rows_take_the_shortcut(columns):
    """The equality above would hold trivially if nothing took the shortcut."""
    reader = rows.RowReader(columns)
    # The shortcut knows a protocol spelling once from_row has accepted it.
    PureReader(columns)(tuple({"id": 1, "proto": "tls"}.get(c) for c in columns))
    plain = {
        "id": 5,
        "proto": "tls",
        "remote_addr": "2001:db8::/32",
        "remote_port": 5061,
        "local_addr": "2001:db8::1",
        "priority": -2,
        "keepidle": 30,
        "no_new_conn": 1,
    }
    values = tuple(plain.get(c) for c in columns)
    rule = reader._plain(values)
    assert rule is not None
    assert outcome(reader, values) == outcome(PureReader(columns), values)
    assert rule.profile.no_new_conn is True and rule.profile.keepidle == 30
    assert rule.remote_prefix == (6, 0x20010DB8 << 96, 32) and rule.local_prefix[2] == 128
    for column, value in [("remote_addr", "10.0.0.1/8"), ("proto", " tls"), ("keepidle", -1), ("attrs", "")]:
        if column in columns:
            assert reader._plain(tuple(value if c == column else v for c, v in zip(columns, values))) is None


@pytest.mark.parametrize("columns", COLUMN_ORDERS[:2], ids=["v2", "v1"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_batch_equals_pure_batch(columns, data):
    """read_batch: the same rules, the same rejections (repeated ids included), the same warnings."""
    batch = data.draw(st.lists(rows_of(columns), max_size=12))
    if batch and data.draw(st.booleans()):
        batch.append(data.draw(st.sampled_from(batch)))  # a repeated id, most of the time
    not_null = [c for c in columns if c not in NULLABLE_COLUMNS]
    results = []
    for reader in (PureReader(columns, not_null=not_null), rows.RowReader(columns, not_null=not_null)):
        rules, rejected, warnings, seen = [], [], [], set()
        reader.read_batch(batch, rules, rejected, warnings, seen)
        results.append(
            (
                [attributes(rule) for rule in rules],
                [(str(e), e.rule_id, e.column, e.value) for e in rejected],
                [(str(w), w.rule_id, w.column) for w in warnings],
                seen,
            )
        )
    assert results[1] == results[0]
