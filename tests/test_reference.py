"""docs/behaviour.md#which-rule-wins by hand: which rule wins, on every matcher (``matcher_cls``)."""

import functools
import ipaddress
import itertools

import pytest

from tcpmgm import Explanation, Profile, Rule
from tcpmgm.model.key import key_difference

CONN = ("tcp", "10.1.2.3", 5060, "10.0.0.1", 5061)


def rule(rule_id, **columns):
    return Rule.from_row({"id": rule_id, "proto": "any", **columns})


# Everything a rule can say about CONN, so that a loser is as specific as
# possible on every level after the one under test.
FULL = dict(proto="tcp", remote_addr="10.1.2.3", remote_port=5060, local_addr="10.0.0.1", local_port=5061)

# (level, loser, winner, why the loser lost).  The winner always has the
# higher id, so the id tie-break can never be what picks it.
LEVELS = [
    ("priority", rule(1, **FULL, priority=1), rule(2, priority=0), "a higher priority value (1 > 0)"),
    ("negative priority", rule(1, **FULL), rule(2, priority=-1), "a higher priority value (0 > -1)"),
    (
        "named proto before any",
        rule(1, **{**FULL, "proto": "any"}),
        rule(2, proto="tcp"),
        "protocol 'any' where the winner names a protocol",
    ),
    (
        "remote network before any",
        rule(1, **{**FULL, "remote_addr": None}),
        rule(2, proto="tcp", remote_addr="0.0.0.0/0"),
        "remote 'any' where the winner names a remote network",
    ),
    (
        "longer remote prefix",
        rule(1, **{**FULL, "remote_addr": "10.0.0.0/8"}),
        rule(2, proto="tcp", remote_addr="10.1.0.0/16"),
        "a shorter remote prefix (/8 < /16)",
    ),
    (
        "remote port before any",
        rule(1, **{**FULL, "remote_addr": "10.1.0.0/16", "remote_port": 0}),
        rule(2, proto="tcp", remote_addr="10.1.0.0/16", remote_port=5060),
        "remote port 'any' where the winner names a port",
    ),
    (
        "local address before any",
        rule(1, **{**FULL, "remote_addr": "10.1.0.0/16", "local_addr": None}),
        rule(2, proto="tcp", remote_addr="10.1.0.0/16", remote_port=5060, local_addr="0.0.0.0/0"),
        "local 'any' where the winner names a local address",
    ),
    (
        "longer local prefix",
        rule(1, **{**FULL, "remote_addr": "10.1.0.0/16", "local_addr": "10.0.0.0/8"}),
        rule(2, proto="tcp", remote_addr="10.1.0.0/16", remote_port=5060, local_addr="10.0.0.0/24"),
        "a shorter local prefix (/8 < /24)",
    ),
    (
        "local port before any",
        rule(1, **{**FULL, "remote_addr": "10.1.0.0/16", "local_addr": "10.0.0.0/24", "local_port": 0}),
        rule(2, proto="tcp", remote_addr="10.1.0.0/16", remote_port=5060, local_addr="10.0.0.0/24", local_port=5061),
        "local port 'any' where the winner names a port",
    ),
    (
        "full tie: lowest id",
        rule(9, **{**FULL, "remote_addr": "10.1.0.0/16"}),
        rule(4, **{**FULL, "remote_addr": "10.1.0.0/16"}),
        "a higher id (full tie) (9 > 4)",
    ),
]


@pytest.mark.parametrize("level, loser, winner, reason", LEVELS, ids=[level[0] for level in LEVELS])
def test_each_level_of_the_key(matcher_cls, level, loser, winner, reason):
    assert winner.key() < loser.key()
    for order in ([loser, winner], [winner, loser]):
        matcher = matcher_cls(order)
        assert matcher.lookup(*CONN).id == winner.id
        assert matcher.lookup(*CONN) == winner.profile
        explanation = matcher.explain(*CONN)
        assert explanation.winner == winner
        assert explanation.matches == ((winner, "winner"), (loser, reason))
    assert key_difference(loser, winner) == reason


def test_longer_ipv6_remote_prefix(matcher_cls):
    short = rule(1, proto="tcp", remote_addr="2001:db8::/32", remote_port=5060)
    long = rule(2, proto="tcp", remote_addr="2001:db8:1::/48")
    assert matcher_cls([short, long]).lookup("tcp", "2001:db8:1::5", 5060).id == 2
    assert matcher_cls([short, long]).lookup("tcp", "2001:db8:2::5", 5060).id == 1


def test_priority_beats_the_longest_prefix(matcher_cls):
    # Nested /9 .. /32 whose priorities favour the shorter prefixes.
    chain = [rule(n, remote_addr=f"10.0.0.0/{8 + n}", priority=n) for n in range(1, 25)]
    matcher = matcher_cls(chain)
    assert matcher.lookup("tcp", "10.0.0.0").id == 1  # inside all 24; the /9 wins
    assert matcher.lookup("tcp", "10.128.0.1").id == 0  # outside the /9
    matcher = matcher_cls([*chain, rule(99, remote_addr="10.0.0.0/8", priority=0)])
    assert matcher.lookup("tcp", "10.0.0.0").id == 99
    assert matcher.lookup("tcp", "10.128.0.1").id == 99


def test_full_ties_go_to_the_lowest_id_whatever_the_input_order(matcher_cls):
    same = dict(proto="tls", remote_addr="192.0.2.0/24")
    rules = [rule(30, **same), rule(10, **same), rule(20, **same)]
    for order in itertools.permutations(rules):
        matcher = matcher_cls(list(order))
        assert matcher.lookup("tls", "192.0.2.7").id == 10
        assert [(r.id, why) for r, why in matcher.explain("tls", "192.0.2.7").matches] == [
            (10, "winner"),
            (20, "a higher id (full tie) (20 > 10)"),
            (30, "a higher id (full tie) (30 > 10)"),
        ]


# -- OpenSIPS's comparator: different named protocols compare "equal" ---------------


def opensips_like_compare(a, b):
    """The flawed comparator docs/behaviour.md#which-rule-wins describes: after priority and "proto is any",
    two rules naming different protocols are declared equal, so the rest of
    the key is never looked at for them."""
    if a.priority != b.priority:
        return -1 if a.priority < b.priority else 1
    if (a.proto is None) != (b.proto is None):
        return 1 if a.proto is None else -1
    if a.proto is not None and a.proto != b.proto:
        return 0
    rest_a, rest_b = a.key()[2:8], b.key()[2:8]
    return (rest_a > rest_b) - (rest_a < rest_b)


def test_different_named_protocols_do_not_break_the_order(matcher_cls):
    wide_tcp = rule(1, proto="tcp", remote_addr="10.0.0.0/8")
    mid_tls = rule(2, proto="tls", remote_addr="10.0.0.0/16")
    narrow_tcp = rule(3, proto="tcp", remote_addr="10.0.0.0/24")
    rules = [wide_tcp, mid_tls, narrow_tcp]

    # The comparator is not transitive: 1 "==" 2 and 2 "==" 3, yet 3 < 1 ...
    assert opensips_like_compare(wide_tcp, mid_tls) == 0
    assert opensips_like_compare(mid_tls, narrow_tcp) == 0
    assert opensips_like_compare(narrow_tcp, wide_tcp) == -1
    # ... so a sort trusting it leaves this input as it is, the /8 before the /24,
    # and a first-match scan over that order answers rule 1 for a tcp peer in 10.0.0.0/24.
    misordered = sorted(rules, key=functools.cmp_to_key(opensips_like_compare))
    assert [r.id for r in misordered] == [1, 2, 3]

    for order in itertools.permutations(rules):
        matcher = matcher_cls(list(order))
        assert matcher.lookup("tcp", "10.0.0.9").id == 3  # docs/behaviour.md#which-rule-wins: the /24 wins
        assert matcher.lookup(None, "10.0.0.9").id == 3  # any protocol: all three match
        assert matcher.lookup("tls", "10.0.0.9").id == 2
        assert matcher.lookup("tcp", "10.0.1.9").id == 1
        assert [r.id for r in matcher] == [3, 2, 1]


# -- addresses as connections present them --------------------------------------------


@pytest.mark.parametrize(
    "remote",
    [
        "::ffff:192.0.2.7",
        "::FFFF:c000:207",
        ipaddress.ip_address("::ffff:192.0.2.7"),
        ipaddress.ip_address("::ffff:192.0.2.7").packed,
        (0xFFFF_C000_0207, 6),
        "::ffff:192.0.2.7%eth0",
    ],
)
def test_ipv4_mapped_lookups_match_ipv4_rules(matcher_cls, remote):
    matcher = matcher_cls(
        [
            rule(1, remote_addr="192.0.2.0/24"),
            rule(2, remote_addr="::/0", priority=-1),  # IPv6: a mapped peer is not inside it
        ]
    )
    assert matcher.lookup("tcp", remote).id == 1


def test_ipv4_mapped_local_address(matcher_cls):
    matcher = matcher_cls([rule(1, local_addr="10.0.0.1"), rule(2, local_addr="::ffff:10.0.0.2")])
    assert matcher.lookup("tcp", "192.0.2.1", 0, "::ffff:10.0.0.1").id == 1
    assert matcher.lookup("tcp", "192.0.2.1", 0, "10.0.0.2").id == 2
    assert matcher.lookup("tcp", "::ffff:192.0.2.1", 0, "::ffff:10.0.0.2").id == 2


def test_rule_written_as_mapped_matches_plain_ipv4_lookups(matcher_cls):
    matcher = matcher_cls([rule(1, remote_addr="::ffff:0:0/96"), rule(2, remote_addr="::/0")])
    assert matcher.lookup("tcp", "198.51.100.1").id == 1
    assert matcher.lookup("tcp", "::ffff:198.51.100.1").id == 1
    assert matcher.lookup("tcp", "2001:db8::1").id == 2


@pytest.mark.parametrize("remote", ["fe80::1%eth0", "fe80::1%25", ipaddress.ip_address("fe80::1%eth0"), "fe80::1"])
def test_zoned_lookups(matcher_cls, remote):
    matcher = matcher_cls([rule(1, remote_addr="fe80::/10", local_addr="fe80::2"), rule(2, remote_addr="fe80::/10")])
    assert matcher.lookup("tcp", remote, 0, "fe80::2%eth1").id == 1
    assert matcher.lookup("tcp", remote, 0, "fe80::3%eth1").id == 2
    assert matcher.lookup("tcp", remote).id == 2


def test_families_never_cross(matcher_cls):
    matcher = matcher_cls([rule(1, remote_addr="0.0.0.0/0"), rule(2, local_addr="::/0")])
    assert matcher.lookup("tcp", "2001:db8::1").id == 0
    assert matcher.lookup("tcp", "192.0.2.1", 0, "10.0.0.1").id == 1
    assert matcher.lookup("tcp", "2001:db8::1", 0, "2001:db8::2").id == 2


def test_unknown_address_only_matches_rules_without_that_filter(matcher_cls):
    matcher = matcher_cls(
        [rule(1, local_addr="10.0.0.1", priority=-1), rule(2, remote_addr="10.0.0.0/8"), rule(3, priority=5)]
    )
    assert matcher.lookup("tcp", "10.1.1.1", 0, None).id == 2
    assert matcher.lookup("tcp", None, 0, "10.0.0.1").id == 1
    assert matcher.lookup("tcp", None, 0, None).id == 3


# -- protocol lookups ----------------------------------------------------------


@pytest.mark.parametrize("proto", [None, "any", "ANY", " any "])
def test_protocol_any_lookup_considers_every_rule(matcher_cls, proto):
    matcher = matcher_cls(
        [
            rule(1, proto="tcp", remote_addr="10.0.0.0/16", priority=1),
            rule(2, proto="tls", remote_addr="10.0.0.0/8"),
            rule(3, proto="any"),
        ]
    )
    assert matcher.lookup(proto, "10.0.0.1").id == 2
    assert matcher.lookup(proto, "192.0.2.1").id == 3
    assert [r.id for r, _ in matcher.explain(proto, "10.0.0.1").matches] == [2, 3, 1]


def test_named_lookup_protocols(matcher_cls):
    matcher = matcher_cls([rule(1, proto="tcp"), rule(2, proto="wss", priority=1)])
    assert matcher.lookup("tcp", "10.0.0.1").id == 1
    assert matcher.lookup("TCP", "10.0.0.1").id == 1
    assert matcher.lookup("wss", "10.0.0.1").id == 2
    assert matcher.lookup("tls", "10.0.0.1").id == 0


@pytest.mark.parametrize("proto, error", [("sip", ValueError), ("udp", ValueError), ("", ValueError), (5, TypeError)])
def test_bad_lookup_protocol_names_the_argument(matcher_cls, proto, error):
    with pytest.raises(error, match=r"^proto: "):
        matcher_cls([rule(1)]).lookup(proto, "10.0.0.1")


# -- ports -------------------------------------------------------------------------


def test_ports_match_exactly_or_any(matcher_cls):
    matcher = matcher_cls([rule(1, remote_port=5061), rule(2, local_port=5060), rule(3, priority=1)])
    assert matcher.lookup("tcp", "10.0.0.1", 5061, "10.0.0.2", 5060).id == 1
    assert matcher.lookup("tcp", "10.0.0.1", 5062, "10.0.0.2", 5060).id == 2
    assert matcher.lookup("tcp", "10.0.0.1", 5062, "10.0.0.2", 5061).id == 3
    assert matcher.lookup("tcp", "10.0.0.1").id == 3  # ports default to 0: only "any" port rules


@pytest.mark.parametrize(
    "argument, value, error",
    [
        ("remote_port", -1, ValueError),
        ("remote_port", 65536, ValueError),
        ("remote_port", "5060", TypeError),
        ("remote_port", True, TypeError),
        ("local_port", 70000, ValueError),
        ("local_port", 1.0, TypeError),
    ],
)
def test_bad_lookup_ports_name_the_argument(matcher_cls, argument, value, error):
    kwargs = {"remote_port": 0, "local_port": 0, argument: value}
    with pytest.raises(error, match=rf"^{argument}: "):
        matcher_cls([rule(1)]).lookup("tcp", "10.0.0.1", local_ip="10.0.0.2", **kwargs)


@pytest.mark.parametrize("argument", ["remote_ip", "local_ip"])
def test_bad_lookup_addresses_name_the_argument(matcher_cls, argument):
    kwargs = {"remote_ip": "10.0.0.1", "local_ip": "10.0.0.2", argument: "10.0.0.300"}
    with pytest.raises(ValueError, match=rf"^{argument}: "):
        matcher_cls([rule(1)]).lookup("tcp", **kwargs)
    kwargs[argument] = 3.5
    with pytest.raises(TypeError, match=rf"^{argument}: "):
        matcher_cls([rule(1)]).explain("tcp", **kwargs)


# -- the default, explain, the container -------------------------------------------


def test_default_profile_when_nothing_matches(matcher_cls):
    default = Profile(keepidle=5)
    matcher = matcher_cls([rule(1, proto="tls")], default=default)
    assert matcher.lookup("tcp", "10.0.0.1") == default
    assert matcher.explain("tcp", "10.0.0.1") == Explanation(None, default, ())
    assert matcher_cls([]).explain(None, None) == Explanation(None, matcher_cls([]).default, ())


def test_explain_lists_every_match_in_key_order_with_reasons(matcher_cls):
    rules = [
        rule(1),
        rule(2, proto="tcp", remote_addr="10.0.0.0/8"),
        rule(3, proto="tcp", remote_addr="10.1.0.0/16", priority=1),
        rule(4, proto="tls"),  # does not match
        rule(5, proto="tcp", remote_addr="10.1.2.0/24", connect_timeout=900),
        rule(6, proto="tcp", remote_addr="10.1.2.0/24", remote_port=5061),  # does not match
    ]
    explanation = matcher_cls(rules).explain("tcp", "10.1.2.3", 5060)
    assert explanation.winner == rules[4]
    assert explanation.profile == rules[4].profile and explanation.profile.connect_timeout == 900
    assert [(r.id, why) for r, why in explanation.matches] == [
        (5, "winner"),
        (2, "a shorter remote prefix (/8 < /24)"),
        (1, "protocol 'any' where the winner names a protocol"),
        (3, "a higher priority value (1 > 0)"),
    ]
    assert explanation.profile == matcher_cls(rules).lookup("tcp", "10.1.2.3", 5060)


def test_container_protocol(matcher_cls):
    rules = [rule(3, priority=2), rule(1, proto="tcp"), rule(2, remote_addr="10.0.0.0/8")]
    matcher = matcher_cls(rules)
    assert len(matcher) == 3
    assert [r.id for r in matcher] == [1, 2, 3]
    assert [r.key() for r in matcher] == sorted(r.key() for r in rules)
    assert 2 in matcher and 4 not in matcher
    assert matcher.get(2) == rules[2] and matcher.get(4) is None
    assert matcher.default.id == 0
    assert len(matcher_cls([])) == 0


def test_rules_must_be_rule_objects(matcher_cls):
    with pytest.raises(TypeError):
        matcher_cls([{"id": 1, "proto": "tcp"}])
