"""OpenSIPSOrder answers as OpenSIPS does: held to a restatement of its C source (tests/opensips_tables.py)."""

from __future__ import annotations

import ipaddress
import random
from unittest import mock

import opensips_tables as c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpmgm import Rule, RuleError, default_profile
from tcpmgm.opensips import OpenSIPSOrder, compare_paths, merge_sort, order, path_key


def emulation(rules, matcher_cls, **kwargs):
    """OpenSIPSOrder whose position-keyed scan is ``matcher_cls`` (both twins run)."""
    with mock.patch.object(order, "Matcher", matcher_cls):
        return OpenSIPSOrder(rules, **kwargs)


def net(text):
    return ipaddress.ip_network(text)


# -- the sort ----------------------------------------------------------------------------------


@given(c.tables(max_size=40))
@settings(max_examples=400)
def test_sort_is_glibc_merge_sort_with_the_c_comparator(rules):
    expected = [path.id for path in c.qsort([c.cpath(rule) for rule in rules])]
    assert [rule.id for rule in merge_sort(rules, lambda a, b: compare_paths(path_key(a), path_key(b)))] == expected


@given(c.tables(min_size=2, max_size=2))
@settings(max_examples=500)
def test_comparator_is_the_c_comparator_in_both_directions(rules):
    a, b = rules
    assert compare_paths(path_key(a), path_key(b)) == c.tcp_path_comparator(c.cpath(a), c.cpath(b))
    assert compare_paths(path_key(b), path_key(a)) == c.tcp_path_comparator(c.cpath(b), c.cpath(a))


def test_merge_sort_is_stable_and_sorts_a_consistent_order():
    rng = random.Random(13)
    items = [(rng.randrange(20), i) for i in range(500)]
    assert merge_sort(items, lambda a, b: (a[0] > b[0]) - (a[0] < b[0])) == sorted(items, key=lambda x: x[0])


def test_mask_comparison_is_asymmetric_across_families():
    """The C walks as many mask bytes as the left path's address has: an IPv4 /32 and an
    IPv6 /48 compare equal one way round and not the other."""
    v4 = Rule(1, remote=net("10.0.0.1/32"))
    v6 = Rule(2, remote=net("2001:db8::/48"))
    assert compare_paths(path_key(v4), path_key(v6)) == 0
    assert compare_paths(path_key(v6), path_key(v4)) == -1


# -- lookups -----------------------------------------------------------------------------------


@given(c.tables(max_size=14), st.randoms(use_true_random=False))
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])  # matcher_cls is a class
def test_lookup_is_the_first_matching_path_of_the_c_array(matcher_cls, rules, rng):
    emulated = emulation(rules, matcher_cls)
    paths = c.qsort([c.cpath(rule) for rule in rules])
    assert [rule.id for rule in emulated.paths] == [path.id for path in paths]
    grid = c.connection_grid(rules)
    for connection in rng.sample(grid, 80):
        expected = c.get_profile(paths, *connection)
        assert emulated.lookup(*connection).id == expected, connection
        winner = emulated.winner(*connection)
        assert (winner.id if winner else 0) == expected


def test_a_wider_prefix_before_a_narrower_one_through_another_protocol(matcher_cls):
    """The non-transitive case: tls /16 compares equal to both tcp rules, so the merge
    never puts the tcp /16 before the tcp /8 that the database returned first."""
    rules = [
        Rule(8, proto="tcp", remote=net("10.0.0.0/8")),
        Rule(5, proto="tls", remote=net("10.0.0.0/16")),
        Rule(24, proto="tcp", remote=net("10.1.0.0/16")),
    ]
    emulated = emulation(rules, matcher_cls)
    assert [rule.id for rule in emulated.paths] == [8, 5, 24]
    assert emulated.lookup("tcp", "10.1.2.3").id == 8
    assert matcher_cls(rules).lookup("tcp", "10.1.2.3").id == 24
    # In another database order the merge compares the two tcp rules and gets them right.
    reordered = emulation([rules[1], rules[0], rules[2]], matcher_cls)
    assert reordered.lookup("tcp", "10.1.2.3").id == 24


def test_ties_keep_the_database_order(matcher_cls):
    rules = [Rule(9, proto="tcp", remote=net("10.0.0.0/8")), Rule(3, proto="tcp", remote=net("10.0.0.0/8"))]
    assert emulation(rules, matcher_cls).lookup("tcp", "10.0.0.1").id == 9
    assert matcher_cls(rules).lookup("tcp", "10.0.0.1").id == 3


def test_an_ipv4_mapped_connection_is_ipv6_to_opensips(matcher_cls):
    rules = [Rule(1, remote=net("10.0.0.0/8")), Rule(2, remote=net("::/0"))]
    emulated = emulation(rules, matcher_cls)
    assert emulated.lookup("tcp", "::ffff:10.0.0.1").id == 2
    assert emulated.lookup("tcp", ipaddress.ip_address("::ffff:10.0.0.1")).id == 2
    assert emulated.lookup("tcp", ((0xFFFF << 32) | 0x0A000001, 6)).id == 2
    assert emulated.lookup("tcp", "10.0.0.1").id == 1
    assert matcher_cls(rules).lookup("tcp", "::ffff:10.0.0.1").id == 1


def test_no_match_is_the_default_profile_with_id_0(matcher_cls):
    default = default_profile().replace(connect_timeout=77)
    emulated = emulation([Rule(4, proto="tls")], matcher_cls, default=default)
    profile = emulated.lookup("tcp", "192.0.2.7", 5060)
    assert (profile.id, profile.connect_timeout) == (0, 77)
    assert emulated.winner("tcp", "192.0.2.7", 5060) is None
    assert emulated.lookup(None, "192.0.2.7").id == 4  # a lookup for any protocol matches every path


def test_the_arguments_are_checked_as_a_matcher_checks_them(matcher_cls):
    emulated = emulation([Rule(1)], matcher_cls)
    with pytest.raises(ValueError, match="remote_ip"):
        emulated.lookup("tcp", "not an address")
    with pytest.raises(ValueError, match="proto"):
        emulated.lookup("nope", "10.0.0.1")
    with pytest.raises(ValueError, match="local_port"):
        emulated.lookup("tcp", "::ffff:10.0.0.1", 1, None, 70000)
    with pytest.raises(RuleError, match="duplicate id"):
        OpenSIPSOrder([Rule(1), Rule(1)])


def test_lookup_many_is_lookup_row_by_row(matcher_cls):
    import array

    rules = [
        Rule(8, proto="tcp", remote=net("10.0.0.0/8")),
        Rule(5, proto="tls", remote=net("10.0.0.0/16")),
        Rule(24, proto="tcp", remote=net("10.1.0.0/16")),
    ]
    emulated = emulation(rules, matcher_cls)
    addresses = array.array("I", [0x0A010203, 0x0A000001, 0x0B000001])
    assert list(emulated.lookup_many("tcp", addresses)) == [
        emulated.lookup("tcp", (value, 4)).id for value in addresses
    ]
