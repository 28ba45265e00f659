"""Hypothesis properties of docs/behaviour.md#which-rule-wins against a brute-force oracle written here.

The oracle reads the raw rows with ``ipaddress`` and applies docs/behaviour.md's
"matches" and "key" definitions directly; it shares no code with the
matchers, so a bug in ``Rule``, the address parsers or a matcher cannot hide
behind itself.  Addresses come from tiny spaces so that rules overlap, nest
and tie often.
"""

import functools
import ipaddress
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpmgm import Rule, RuleError
from tcpmgm.model.rule import COLUMNS

# matcher_cls only parametrises the class; it holds no state between examples.
FIXTURE_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# -- the oracle ---------------------------------------------------------------------


@functools.cache
def oracle_network(text):
    if text is None or text.strip().lower() in ("", "any"):
        return None
    net = ipaddress.ip_network(text.strip(), strict=False)
    mapped = getattr(net.network_address, "ipv4_mapped", None)
    if net.version == 6 and net.prefixlen >= 96 and mapped is not None:
        net = ipaddress.ip_network((mapped, net.prefixlen - 96))
    return net


@functools.cache
def oracle_address(value):
    if value is None:
        return None
    ip = ipaddress.ip_address(value.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def oracle_inside(address, network):
    if network is None:
        return True
    return address is not None and address.version == network.version and address in network


def oracle_matches(row, conn):
    proto, remote_ip, remote_port, local_ip, local_port = conn
    rule_proto = row["proto"].strip().lower()
    return (
        (rule_proto == "any" or proto is None or proto.lower() == "any" or proto.lower() == rule_proto)
        and oracle_inside(oracle_address(remote_ip), oracle_network(row["remote_addr"]))
        and row["remote_port"] in (0, remote_port)
        and oracle_inside(oracle_address(local_ip), oracle_network(row["local_addr"]))
        and row["local_port"] in (0, local_port)
    )


def oracle_key(row):
    remote, local = oracle_network(row["remote_addr"]), oracle_network(row["local_addr"])
    return (
        row["priority"],
        row["proto"].strip().lower() == "any",
        remote is None,
        -(remote.prefixlen if remote is not None else 0),
        row["remote_port"] == 0,
        local is None,
        -(local.prefixlen if local is not None else 0),
        row["local_port"] == 0,
        row["id"],
    )


# -- generators: small spaces, so that rules overlap ----------------------------------

V4_BASE = int(ipaddress.IPv4Address("10.0.0.0"))
V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))
LOCAL_V4 = int(ipaddress.IPv4Address("192.168.0.0"))


def v4_text(base, low_bits):
    return st.integers(0, (1 << low_bits) - 1).map(lambda n: str(ipaddress.IPv4Address(base + n)))


def v6_text(base, low_bits):
    return st.integers(0, (1 << low_bits) - 1).map(lambda n: str(ipaddress.IPv6Address(base + n)))


def with_length(addresses, lengths):
    return st.tuples(addresses, st.sampled_from(lengths)).map(lambda t: f"{t[0]}/{t[1]}")


REMOTE_NETS = st.one_of(
    st.sampled_from([None, "any", "ANY"]),
    with_length(v4_text(V4_BASE, 4), [0, 8, 16, 24, 28, 29, 30, 31, 32]),
    v4_text(V4_BASE, 4),
    with_length(v6_text(V6_BASE, 4), [0, 32, 64, 124, 125, 126, 127, 128]),
    with_length(v4_text(V4_BASE, 4).map(lambda a: f"::ffff:{a}"), [96, 120, 124, 126, 128]),
)
LOCAL_NETS = st.one_of(
    st.sampled_from([None, None, None, "any"]),
    with_length(v4_text(LOCAL_V4, 2), [0, 24, 30, 31, 32]),
    with_length(v6_text(V6_BASE, 2), [0, 126, 128]),
)
FIELDS = {
    "proto": st.sampled_from(["any", "any", "tcp", "tls", "ws", "TCP", "ANY"]),
    "remote_addr": REMOTE_NETS,
    "remote_port": st.sampled_from([0, 0, 5060, 5061]),
    "local_addr": LOCAL_NETS,
    "local_port": st.sampled_from([0, 0, 5060]),
    "priority": st.sampled_from([-1, 0, 0, 0, 1, 2]),
    "connect_timeout": st.integers(0, 5000),
}
ROWS = st.fixed_dictionaries(FIELDS)


@st.composite
def rule_sets(draw):
    """Rows with distinct (shuffled) ids, keeping only those the model accepts.

    Most rows are variations of a few base rows (up to three fields redrawn),
    so that rules tie on most levels of the key and differ on one or two:
    the shapes where a wrong order of the levels shows.
    """
    bases = draw(st.lists(ROWS, min_size=1, max_size=3))
    drafts = []
    for _ in range(draw(st.integers(0, 14))):
        base = draw(st.sampled_from(bases))
        redrawn = draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=3))
        drafts.append({**base, **{name: draw(FIELDS[name]) for name in sorted(redrawn)}})
    ids = draw(st.lists(st.integers(1, 10_000), min_size=len(drafts), max_size=len(drafts), unique=True))
    rows, rules = [], []
    for rule_id, draft in zip(ids, drafts):
        row = {"id": rule_id, **draft}
        try:
            rules.append(Rule.from_row(row))
        except RuleError as err:  # remote and local of different families
            assert err.column == "local_addr" and "address with an" in err.reason
            continue
        rows.append(row)
    return rows, rules


LOOKUP_REMOTE = st.one_of(
    st.none(),
    v4_text(V4_BASE, 5),  # half of them outside every /28
    v4_text(V4_BASE, 4).map(lambda a: f"::ffff:{a}"),
    v6_text(V6_BASE, 5),
    v6_text(V6_BASE, 4).map(lambda a: f"{a}%eth0"),
    st.just("192.0.2.1"),
)
LOOKUP_LOCAL = st.one_of(
    st.none(),
    v4_text(LOCAL_V4, 3),
    v4_text(LOCAL_V4, 2).map(lambda a: f"::ffff:{a}"),
    v6_text(V6_BASE, 3),
)
CONNECTIONS = st.tuples(
    st.sampled_from([None, "any", "tcp", "tls", "ws", "wss", "TLS"]),
    LOOKUP_REMOTE,
    st.sampled_from([0, 5060, 5061, 80]),
    LOOKUP_LOCAL,
    st.sampled_from([0, 5060, 443]),
)


@st.composite
def inside(draw, network, family_default):
    """An address (as a connection would present it) inside ``network``."""
    if network is None:
        return draw(family_default)
    offset = draw(st.integers(0, min(network.num_addresses - 1, 2**16)))
    address = network.network_address + offset
    if address.version == 4 and draw(st.booleans()):
        return f"::ffff:{address}"
    return str(address)


@st.composite
def scenarios(draw):
    """A rule set and lookups, half of them built to fall inside some rule."""
    rows, rules = draw(rule_sets())
    connections = []
    for _ in range(draw(st.integers(1, 12))):
        if not rows or draw(st.booleans()):
            connections.append(draw(CONNECTIONS))
            continue
        row = draw(st.sampled_from(rows))
        proto = row["proto"] if row["proto"].lower() != "any" else draw(st.sampled_from([None, "tcp", "ws"]))
        connections.append(
            (
                proto,
                draw(inside(oracle_network(row["remote_addr"]), LOOKUP_REMOTE)),
                row["remote_port"] or draw(st.sampled_from([5060, 5061, 80])),
                draw(inside(oracle_network(row["local_addr"]), LOOKUP_LOCAL)),
                row["local_port"] or draw(st.sampled_from([5060, 443])),
            )
        )
    return rows, rules, connections


@FIXTURE_SETTINGS
@given(scenarios())
def test_answer_matches_and_has_the_smallest_key(matcher_cls, scenario):
    rows, rules, connections = scenario
    matcher = matcher_cls(rules)
    by_id = {r.id: r for r in rules}
    for conn in connections:
        matching = [row for row in rows if oracle_matches(row, conn)]
        answer = matcher.lookup(*conn)
        if not matching:
            assert answer == matcher.default and answer.id == 0
            assert matcher.explain(*conn).winner is None
            continue
        best = min(matching, key=oracle_key)
        winner_row = next(row for row in rows if row["id"] == answer.id)
        assert oracle_matches(winner_row, conn)
        assert all(oracle_key(winner_row) <= oracle_key(row) for row in matching)
        assert answer.id == best["id"] and answer == by_id[best["id"]].profile
        assert answer.connect_timeout == best["connect_timeout"]
        explained = [r.id for r, _ in matcher.explain(*conn).matches]
        assert explained == [row["id"] for row in sorted(matching, key=oracle_key)]


@FIXTURE_SETTINGS
@given(scenarios())
def test_default_exactly_when_no_rule_matches(matcher_cls, scenario):
    rows, rules, connections = scenario
    matcher = matcher_cls(rules)
    for conn in connections:
        no_match = not any(oracle_matches(row, conn) for row in rows)
        assert (matcher.lookup(*conn).id == 0) == no_match


# -- from_row never fails with anything but a RuleError ----------------------------

DRIVER_VALUES = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.binary(max_size=8),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.floats(),
    st.sampled_from(
        [
            "tcp",
            "any",
            "10.0.0.0/8",
            "::1/200",
            "1.2.3.4/\u00b2",
            "max_msg_chunks=\u0663",
            "max_msg_chunks",
            "internal",
            "fe80::1%eth0",
            Decimal("sNaN"),
        ]
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(COLUMNS), DRIVER_VALUES),
    st.dictionaries(st.sampled_from(["internal", "public", "x"]), st.one_of(st.text(max_size=8), st.integers())),
)
def test_from_row_raises_only_rule_errors(values, listeners):
    row = {"id": 1, "proto": "tcp", **values}
    try:
        rule = Rule.from_row(row, listeners=listeners)
    except RuleError as err:
        assert err.column in COLUMNS and err.reason
        str(err)
    else:
        assert rule.id >= 1 and all(0 <= p <= 65535 for p in (rule.remote_port, rule.local_port))
