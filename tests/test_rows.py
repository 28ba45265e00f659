"""The compiled row reader against its pure twin (``Rule.from_row``), on generated rows.

The compiled reader writes rows that need no judgement straight into a
matcher's records as C records and hands every other row to ``Rule.from_row``;
here both readers get the same rows, plain ones and ones a value away from
plain, and the rule the records give back must be the one ``from_row`` makes
(every attribute, the profile by ``==`` and by value, the socket tag) with the
same warnings, or the row must be refused with the same error, one row at a
time and through ``read_batch`` (repeated ids, NULLs in NOT NULL columns).
"""

import ipaddress

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from row_outcomes import READER_TWINS, PureReader, PureRecords, batch_outcome, held

from tcpmgm.matching import records
from tcpmgm.model.errors import RuleError, RuleWarning
from tcpmgm.model.limits import ID_MAX, PRIORITY_MAX, PRIORITY_MIN, PROFILE_INT_MAX
from tcpmgm.model.profile import Profile
from tcpmgm.model.rule import Rule
from tcpmgm.sql import rows
from tcpmgm.sql.schema import NULLABLE_COLUMNS, SCHEMA_VERSIONS

compiled_only = pytest.mark.skipif(not rows.COMPILED, reason="compiled modules disabled by TCPMGM_NO_EXTENSIONS")

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


@compiled_only
@pytest.mark.parametrize("columns", COLUMN_ORDERS, ids=["v2", "v1", "reversed"])
@pytest.mark.parametrize("defaults", DEFAULTS, ids=["spec-defaults", "own-defaults"])
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_records_give_back_the_rule_from_row_makes(columns, defaults, data):
    """3,000 generated rows: the C path's records against from_row's rule."""
    values = data.draw(rows_of(columns))
    compiled = rows.RowReader(columns, defaults=defaults)
    # from_row first: it registers accepted protocol spellings.
    expected = batch_outcome(PureReader(columns, defaults=defaults), PureRecords(), values)
    event("C path" if compiled._plain(values) else "from_row")
    assert batch_outcome(compiled, records.RuleRecords(), values) == expected


@pytest.mark.parametrize("twin", READER_TWINS)
def test_a_reader_called_with_a_row_is_from_row(twin):
    reader_cls, _ = twin
    columns = SCHEMA_VERSIONS[2]
    row = {"id": 3, "proto": "tcp", "remote_addr": "10.0.0.1/8", "keepidle": 9}
    rule = reader_cls(columns)(tuple(row.get(c) for c in columns))
    assert held(rule) == held(Rule.from_row(row))
    assert [str(w) for w in rule.warnings] == [
        "rule 3: column 'remote_addr', value '10.0.0.1/8': host bits set under the prefix; stored as 10.0.0.0/8"
    ]


def test_the_pure_records_keep_the_rules_as_given():
    rules = [Rule.from_row({"id": n, "proto": "tcp", "remote_addr": "10.0.0.1/8"}) for n in (2, 1, 2)]
    kept = PureRecords()
    for rule in rules:
        kept.append(rule)
    assert list(kept.rules()) == rules and all(a is b for a, b in zip(kept.rules(), rules))
    assert len(kept) == 3 and 1 in kept and 2 in kept and 3 not in kept
    assert "1" not in kept and 1.0 not in kept and True not in kept
    with pytest.raises(TypeError, match=r"rules must be tcpmgm\.Rule objects, got dict"):
        kept.append({"id": 4})


@compiled_only
@pytest.mark.parametrize("columns", COLUMN_ORDERS, ids=["v2", "v1", "reversed"])
def test_typical_rows_take_the_c_path(columns):
    """The equality above would hold trivially if nothing took the C path."""
    reader = rows.RowReader(columns)
    # The C path knows a protocol spelling once from_row has accepted it.
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
    assert reader._plain(values)
    made = records.RuleRecords()
    reader.read_batch([values], made, [], [])
    (rule,) = made.rules()
    assert held(rule) == held(Rule.from_row(plain))
    assert rule.profile.no_new_conn is True and rule.profile.keepidle == 30
    assert rule.remote_prefix == (6, 0x20010DB8 << 96, 32) and rule.local_prefix[2] == 128
    for column, value in [("remote_addr", "10.0.0.1/8"), ("proto", " tls"), ("keepidle", -1), ("attrs", "")]:
        if column in columns:
            assert not reader._plain(tuple(value if c == column else v for c, v in zip(columns, values)))
    not_null = [c for c in columns if c not in NULLABLE_COLUMNS]
    assert not rows.RowReader(columns, not_null=not_null)._plain(values), "NULL in a NOT NULL column: a warning"


@compiled_only
def test_a_mapped_prefix_is_kept_as_ipv4_by_the_c_path():
    columns = SCHEMA_VERSIONS[2]
    reader = rows.RowReader(columns)
    PureReader(columns)(tuple({"id": 1, "proto": "tcp"}.get(c) for c in columns))
    row = {"id": 7, "proto": "tcp", "remote_addr": "::ffff:10.1.0.0/112", "local_addr": "::ffff:10.0.0.1"}
    values = tuple(row.get(c) for c in columns)
    assert reader._plain(values)
    made = records.RuleRecords()
    reader.read_batch([values], made, [], [])
    (rule,) = made.rules()
    assert rule.remote_prefix == (4, 0x0A010000, 16) and rule.local_prefix == (4, 0x0A000001, 32)
    assert held(rule) == held(Rule.from_row(row))


@compiled_only
def test_every_protocol_spelling_is_read_however_many_there_are():
    """More accepted spellings than the C path's table holds: the others are still read as
    from_row reads them."""
    columns = SCHEMA_VERSIONS[2]
    spellings = [name[: k + 1].upper() + name[k + 1 :] for name in ("tcp", "tls", "hep_tcp", "msrps") for k in range(3)]
    spellings += [f"{' ' * k}ws" for k in range(40)]
    batch = [tuple({"id": n, "proto": proto}.get(c) for c in columns) for n, proto in enumerate(spellings * 2, 1)]
    outcomes = []
    for reader_cls, records_cls in ((PureReader, PureRecords), (rows.RowReader, records.RuleRecords)):
        made = records_cls()
        reader_cls(columns).read_batch(batch, made, [], [])
        outcomes.append([held(rule) for rule in made.rules()])
    assert outcomes[1] == outcomes[0]
    assert [rule["proto"] for rule in outcomes[1][:3]] == ["tcp", "tcp", "tcp"]


@pytest.mark.parametrize("columns", COLUMN_ORDERS[:2], ids=["v2", "v1"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@compiled_only
def test_compiled_batch_equals_pure_batch(columns, data):
    """read_batch: the same rules, the same rejections (repeated ids included), the same warnings."""
    batch = data.draw(st.lists(rows_of(columns), max_size=12))
    if batch and data.draw(st.booleans()):
        batch.append(data.draw(st.sampled_from(batch)))  # a repeated id, most of the time
    not_null = [c for c in columns if c not in NULLABLE_COLUMNS]
    results = []
    for reader_cls, records_cls in ((PureReader, PureRecords), (rows.RowReader, records.RuleRecords)):
        made, rejected, warnings = records_cls(), [], []
        reader_cls(columns, not_null=not_null).read_batch(batch, made, rejected, warnings)
        ids = {rule.id for rule in made.rules()}
        assert all(rule_id in made for rule_id in ids) and len(made) == len(ids)
        results.append(
            (
                [held(rule) for rule in made.rules()],
                [(str(e), e.rule_id, e.column, e.value) for e in rejected],
                [(str(w), w.rule_id, w.column) for w in warnings],
            )
        )
    assert results[1] == results[0]


def _row(columns, base=None, **values):
    return tuple(((base or {}) | values).get(c) for c in columns)


@pytest.mark.parametrize("twin", READER_TWINS)
def test_read_batch_refuses_repeated_ids_and_keeps_the_row_order(twin):
    reader_cls, records_cls = twin
    columns = SCHEMA_VERSIONS[2]
    not_null = [c for c in columns if c not in NULLABLE_COLUMNS]
    full = {c: 0 for c in not_null} | {"proto": "tcp", "keepalive": 1, "keepcount": 9}
    batch = [
        _row(columns, full, id=1, remote_addr="10.0.0.0/8"),  # plain
        _row(columns, full, id=2, remote_addr="10.1.2.3/16"),  # host bits: a warning
        _row(columns, full, id=1, remote_addr="10.9.0.0/16"),  # repeats a plain row's id
        _row(columns, full, keepidle=None, id=3),  # NULL in a NOT NULL column: a warning
        _row(columns, full, id=4, proto="udp"),  # refused
        _row(columns, full, id=2),  # repeats a from_row row's id
        _row(columns, full, id=5, attrs="tos=184"),
        _row(columns, full, keepcount=-1, id=6),  # refused
        _row(columns, full, id=7, remote_addr="2001:db8::/32"),
    ]
    made, rejected, warnings = records_cls(), [], []
    reader = reader_cls(columns, not_null=not_null)
    reader.read_batch(batch[:4], made, rejected, warnings)
    reader.read_batch(batch[4:], made, rejected, warnings)  # the records carry the ids across batches
    assert [rule.id for rule in made.rules()] == [1, 2, 3, 5, 7] and len(made) == 5
    assert [rule_id in made for rule_id in (1, 2, 3, 4, 5, 6, 7, 8)] == [True] * 3 + [False, True, False, True, False]
    assert [(type(e), e.rule_id, e.column, e.value, e.reason) for e in rejected] == [
        (RuleError, 1, "id", 1, "duplicate id"),
        (RuleError, 4, "proto", "udp", "'udp' is not a TCP-based protocol"),
        (RuleError, 2, "id", 2, "duplicate id"),
        (RuleError, 6, "keepcount", -1, "must not be negative"),
    ]
    assert [(type(w), w.rule_id, w.column, str(w)) for w in warnings] == [
        (
            RuleWarning,
            2,
            "remote_addr",
            "rule 2: column 'remote_addr', value '10.1.2.3/16': host bits set under the prefix; stored as 10.1.0.0/16",
        ),
        (
            RuleWarning,
            3,
            "keepidle",
            "rule 3: column 'keepidle', value None: NULL in a NOT NULL column, read as the default 7200",
        ),
    ]
    by_id = {rule.id: rule for rule in made.rules()}
    assert by_id[1].remote_prefix == (4, 0x0A000000, 8) and by_id[2].remote_prefix == (4, 0x0A010000, 16)
    assert by_id[3].profile.keepidle == 7200 and by_id[5].profile.attrs == {"tos": 184}
    assert by_id[1].profile.keepalive is True and by_id[1].profile.keepidle == 0


@compiled_only
def test_a_default_beyond_what_a_record_holds_leaves_the_null_to_from_row():
    """A default profile made around the ranges (keepidle 2**40): the C path cannot store it, so
    a NULL there is not plain; the records then judge from_row's rule as any appended one."""
    columns = SCHEMA_VERSIONS[2]
    PureReader(columns)(_row(columns, id=1, proto="tcp"))
    reader = rows.RowReader(columns, defaults=Profile(keepidle=2**40))
    assert not reader._plain(_row(columns, id=1, proto="tcp"))
    assert reader._plain(_row(columns, id=1, proto="tcp", keepidle=5))


@pytest.mark.parametrize("twin", READER_TWINS)
def test_read_batch_gives_the_defaults_attrs_to_a_row_without_attrs(twin):
    reader_cls, records_cls = twin
    columns = SCHEMA_VERSIONS[2]
    defaults = DEFAULTS[1]
    made = records_cls()
    reader_cls(columns, defaults=defaults).read_batch(
        [_row(columns, id=n, proto="tcp", remote_port=n) for n in (1, 2)], made, [], []
    )
    assert [(rule.profile, rule.profile.values()) for rule in made.rules()] == [
        (defaults.replace(id=n), defaults.replace(id=n).values()) for n in (1, 2)
    ]
