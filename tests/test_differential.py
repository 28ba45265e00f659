"""The compiled classifier against the reference, on generated rule sets.

Every example builds both matchers from one generated rule set and asks both
the same lookups, one by one and through ``lookup_many``.  The generators aim
at the shapes a trie gets wrong: nested prefixes whose priorities favour the
shorter ones, rules differing only in ports, full-key ties, /0, /32 and /128,
both families in one set, local prefixes, IPv4-mapped and protocol-"any"
lookups, empty sets.

CI runs 2,000 rule sets (``test_lookup_agrees`` alone); set
``TCPMGM_DIFFERENTIAL_EXAMPLES`` for a heavier run, e.g. 50000.
"""

import array
import ipaddress
import os
import random
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpmgm import ReferenceMatcher, Rule
from tcpmgm.matching import matcher as matcher_module
from tcpmgm.model.protocols import protocol_code

pytestmark = pytest.mark.skipif(not matcher_module.COMPILED, reason="compiled classifier not in use")

EXAMPLES = int(os.environ.get("TCPMGM_DIFFERENTIAL_EXAMPLES", "2000"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# A few anchors per family so that generated prefixes nest and overlap.
V4_ANCHORS = [0x0A000000, 0x0A01020F, 0xC0A80101, 0x00000000, 0xFFFFFFFF, 0x7F000001]
V6_ANCHORS = [
    0x20010DB8 << 96,
    (0x20010DB8 << 96) | (1 << 64) | 5,
    0,
    (1 << 128) - 1,
    0xFE80 << 112 | 1,
    0xFFFF << 32 | 0x0A000001,
]  # the last: IPv4-mapped space
PROTOS = [None, "tcp", "tls", "ws", "wss", "bin"]
PORTS = [0, 0, 0, 5060, 5061, 1]


@st.composite
def addresses(draw, version):
    """An address near an anchor: a few low or high bits changed, or anywhere."""
    bits = 32 if version == 4 else 128
    anchor = draw(st.sampled_from(V4_ANCHORS if version == 4 else V6_ANCHORS))
    how = draw(st.integers(0, 3))
    if how == 0:
        return anchor
    if how == 1:
        return anchor ^ draw(st.integers(0, 255))
    if how == 2:
        return anchor ^ (1 << draw(st.integers(0, bits - 1)))
    return draw(st.integers(0, (1 << bits) - 1))


@st.composite
def networks(draw, version):
    bits = 32 if version == 4 else 128
    value = draw(addresses(version))
    plen = draw(st.one_of(st.sampled_from([0, bits, bits // 2, 8, 24 if bits == 32 else 64]), st.integers(0, bits)))
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return cls((value >> (bits - plen) << (bits - plen) if plen else 0, plen))


@st.composite
def rule_specs(draw):
    """A rule's filters (without id): a dict for Rule(**spec)."""
    version = draw(st.sampled_from([4, 4, 6]))
    remote = draw(st.one_of(st.none(), networks(version), networks(version), networks(version)))
    local = draw(st.one_of(st.none(), st.none(), networks(version)))
    return dict(
        proto=draw(st.sampled_from(PROTOS)),
        remote=remote,
        remote_port=draw(st.sampled_from(PORTS)),
        local=local,
        local_port=draw(st.sampled_from(PORTS)),
        priority=draw(st.integers(-2, 3)),
    )


@st.composite
def nested_chain(draw):
    """Nested prefixes on one address, priorities favouring the shorter ones."""
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    value = draw(addresses(version))
    lengths = sorted(draw(st.sets(st.integers(0, bits), min_size=2, max_size=8)))
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    proto = draw(st.sampled_from(PROTOS))
    return [
        dict(
            proto=proto if draw(st.booleans()) else None,
            remote=cls((value >> (bits - plen) << (bits - plen) if plen else 0, plen)),
            remote_port=draw(st.sampled_from(PORTS)),
            priority=rank - draw(st.integers(0, 1)),
        )
        for rank, plen in enumerate(lengths)
    ]


@st.composite
def rule_sets(draw):
    specs = draw(st.lists(rule_specs(), max_size=25))
    for chain in draw(st.lists(nested_chain(), max_size=2)):
        specs.extend(chain)
    # Rules differing only in ports, and full-key ties (same filters, other id).
    for spec in draw(st.lists(st.sampled_from(specs), max_size=6)) if specs else []:
        specs.append(dict(spec, remote_port=draw(st.sampled_from(PORTS)), local_port=draw(st.sampled_from(PORTS))))
    for spec in draw(st.lists(st.sampled_from(specs), max_size=3)) if specs else []:
        specs.append(dict(spec))
    ids = draw(
        st.lists(st.integers(1, 2**40), min_size=len(specs), max_size=len(specs), unique=True)
        if draw(st.integers(0, 9)) == 0
        else st.permutations(range(1, len(specs) + 1))
    )
    return [Rule(id=rule_id, **spec) for rule_id, spec in zip(ids, specs)]


@st.composite
def address_forms(draw, version, value):
    """One address in one of the forms lookups accept."""
    address = ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)
    forms = [
        str(address),
        address,
        address.packed,
        (value, version),
        (value, int(socket.AF_INET if version == 4 else socket.AF_INET6)),
    ]
    if version == 4:
        forms.append(f"::ffff:{address}")  # IPv4-mapped: matched as IPv4
    elif str(address).startswith("fe80"):
        forms.append(f"{address}%eth0")  # zone: ignored
    return draw(st.sampled_from(forms))


@st.composite
def lookups(draw):
    """(proto, (version, value) | None, remote_port, (version, value) | None, local_port)."""

    def endpoint():
        version = draw(st.sampled_from([4, 4, 6]))
        return version, draw(addresses(version))

    remote = endpoint() if draw(st.integers(0, 9)) else None
    local = endpoint() if draw(st.integers(0, 2)) else None
    return (
        draw(st.sampled_from([*PROTOS, "any", "msrp"])),
        remote,
        draw(st.sampled_from([*PORTS[2:], 0, 9])),
        local,
        draw(st.sampled_from([*PORTS[2:], 0, 9])),
    )


def packed(endpoint):
    version, value = endpoint
    if version == 4:
        return ipaddress.IPv6Address((0xFFFF << 32) | value).packed
    return ipaddress.IPv6Address(value).packed


@SETTINGS
@given(rules=rule_sets(), queries=st.lists(lookups(), min_size=1, max_size=40), data=st.data())
def test_lookup_agrees(rules, queries, data):
    reference = ReferenceMatcher(rules)
    compiled = matcher_module.Matcher(rules)
    assert [rule.id for rule in compiled] == [rule.id for rule in reference]
    expected = []
    for proto, remote, rport, local, lport in queries:
        remote_arg = data.draw(address_forms(*remote)) if remote else None
        local_arg = data.draw(address_forms(*local)) if local else None
        want = reference.lookup(proto, remote_arg, rport, local_arg, lport)
        got = compiled.lookup(proto, remote_arg, rport, local_arg, lport)
        assert got.id == want.id, (proto, remote_arg, rport, local_arg, lport)
        assert got is compiled.get(want.id).profile if want.id else got == compiled.default
        expected.append(want.id)

    # The same lookups as one batch: every remote as 16 packed bytes (IPv4 mapped).
    batch = [(q, e) for q, e in zip(queries, expected) if q[1] is not None]
    with_local = [(q, e) for q, e in batch if q[3] is not None]
    protos = array.array("H", [protocol_code(q[0]) for q, _ in with_local])
    columns = (
        protos,
        b"".join(packed(q[1]) for q, _ in with_local),
        array.array("H", [q[2] for q, _ in with_local]),
        b"".join(packed(q[3]) for q, _ in with_local),
        array.array("H", [q[4] for q, _ in with_local]),
    )
    for matcher in (compiled, reference):  # the reference's batch reader is a twin to hold too
        got = matcher.lookup_many(*columns)
        assert list(got) == [e for _, e in with_local]

    # Without local addresses, IPv4 remotes as host-order uint32.
    v4 = [q for q, _ in batch if q[1][0] == 4]
    columns = (
        array.array("H", [protocol_code(q[0]) for q in v4]),
        array.array("I", [q[1][1] for q in v4]),
        array.array("H", [q[2] for q in v4]),
        None,
        array.array("H", [q[4] for q in v4]),
    )
    for matcher in (compiled, reference):
        got = matcher.lookup_many(*columns)
        assert list(got) == [reference.lookup(q[0], (q[1][1], 4), q[2], None, q[4]).id for q in v4]


@settings(
    max_examples=max(EXAMPLES // 10, 50),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(rules=rule_sets(), queries=st.lists(lookups(), min_size=1, max_size=10))
def test_explain_agrees(rules, queries):
    reference = ReferenceMatcher(rules)
    compiled = matcher_module.Matcher(rules)
    for proto, remote, rport, local, lport in queries:
        args = (proto, remote and (remote[1], remote[0]), rport, local and (local[1], local[0]), lport)
        assert compiled.explain(*args) == reference.explain(*args)
        assert compiled.explain(*args).profile.id == compiled.lookup(*args).id


# -- a wide first stride -------------------------------------------------------
# The compiled matcher widens its first stride (the direct table over the top
# address bits) from 16 bits as a family's prefixes pass 32,768.  These
# examples add that many host prefixes of each family, far more than the
# reference can scan per example, so the oracle is the compiled ``explain``:
# a brute force over every rule, held to the reference by test_explain_agrees.

FILLER_PER_FAMILY = 40_000
FILLER_FIRST_ID = 2**41  # above every id rule_sets draws


def _filler():
    rng = random.Random("wide-stride")
    rules = []
    for version, bits in ((4, 32), (6, 128)):
        cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
        anchors = V4_ANCHORS if version == 4 else V6_ANCHORS
        for value in set(
            rng.choice(anchors) ^ rng.getrandbits(bits // 2) if rng.random() < 0.3 else rng.getrandbits(bits)
            for _ in range(FILLER_PER_FAMILY)
        ):
            rules.append(
                Rule(
                    id=FILLER_FIRST_ID + len(rules),
                    proto=rng.choice(PROTOS),
                    remote=cls((value, bits)),
                    remote_port=rng.choice(PORTS),
                    priority=rng.randint(-2, 3),
                )
            )
    return rules


FILLER = _filler()


@settings(
    max_examples=max(EXAMPLES // 20, 25),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    rules=rule_sets(),
    queries=st.lists(lookups(), min_size=1, max_size=30),
    hosts=st.lists(st.sampled_from(FILLER), max_size=10),
)
def test_wide_stride_agrees(rules, queries, hosts):
    compiled = matcher_module.Matcher(rules + FILLER)
    assert min(compiled.stride_bits) > 16
    queries = queries + [
        (None, (rule.remote_prefix[0], rule.remote_prefix[1]), rule.remote_port, None, 0) for rule in hosts
    ]
    expected = []
    for proto, remote, rport, local, lport in queries:
        args = (proto, remote and (remote[1], remote[0]), rport, local and (local[1], local[0]), lport)
        expected.append(compiled.explain(*args).profile.id)
        assert compiled.lookup(*args).id == expected[-1], args
    batch = [(q, e) for q, e in zip(queries, expected) if q[1] is not None and q[3] is not None]
    got = compiled.lookup_many(
        array.array("H", [protocol_code(q[0]) for q, _ in batch]),
        b"".join(packed(q[1]) for q, _ in batch),
        array.array("H", [q[2] for q, _ in batch]),
        b"".join(packed(q[3]) for q, _ in batch),
        array.array("H", [q[4] for q, _ in batch]),
    )
    assert list(got) == [e for _, e in batch]
