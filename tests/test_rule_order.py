"""``Rule.order`` (the key packed into one int) and the prefixes a rule keeps as ints.

The compiled classifier ranks rules by ``order``; docs/behaviour.md#which-rule-wins is ``Rule.key()``.
These tests hold the two to the same order, including the corners of the
packing: the extreme priorities, /0 against "any", /128, the largest id
(the ranges of tcpmgm.model.limits).
"""

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from tcpmgm import Rule
from tcpmgm.model.limits import ID_MAX, PRIORITY_MAX, PRIORITY_MIN

PROTOS = [None, "tcp", "tls"]


@st.composite
def prefixes(draw):
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    plen = draw(st.sampled_from([0, 1, bits - 1, bits]) | st.integers(0, bits))
    value = draw(st.integers(0, (1 << bits) - 1)) >> (bits - plen) << (bits - plen) if plen else 0
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return cls((value, plen))


@st.composite
def rules(draw):
    remote = draw(st.none() | prefixes())
    local = draw(st.none() | prefixes())
    if remote is not None and local is not None and local.version != remote.version:
        local = None
    return Rule(
        id=draw(st.integers(1, 3) | st.integers(1, ID_MAX) | st.sampled_from([ID_MAX - 1, ID_MAX])),
        proto=draw(st.sampled_from(PROTOS)),
        remote=remote,
        remote_port=draw(st.sampled_from([0, 1, 65535])),
        local=local,
        local_port=draw(st.sampled_from([0, 1, 65535])),
        priority=draw(
            st.integers(-2, 2)
            | st.integers(PRIORITY_MIN, PRIORITY_MAX)
            | st.sampled_from([PRIORITY_MIN, PRIORITY_MIN + 1, PRIORITY_MAX - 1, PRIORITY_MAX])
        ),
    )


def _sign(x):
    return (x > 0) - (x < 0)


@settings(max_examples=3000, deadline=None)
@given(rules(), rules())
def test_order_compares_as_the_key_does(a, b):
    key_a, key_b = a.key(), b.key()
    assert _sign(a.order - b.order) == _sign((key_a > key_b) - (key_a < key_b))


def test_order_corners():
    """Each level of the key decides before the next one, by hand."""
    net = ipaddress.ip_network
    ladder = [  # best first, each a key level that beats everything after it
        Rule(id=ID_MAX, priority=PRIORITY_MIN),
        Rule(id=9, priority=-5),
        Rule(id=9, proto="tcp", priority=0),
        Rule(id=9, remote=net("10.0.0.0/8")),
        Rule(id=9, remote=net("0.0.0.0/0")),  # /0 still beats "any"
        Rule(id=9, remote_port=5060),
        Rule(id=9, local=net("::1/128")),
        Rule(id=9, local=net("::/0")),
        Rule(id=9, local_port=1),
        Rule(id=ID_MAX),
        Rule(id=1, priority=PRIORITY_MAX),
    ]
    keys = [rule.key() for rule in ladder]
    orders = [rule.order for rule in ladder]
    assert all(a < b for a, b in zip(keys, keys[1:])), "the ladder is in key order"
    assert all(a < b for a, b in zip(orders, orders[1:]))


def test_prefixes_are_ints_and_networks_come_on_first_use():
    rule = Rule.from_row({"id": 3, "proto": "tcp", "remote_addr": "10.1.0.0/16", "local_addr": "::ffff:192.0.2.1"})
    assert rule.remote_prefix == (4, 0x0A010000, 16)
    assert rule.local_prefix == (4, 0xC0000201, 32)  # a mapped address is stored as IPv4
    assert "remote" not in vars(rule)  # not built by from_row
    assert rule.remote == ipaddress.ip_network("10.1.0.0/16")
    assert vars(rule)["remote"] is rule.remote  # built once, then kept
    assert rule.local == ipaddress.ip_network("192.0.2.1/32")
    assert rule.family == 4


def test_a_rule_made_from_networks_has_the_same_prefixes_and_order():
    from_row = Rule.from_row({"id": 3, "proto": "any", "remote_addr": "2001:db8::/32", "priority": -1})
    made = Rule(id=3, remote=ipaddress.ip_network("2001:db8::/32"), priority=-1)
    assert made == from_row
    assert made.remote_prefix == from_row.remote_prefix == (6, 0x20010DB8 << 96, 32)
    assert made.local_prefix is None and made.order == from_row.order
