"""docs/behaviour.md#a-rule: every row validation, by hand, through ``Rule.from_row``.

Each refusal asserts the four things an operator reads in the message: the
rule id, the column, the offending value (as the row held it) and the reason.
"""

import ipaddress
import sqlite3
from decimal import Decimal

import pytest
from row_outcomes import HugeRepr, RaisingRepr
from tables import create_plain_table, insert

import tcpmgm
from tcpmgm import Profile, Rule, RuleError, RuleWarning
from tcpmgm.model.errors import SHOWN_CHARS, shown
from tcpmgm.model.profile import default_profile, known_attrs, register_attr, set_default_profile
from tcpmgm.model.protocols import BUILTIN_PROTOCOLS, NOT_TCP_PROTOCOLS, protocol_code, register_protocol
from tcpmgm.sql.loader import load_rules
from tcpmgm.sql.schema import DIALECTS, TableNames

INTEGER_COLUMNS = (
    "remote_port",
    "local_port",
    "priority",
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
)
PROFILE_INTEGER_COLUMNS = tuple(c for c in INTEGER_COLUMNS if c not in ("remote_port", "local_port", "priority"))


def row(**columns):
    return {"id": 7, "proto": "tcp", **columns}


def refused(values, **kwargs) -> RuleError:
    with pytest.raises(RuleError) as info:
        Rule.from_row(values, **kwargs)
    return info.value


def assert_refused(values, rule_id, column, value, reason, **kwargs):
    err = refused(values, **kwargs)
    # Tuple equality checks identity first, so a NaN value compares equal to itself here.
    assert (err.rule_id, err.column, err.value, err.reason) == (rule_id, column, value, reason)
    assert isinstance(err, ValueError) and isinstance(err, tcpmgm.TcpMgmError)
    message = str(err)
    assert f"rule {rule_id if rule_id is not None else '?'}:" in message
    assert repr(column) in message and repr(value) in message and reason in message
    return err


# -- proto -------------------------------------------------------------------


def test_proto_null_is_refused():
    assert_refused(row(proto=None), 7, "proto", None, "proto is NULL (use 'any')")


@pytest.mark.parametrize("value", ["sip", "http", "", "tcp6"])
def test_unknown_proto_is_refused(value):
    assert_refused(row(proto=value), 7, "proto", value, "unknown protocol")


@pytest.mark.parametrize("name", sorted(NOT_TCP_PROTOCOLS))
def test_not_tcp_protocols_are_refused(name):
    assert set(NOT_TCP_PROTOCOLS) == {"udp", "sctp", "hep_udp", "ipsec", "bond"}
    assert_refused(row(proto=name), 7, "proto", name, f"{name!r} is not a TCP-based protocol")
    assert_refused(row(proto=name.upper()), 7, "proto", name.upper(), f"{name!r} is not a TCP-based protocol")


@pytest.mark.parametrize("name", BUILTIN_PROTOCOLS)
def test_protos_are_case_insensitive(name):
    for written in (name, name.upper(), name.capitalize(), f"{name.upper()}   "):
        assert Rule.from_row(row(proto=written)).proto == name


@pytest.mark.parametrize("written", ["any", "ANY", "Any", "any     ", b"any"])
def test_proto_any_is_the_wildcard(written):
    assert Rule.from_row(row(proto=written)).proto is None


# -- addresses ---------------------------------------------------------------


@pytest.mark.parametrize("column", ["remote_addr", "local_addr"])
@pytest.mark.parametrize("value", ["10.0.0.256", "1.2.3", "::g", "1:2:3:4:5:6:7:8:9", "/8"])
def test_unparsable_address_is_refused(column, value):
    assert_refused(row(**{column: value}), 7, column, value, "not an IPv4 or IPv6 address")


def test_unparsable_remote_name_is_refused():
    assert_refused(
        row(remote_addr="sip.example.net"), 7, "remote_addr", "sip.example.net", "not an IPv4 or IPv6 address"
    )


@pytest.mark.parametrize("column", ["remote_addr", "local_addr"])
@pytest.mark.parametrize(
    "value", ["10.0.0.0/x", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8/9", "10.0.0.0/\u00b2", "10.0.0.0/\u0663"]
)
def test_prefix_length_that_is_not_a_number_is_refused(column, value):
    assert_refused(row(**{column: value}), 7, column, value, "prefix length is not a number")


@pytest.mark.parametrize("column", ["remote_addr", "local_addr"])
@pytest.mark.parametrize(
    "value, family, maximum, length",
    [
        ("10.0.0.0/33", 4, 32, 33),
        ("0.0.0.0/128", 4, 32, 128),
        ("2001:db8::/129", 6, 128, 129),
        ("::/1000", 6, 128, 1000),
    ],
)
def test_prefix_length_out_of_range_for_its_family_is_refused(column, value, family, maximum, length):
    assert_refused(
        row(**{column: value}),
        7,
        column,
        value,
        f"prefix length /{length} is out of range for IPv{family} (0..{maximum})",
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        ("10.0.0.0/0", "0.0.0.0/0"),
        ("10.1.2.3/32", "10.1.2.3/32"),
        ("10.1.2.3", "10.1.2.3/32"),
        ("2001:db8::1/128", "2001:db8::1/128"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("::/0", "::/0"),
    ],
)
def test_prefix_length_bounds_are_accepted(value, expected):
    rule = Rule.from_row(row(remote_addr=value, local_addr=value))
    assert rule.remote == rule.local == ipaddress.ip_network(expected)


def test_zone_in_a_rule_address_is_refused():
    assert_refused(
        row(remote_addr="fe80::1%eth0"), 7, "remote_addr", "fe80::1%eth0", "an IPv6 zone has no meaning in a rule"
    )


@pytest.mark.parametrize("written", [None, "any", "ANY", "", "   "])
def test_address_any_values(written):
    rule = Rule.from_row(row(remote_addr=written, local_addr=written))
    assert rule.remote is None and rule.local is None


def test_remote_and_local_of_different_families_are_refused():
    assert_refused(
        row(remote_addr="10.0.0.0/8", local_addr="2001:db8::1"),
        7,
        "local_addr",
        "2001:db8::1",
        "IPv6 local address with an IPv4 remote address",
    )
    assert_refused(
        row(remote_addr="2001:db8::/32", local_addr="192.0.2.1"),
        7,
        "local_addr",
        "192.0.2.1",
        "IPv4 local address with an IPv6 remote address",
    )


def test_different_families_through_a_socket_tag_are_refused():
    assert_refused(
        row(remote_addr="10.0.0.0/8", local_addr="v6"),
        7,
        "local_addr",
        "v6",
        "IPv6 local address with an IPv4 remote address",
        listeners={"v6": "2001:db8::10"},
    )


def test_mapped_remote_with_ipv4_local_is_one_family():
    rule = Rule.from_row(row(remote_addr="::ffff:192.0.2.0/120", local_addr="10.0.0.1"))
    assert rule.remote == ipaddress.ip_network("192.0.2.0/24")
    assert rule.local == ipaddress.ip_network("10.0.0.1/32")


def test_ipv4_mapped_rule_prefixes_become_ipv4():
    assert Rule.from_row(row(remote_addr="::ffff:10.0.0.0/104")).remote == ipaddress.ip_network("10.0.0.0/8")
    assert Rule.from_row(row(remote_addr="::ffff:0:0/96")).remote == ipaddress.ip_network("0.0.0.0/0")
    # Shorter than /96 it also covers non-mapped addresses: it stays IPv6.
    assert Rule.from_row(row(remote_addr="::ffff:0:0/95")).remote == ipaddress.ip_network("::fffe:0:0/95")


# -- ports and numbers ---------------------------------------------------------


@pytest.mark.parametrize("column", ["remote_port", "local_port"])
@pytest.mark.parametrize("value", [-1, 65536, 1 << 40, "70000", Decimal(-5)])
def test_port_outside_0_to_65535_is_refused(column, value):
    assert_refused(row(**{column: value}), 7, column, value, "port must be between 0 (any) and 65535")


@pytest.mark.parametrize("column", ["remote_port", "local_port"])
def test_port_bounds_are_accepted(column):
    assert getattr(Rule.from_row(row(**{column: 0})), column) == 0
    assert getattr(Rule.from_row(row(**{column: 65535})), column) == 65535
    assert getattr(Rule.from_row(row(**{column: None})), column) == 0


@pytest.mark.parametrize("column", PROFILE_INTEGER_COLUMNS)
@pytest.mark.parametrize("value", [-1, "-3", Decimal("-7"), -1.0])
def test_negative_profile_numbers_are_refused(column, value):
    assert_refused(row(**{column: value}), 7, column, value, "must not be negative")


def test_negative_priority_is_allowed():
    assert Rule.from_row(row(priority=-5)).priority == -5
    assert Rule.from_row(row(priority="-5")).priority == -5


NOT_INTEGERS = [
    "abc",
    "1.5",
    "1e3",
    "1_000",
    "\u0663",
    "",
    "0x10",
    1.5,
    float("nan"),
    float("inf"),
    Decimal("1.5"),
    Decimal("NaN"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
]


@pytest.mark.parametrize("column", INTEGER_COLUMNS)
@pytest.mark.parametrize("value", NOT_INTEGERS, ids=repr)
def test_non_integer_numbers_are_refused_in_every_integer_column(column, value):
    assert_refused(row(**{column: value}), 7, column, value, "not an integer")


@pytest.mark.parametrize("column", INTEGER_COLUMNS)
def test_non_integer_bytes_are_refused_and_shown_decoded(column):
    assert_refused(row(**{column: b"12x"}), 7, column, "12x", "not an integer")


@pytest.mark.parametrize("column", INTEGER_COLUMNS)
def test_wrong_type_in_integer_column_is_refused(column):
    assert_refused(row(**{column: [1]}), 7, column, [1], "expected an integer, got list")


@pytest.mark.parametrize("column", ["proto", "remote_addr", "local_addr", "attrs"])
def test_wrong_type_in_text_column_is_refused(column):
    assert_refused(row(**{column: 42}), 7, column, 42, "expected text, got int")


def test_invalid_utf8_text_is_refused():
    assert_refused(row(remote_addr=b"10.0.0.\xff"), 7, "remote_addr", "10.0.0.\ufffd", "not valid UTF-8 text")


@pytest.mark.parametrize(
    "value, reason",
    [
        (None, "id is NULL"),
        (0, "id must be a positive integer (0 is the default profile)"),
        (-3, "id must be a positive integer (0 is the default profile)"),
        ("abc", "not an integer"),
        (Decimal("2.5"), "not an integer"),
        (Decimal("Infinity"), "not an integer"),
    ],
)
def test_unusable_id_is_refused_without_an_id(value, reason):
    assert_refused({"id": value, "proto": "tcp"}, None, "id", value, reason)


def test_missing_id_is_refused():
    assert_refused({"proto": "tcp"}, None, "id", None, "id is NULL")


# -- alias_mode, parallel_read ------------------------------------------------


@pytest.mark.parametrize("column", ["alias_mode", "parallel_read"])
def test_alias_mode_and_parallel_read_out_of_range_are_refused(column):
    assert_refused(row(**{column: 3}), 7, column, 3, "must be between 0 and 2")
    assert_refused(row(**{column: "9"}), 7, column, "9", "must be between 0 and 2")
    assert_refused(row(**{column: -1}), 7, column, -1, "must not be negative")
    assert [getattr(Rule.from_row(row(**{column: v})).profile, column) for v in (0, 1, 2)] == [0, 1, 2]


@pytest.mark.parametrize("column", ["no_new_conn", "keepalive"])
def test_flags_take_any_non_zero_as_one(column):
    assert getattr(Rule.from_row(row(**{column: 0})).profile, column) is False
    for value in (1, 2, 99, "7", True):
        assert getattr(Rule.from_row(row(**{column: value})).profile, column) is True


# -- attrs -----------------------------------------------------------------------


def test_unknown_attrs_name_is_refused():
    known = ", ".join(sorted(known_attrs()))
    assert_refused(
        row(attrs="max_msg_chunks=4;nosuch=1"),
        7,
        "attrs",
        "max_msg_chunks=4;nosuch=1",
        f"unknown attribute 'nosuch' (known: {known})",
    )
    assert_refused(row(attrs="=5"), 7, "attrs", "=5", f"unknown attribute '' (known: {known})")


@pytest.mark.parametrize(
    "item, shown",
    [
        ("max_msg_chunks=ten", "ten"),
        ("max_msg_chunks=1.5", "1.5"),
        ("max_msg_chunks=", ""),
        ("max_msg_chunks=1_0", "1_0"),
        ("max_msg_chunks=\u00b2", "\u00b2"),
    ],
)
def test_non_integer_attrs_value_is_refused(item, shown):
    assert_refused(row(attrs=item), 7, "attrs", item, f"attribute 'max_msg_chunks' has non-integer value {shown!r}")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("max_msg_chunks=10", {"max_msg_chunks": 10}),
        ("max_msg_chunks", {"max_msg_chunks": 0}),
        (" max_msg_chunks = -2 ;", {"max_msg_chunks": -2}),
        ("", {}),
        (";;", {}),
    ],
)
def test_valid_attrs(text, expected):
    assert dict(Rule.from_row(row(attrs=text)).profile.attrs) == expected


# -- socket tags -------------------------------------------------------------------


def test_unknown_socket_tag_is_refused():
    assert_refused(
        row(local_addr="internal"),
        7,
        "local_addr",
        "internal",
        "neither an address nor a known socket tag (listeners: public)",
        listeners={"public": "192.0.2.10"},
    )
    assert_refused(
        row(local_addr="internal"),
        7,
        "local_addr",
        "internal",
        "neither an address nor a known socket tag (listeners: none configured)",
    )


def test_socket_tag_naming_no_address_is_refused():
    assert_refused(
        row(local_addr="odd"),
        7,
        "local_addr",
        "odd",
        "socket tag 'odd' maps to 'somewhere', which is not an address",
        listeners={"odd": "somewhere"},
    )


@pytest.mark.parametrize(
    "listener, expected",
    [
        ("10.0.0.1", "10.0.0.1/32"),
        (ipaddress.ip_address("2001:db8::10"), "2001:db8::10/128"),
        ("fe80::1%eth0", "fe80::1/128"),
    ],
)
def test_known_socket_tag_becomes_the_listener_address(listener, expected):
    rule = Rule.from_row(row(local_addr="internal"), listeners={"internal": listener})
    assert rule.local == ipaddress.ip_network(expected)
    assert rule.local_tag == "internal"
    assert rule.to_row()["local_addr"] == "internal"


# -- duplicate ids ---------------------------------------------------------------


def test_duplicate_id_is_refused_by_the_loader_and_the_other_rows_load():
    conn = sqlite3.connect(":memory:")
    create_plain_table(conn)
    insert(conn, {"id": 5, "proto": "tcp", "remote_addr": "10.0.0.0/8"})
    insert(conn, {"id": 6, "proto": "tls"})
    insert(conn, {"id": 5, "proto": "tcp", "remote_addr": "192.0.2.0/24"})
    result = load_rules(conn, DIALECTS["sqlite"], TableNames())
    assert [r.id for r in result.rules] == [5, 6]
    assert result.rules[0].remote == ipaddress.ip_network("10.0.0.0/8")  # the first one stays
    [err] = result.rejected
    assert (err.rule_id, err.column, err.value, err.reason) == (5, "id", 5, "duplicate id")


def test_duplicate_id_is_refused_by_the_matcher(matcher_cls):
    first = Rule.from_row(row(id=5))
    second = Rule.from_row(row(id=5, proto="tls"))
    with pytest.raises(RuleError) as info:
        matcher_cls([first, Rule.from_row(row(id=6)), second])
    err = info.value
    assert (err.rule_id, err.column, err.value, err.reason) == (5, "id", 5, "duplicate id")


def test_loader_rejects_bad_rows_and_keeps_good_ones():
    conn = sqlite3.connect(":memory:")
    create_plain_table(conn)
    insert(conn, {"id": 1, "proto": "udp"})
    insert(conn, {"id": 2, "proto": "tcp", "remote_port": 70000})
    insert(conn, {"id": 3, "proto": "tcp", "remote_addr": "10.0.0.0/\u00b2"})
    insert(conn, {"id": 4, "proto": "tcp"})
    result = load_rules(conn, DIALECTS["sqlite"], TableNames())
    assert [r.id for r in result.rules] == [4]
    assert [(e.rule_id, e.column) for e in result.rejected] == [(1, "proto"), (2, "remote_port"), (3, "remote_addr")]


# -- host bits: accepted with a warning ---------------------------------------------


@pytest.mark.parametrize("column", ["remote_addr", "local_addr"])
@pytest.mark.parametrize(
    "value, stored",
    [
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("2001:db8::1/32", "2001:db8::/32"),
        ("::ffff:10.1.2.3/104", "10.0.0.0/8"),
    ],
)
def test_host_bits_are_masked_with_a_warning(column, value, stored):
    rule = Rule.from_row(row(**{column: value}))
    assert getattr(rule, "remote" if column == "remote_addr" else "local") == ipaddress.ip_network(stored)
    [warning] = rule.warnings
    assert isinstance(warning, RuleWarning)
    assert (warning.rule_id, warning.column, warning.value, warning.reason) == (
        7,
        column,
        value,
        f"host bits set under the prefix; stored as {stored}",
    )
    assert (
        str(warning)
        == f"rule 7: column {column!r}, value {value!r}: host bits set under the prefix; stored as {stored}"
    )


def test_no_warning_without_host_bits():
    assert Rule.from_row(row(remote_addr="10.0.0.0/8", local_addr="10.0.0.1")).warnings == ()


def test_host_bits_rule_loads_matches_the_masked_network_and_reports_the_warning(matcher_cls):
    conn = sqlite3.connect(":memory:")
    create_plain_table(conn)
    insert(conn, {"id": 9, "proto": "tcp", "remote_addr": "10.1.2.3/8"})
    result = load_rules(conn, DIALECTS["sqlite"], TableNames())
    assert [r.id for r in result.rules] == [9] and result.rejected == ()
    assert [str(w) for w in result.warnings] == [
        "rule 9: column 'remote_addr', value '10.1.2.3/8': host bits set under the prefix; stored as 10.0.0.0/8"
    ]
    assert matcher_cls(result.rules).lookup("tcp", "10.200.0.1").id == 9


# -- values as drivers return them ----------------------------------------------------


def test_driver_value_types_are_accepted():
    rule = Rule.from_row(
        {
            "id": Decimal(3),
            "proto": b"TLS     ",  # CHAR(8) padding, bytes
            "remote_addr": bytearray(b"10.0.0.0/8"),
            "remote_port": "5061",
            "local_addr": memoryview(b"192.0.2.10"),
            "local_port": Decimal("5060"),
            "priority": " -2 ",
            "connect_timeout": 1500.0,
            "con_lifetime": b"600",
            "no_new_conn": True,
            "keepalive": False,
            "keepcount": Decimal("3.000"),
            "attrs": b"max_msg_chunks=8",
        }
    )
    assert (rule.id, rule.proto, rule.remote, rule.remote_port, rule.local, rule.local_port, rule.priority) == (
        3,
        "tls",
        ipaddress.ip_network("10.0.0.0/8"),
        5061,
        ipaddress.ip_network("192.0.2.10/32"),
        5060,
        -2,
    )
    p = rule.profile
    assert (p.id, p.connect_timeout, p.con_lifetime, p.no_new_conn, p.keepalive, p.keepcount, dict(p.attrs)) == (
        3,
        1500,
        600,
        True,
        False,
        3,
        {"max_msg_chunks": 8},
    )
    assert all(type(getattr(p, f)) is int for f in ("connect_timeout", "con_lifetime", "keepcount"))


def test_error_value_keeps_char_padding():
    assert_refused(
        row(remote_addr="10.0.0.0/33   "),
        7,
        "remote_addr",
        "10.0.0.0/33   ",
        "prefix length /33 is out of range for IPv4 (0..32)",
    )


def test_null_profile_columns_take_the_given_defaults():
    defaults = Profile(connect_timeout=250, keepidle=30, parallel_read=1, attrs={"max_msg_chunks": 4})
    values = {name: None for name in tcpmgm.model.profile.PROFILE_FIELDS}
    rule = Rule.from_row(row(**values), defaults=defaults)
    assert rule.profile == defaults.replace(id=7)
    partly = Rule.from_row(row(connect_timeout=900, attrs=None), defaults=defaults)
    assert (partly.profile.connect_timeout, partly.profile.keepidle, dict(partly.profile.attrs)) == (
        900,
        30,
        {"max_msg_chunks": 4},
    )


@pytest.fixture
def restore_default_profile():
    saved = default_profile()
    yield
    set_default_profile(saved)


def test_null_profile_columns_take_the_process_default(restore_default_profile):
    assert Rule.from_row(row()).profile == Profile(id=7)
    set_default_profile(keepidle=11, no_new_conn=1)
    profile = Rule.from_row(row(keepidle=None)).profile
    assert (profile.keepidle, profile.no_new_conn, profile.connect_timeout) == (11, True, 100)


# -- registries ------------------------------------------------------------------------


def test_protocol_registry_is_extensible(matcher_cls, request):
    # The registry is process-wide and has no "unregister": each run of this
    # test (one per matcher implementation) registers a name of its own.
    name = "xmpp" + request.node.callspec.id
    assert protocol_code(name) is None
    assert_refused(row(proto=name), 7, "proto", name, "unknown protocol")
    code = register_protocol(name.upper())
    assert code == register_protocol(name) == protocol_code(name.title()) and code > len(BUILTIN_PROTOCOLS)
    rule = Rule.from_row(row(proto=name.title()))
    assert rule.proto == name
    matcher = matcher_cls([rule, Rule.from_row(row(id=8, proto="tcp"))])
    assert matcher.lookup(name, "192.0.2.1").id == 7
    assert matcher.lookup("tcp", "192.0.2.1").id == 8


@pytest.mark.parametrize("name", ["udp", "SCTP", "any", "", "  ", None, 5])
def test_protocol_registry_refuses_wildcard_and_non_tcp(name):
    with pytest.raises(ValueError):
        register_protocol(name)


def test_attrs_registry_is_extensible():
    assert_refused(
        row(attrs="tcpmgm_test_window=5"),
        7,
        "attrs",
        "tcpmgm_test_window=5",
        f"unknown attribute 'tcpmgm_test_window' (known: {', '.join(sorted(known_attrs()))})",
    )
    register_attr("tcpmgm_test_window")
    rule = Rule.from_row(row(attrs="tcpmgm_test_window=5;max_msg_chunks"))
    assert dict(rule.profile.attrs) == {"tcpmgm_test_window": 5, "max_msg_chunks": 0}
    assert "tcpmgm_test_window" in known_attrs()


@pytest.mark.parametrize("name", ["with space", "1st", "", "a=b", None])
def test_attrs_registry_refuses_non_identifiers(name):
    with pytest.raises(ValueError):
        register_attr(name)


# -- the model itself -------------------------------------------------------------------


def test_to_row_round_trips():
    original = Rule.from_row(
        row(
            remote_addr="10.1.0.0/16",
            remote_port=5060,
            local_addr="10.0.0.1",
            local_port=5061,
            priority=-1,
            connect_timeout=5,
            attrs="max_msg_chunks=3",
            no_new_conn=1,
        )
    )
    again = Rule.from_row(original.to_row())
    assert again == original and again.profile == original.profile


def test_rule_profile_carries_the_rule_id():
    rule = Rule(id=12, profile=Profile(id=99, keepidle=5))
    assert rule.profile.id == 12 and rule.profile.keepidle == 5


def test_rule_is_immutable():
    rule = Rule.from_row(row())
    with pytest.raises(AttributeError):
        rule.priority = 3


# -- messages show any value, bounded (and parsing never converts a huge value) -------


class _NeverConverted(Decimal):
    """A Decimal that fails the test if parsing makes an int of it."""

    def __int__(self):
        raise AssertionError(f"int() of {str(self)[:20]}")


ODD_VALUES = [
    10**5000,
    -(10**5000),
    2**1024,
    2**1025,
    Decimal("1E+100000"),
    Decimal("-1E+100000"),
    Decimal("1" * 100_000),
    Decimal("NaN"),
    Decimal("sNaN"),
    float("nan"),
    float("inf"),
    "x" * 100_000,
    b"y" * 100_000,
    bytearray(b"z" * 1000),
    RaisingRepr(),
    HugeRepr(),
    [10**5000, RaisingRepr()] * 50,
    {"k": [[[["deep"]]]]},
    (),
    "",
    None,
]


@pytest.mark.parametrize("value", ODD_VALUES, ids=lambda v: type(v).__name__)
def test_messages_show_a_bounded_rendering_of_any_value(value):
    text = shown(value)
    assert len(text) <= SHOWN_CHARS + 1
    try:
        full = repr(value)
    except Exception:
        full = None
    if full is not None and len(full) <= SHOWN_CHARS:
        assert text == full
    else:
        assert text.endswith("\u2026") or text.startswith("<")
    for made in (RuleError(7, "priority", value, "some reason"), RuleWarning(7, "priority", value, "some reason")):
        assert str(made) == f"rule 7: column 'priority', value {text}: some reason"
        assert made.value is value
    assert str(RuleError(None, "id", value, "r")).startswith("rule ?: column 'id', value ")


@pytest.mark.parametrize("column", ["id", "priority", "remote_port", "keepidle"])
@pytest.mark.parametrize("text", ["1E+100000", "-1E+100000", "1E+1000000000"])
def test_huge_decimals_are_refused_without_making_an_int(column, text):
    value = _NeverConverted(text)
    err = refused(row(**{column: value}))
    assert err.column == column and err.value is value
    assert "not an integer" not in err.reason
    assert len(str(err)) < 200


def test_in_range_decimals_still_convert():
    rule = Rule.from_row(row(id=Decimal("12"), priority=Decimal("-3.000"), keepidle=Decimal("3E+1")))
    assert (rule.id, rule.priority, rule.profile.keepidle) == (12, -3, 30)


def test_a_decimal_id_of_100000_digits_is_refused_by_name():
    err = refused({"id": Decimal("1E+100000"), "proto": "udp"})
    assert (err.rule_id, err.column, err.value) == (None, "id", Decimal("1E+100000"))
    assert str(err) == "rule ?: column 'id', value Decimal('1E+100000'): id must be at most 9223372036854775807"


@pytest.mark.parametrize(
    "column, reason",
    [
        ("priority", "must be between -2147483648 and 2147483647"),
        ("remote_port", "port must be between 0 (any) and 65535"),
        ("keepidle", "must be at most 2147483647"),
    ],
)
def test_digit_strings_beyond_every_range_are_out_of_range_not_garbage(column, reason):
    for digits in ("9" * 30, "9" * 5000, "-" + "9" * 100_000):
        err = refused(row(**{column: digits}))
        assert err.reason == (
            reason if not (digits.startswith("-") and column == "keepidle") else "must not be negative"
        )
        assert len(str(err)) < 200


def test_leading_zeros_do_not_count_as_digits():
    assert Rule.from_row(row(priority="0" * 10_000 + "7", remote_addr="10.0.0.0/" + "0" * 5000 + "8")).priority == 7


def test_a_prefix_length_of_thousands_of_digits_is_a_row_error():
    value = "10.0.0.0/" + "9" * 5000
    err = refused(row(remote_addr=value))
    assert err.column == "remote_addr" and err.value == value and "out of range for IPv4" in err.reason
    assert len(str(err)) < 200


@pytest.mark.parametrize(
    "attrs, reason",
    [
        ("max_msg_chunks=" + "9" * 5000, "is outside -2147483648..2147483647"),
        ("max_msg_chunks=2147483648", "is outside -2147483648..2147483647"),
        ("max_msg_chunks=x" + "y" * 5000, "has non-integer value"),
        ("n" * 5000 + "=1", "unknown attribute"),
    ],
)
def test_attrs_errors_are_bounded(attrs, reason):
    err = refused(row(attrs=attrs))
    assert err.column == "attrs" and reason in err.reason
    assert len(str(err)) < 300


def test_attrs_values_at_the_int_bounds_load():
    rule = Rule.from_row(row(attrs="max_msg_chunks=2147483647"))
    assert rule.profile.attrs["max_msg_chunks"] == 2**31 - 1
    assert Rule.from_row(row(attrs="max_msg_chunks=-2147483648")).profile.attrs["max_msg_chunks"] == -(2**31)
