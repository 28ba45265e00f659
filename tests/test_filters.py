"""matching/filters.py (one predicate: does a rule match a connection) and model/prefix.py
(one IPv4-mapped rule), against definitions written straight from docs/behaviour.md#which-rule-wins
with ``ipaddress``: for lookups, for the lint's covers, for rules' networks and lookups' addresses."""

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from tcpmgm import Rule
from tcpmgm.matching import _addr_py
from tcpmgm.matching.filters import Filters, host_prefix, matches
from tcpmgm.model.prefix import unmap_ipv6
from tcpmgm.model.protocols import protocol_code
from tcpmgm.tools.lint import _covers_except_remote

PROTOS = [None, "tcp", "tls"]
PORTS = [0, 0, 5060, 5061]


@st.composite
def networks(draw, version):
    bits = 32 if version == 4 else 128
    length = draw(st.sampled_from([0, 1, bits - 1, bits]) | st.integers(0, bits))
    anchor = draw(st.sampled_from([0, 0x0A000000 << (bits - 32), (1 << bits) - 1]))
    value = anchor ^ draw(st.integers(0, 3) | st.integers(0, (1 << bits) - 1))
    return (ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network)(
        (value >> (bits - length) << (bits - length) if length else 0, length)
    )


@st.composite
def rules(draw, version):
    return Rule(
        id=draw(st.integers(1, 9)),
        proto=draw(st.sampled_from(PROTOS)),
        remote=draw(st.none() | networks(version)),
        remote_port=draw(st.sampled_from(PORTS)),
        local=draw(st.none() | networks(version)),
        local_port=draw(st.sampled_from(PORTS)),
    )


def _inside(address, network):
    return network is None or (
        address is not None and address.version == network.version and address in network  # type: ignore[operator]
    )


def _matches(rule, proto, remote, remote_port, local, local_port):
    """docs/behaviour.md#which-rule-wins: every filter matches (a lookup for any protocol: every protocol)."""
    return (
        (rule.proto is None or proto is None or rule.proto == proto)
        and _inside(remote, rule.remote)
        and rule.remote_port in (0, remote_port)
        and _inside(local, rule.local)
        and rule.local_port in (0, local_port)
    )


@st.composite
def lookups(draw, version):
    def address():
        network = draw(networks(version))
        return None if draw(st.integers(0, 5)) == 0 else network.network_address

    return (
        draw(st.sampled_from(PROTOS)),
        address(),
        draw(st.sampled_from(PORTS)),
        address(),
        draw(st.sampled_from(PORTS)),
    )


def _host(address):
    return None if address is None else host_prefix((address.version, int(address)))


@settings(max_examples=2000, deadline=None)
@given(data=st.data(), version=st.sampled_from([4, 6]))
def test_matches_is_the_definition(data, version):
    rule = data.draw(rules(version))
    proto, remote, rport, local, lport = data.draw(lookups(version))
    got = matches(Filters.of(rule), protocol_code(proto), _host(remote), rport, _host(local), lport)
    assert got == _matches(rule, proto, remote, rport, local, lport)


def _covers_oracle(s, r):
    """The lint's cover, as it read before the shared predicate: S's filters but the remote contain R's."""
    return (
        (s.proto is None or s.proto == r.proto)
        and s.remote_port in (0, r.remote_port)
        and s.local_port in (0, r.local_port)
        and (
            s.local is None
            or (r.local is not None and r.local.version == s.local.version and r.local.subnet_of(s.local))
        )
    )


@settings(max_examples=2000, deadline=None)
@given(data=st.data(), version=st.sampled_from([4, 6]))
def test_the_lint_cover_is_containment(data, version):
    s, r = data.draw(rules(version)), data.draw(rules(version))
    assert _covers_except_remote(s, r) == _covers_oracle(s, r)


def test_a_rule_for_any_protocol_is_covered_only_by_any():
    """A lookup for any protocol matches every rule; a rule for any protocol is every protocol."""
    r, s = Rule(id=2), Rule(id=1, proto="tcp")
    assert matches(Filters.of(s), 0, None, 0, None, 0)
    assert not _covers_except_remote(s, r) and _covers_except_remote(r, s)


# -- the IPv4-mapped rule, once for rules and lookups ------------------------------------------


MAPPED_SPACE = ipaddress.IPv6Network("::ffff:0:0/96")


@settings(max_examples=1000, deadline=None)
@given(
    value=st.integers(0, 2**128 - 1) | st.integers(0, 2**32 - 1).map(lambda low: 0xFFFF << 32 | low),
    length=st.sampled_from([0, 95, 96, 97, 128]) | st.integers(0, 128),
)
def test_mapped_networks_and_addresses_are_ipv4(value, length):
    value = value >> (128 - length) << (128 - length) if length else 0
    network = ipaddress.IPv6Network((value, length))
    if length >= 96 and network.subnet_of(MAPPED_SPACE):
        expected = (4, value & 0xFFFFFFFF, length - 96)
    else:
        expected = (6, value, length)
    assert unmap_ipv6(value, length) == expected
    # A rule's network and a lookup's address go by it alike.
    assert Rule.from_row({"id": 1, "proto": "any", "remote_addr": str(network)}).remote_prefix == expected
    address = network.network_address
    mapped = address.ipv4_mapped
    assert _addr_py.normalize(address) == ((4, int(mapped)) if mapped is not None else (6, value))
