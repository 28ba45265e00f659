"""The benchmark workloads of benchmarks/README.md#workloads, seeded and reproducible.

Used by ``tcpmgm bench``, ``benchmarks/`` and the tests: the same seed gives
the same rules and lookups everywhere.  Rules are built with the
:class:`~tcpmgm.Rule` constructor (``Rule.from_row`` validates text and is
far too slow for a million rules); generating them is not part of any
timing of a matcher.
"""

from __future__ import annotations

import array
import ipaddress
import random
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple, Optional, cast

from tcpmgm.model.profile import default_profile
from tcpmgm.model.protocols import BUILTIN_PROTOCOLS, protocol_code
from tcpmgm.model.rule import Network, Rule

__all__ = ["WORKLOADS", "Batch", "Query", "Workload", "batch", "carrier", "nested", "ports"]

Query = tuple[Optional[str], str, int, Optional[str], int]  # lookup()'s arguments

# Prefix lengths and their weights, shaped like a routing table: few short
# prefixes (a thousand random /8s would cover every address many times over,
# which no operator writes), most at /24 and /32, IPv6 at /48, /64 and /128.
_V4_LENGTHS = (list(range(8, 33)), [0.05] * 8 + [1] * 8 + [45] + [1] * 7 + [40])
_V6_LENGTHS = ([*list(range(32, 129, 4)), 48, 64, 128], [0.5] * 25 + [30, 30, 25])
_LOCAL_V4 = [f"192.0.2.{i}" for i in range(1, 9)]
_LOCAL_V6 = [f"2001:db8:ffff::{i:x}" for i in range(1, 5)]
_LOCAL_PORTS = (5060, 5061, 443, 8443)


class Workload(NamedTuple):
    name: str
    rules: list[Rule]
    lookups: list[Query]


class Batch(NamedTuple):
    """``lookup_many`` arguments for some lookups of one address family."""

    protos: array.array[int]
    remote_ips: array.array[int] | bytes
    remote_ports: array.array[int]
    local_ips: array.array[int] | bytes
    local_ports: array.array[int]


def _network(rng: random.Random, version: int) -> Network:
    if version == 4:
        plen = rng.choices(*_V4_LENGTHS)[0]
        value = rng.randrange(0x01000000, 0xE0000000)
        return ipaddress.IPv4Network((value >> (32 - plen) << (32 - plen), plen))
    plen = rng.choices(*_V6_LENGTHS)[0]
    value = (0x2 << 125) | rng.getrandbits(125)  # 2000::/3
    return ipaddress.IPv6Network((value >> (128 - plen) << (128 - plen), plen))


def _inside(rng: random.Random, network: Network) -> str:
    host_bits = network.max_prefixlen - network.prefixlen
    value = int(network.network_address) | rng.getrandbits(host_bits) if host_bits else int(network.network_address)
    return str(ipaddress.ip_address(value) if network.version == 6 else ipaddress.IPv4Address(value))


def _random_address(rng: random.Random, version: int) -> str:
    if version == 4:
        return str(ipaddress.IPv4Address(rng.randrange(0x01000000, 0xE0000000)))
    return str(ipaddress.IPv6Address((0x2 << 125) | rng.getrandbits(125)))


def _proto(rng: random.Random) -> str | None:
    return None if rng.random() < 0.5 else rng.choice(BUILTIN_PROTOCOLS)


def _priority(rng: random.Random) -> int:
    return 0 if rng.random() < 0.8 else rng.randint(1, 10)


def _local(rng: random.Random, version: int) -> str:
    return rng.choice(_LOCAL_V4 if version == 4 else _LOCAL_V6)


def _rule(rule_id: int, **filters: Any) -> Rule:
    return Rule(id=rule_id, profile=_PROFILE, **filters)


_PROFILE = default_profile().replace(connect_timeout=500)


def carrier(n: int, q: int, seed: int = 0) -> Workload:
    """Realistic mix: 70% IPv4 / 30% IPv6 prefixes, some ports, locals, protocols, priorities."""
    rng = random.Random(f"carrier-{n}-{seed}")
    rules = []
    for rule_id in range(1, n + 1):
        remote = _network(rng, 4 if rng.random() < 0.7 else 6)
        local = None
        if rng.random() < 0.1:
            local = ipaddress.ip_network(_local(rng, remote.version))
        rules.append(
            _rule(
                rule_id,
                proto=_proto(rng),
                remote=remote,
                remote_port=rng.randint(1024, 65535) if rng.random() < 0.2 else 0,
                local=local,
                local_port=rng.choice(_LOCAL_PORTS) if rng.random() < 0.1 else 0,
                priority=_priority(rng),
            )
        )
    lookups: list[Query] = []
    for _ in range(q):
        if rules and rng.random() < 0.5:
            rule = rng.choice(rules)
            assert rule.remote is not None  # every carrier rule has one
            version, remote_ip = rule.remote.version, _inside(rng, rule.remote)
            rport = rule.remote_port or rng.randint(1024, 65535)
        else:
            version = 4 if rng.random() < 0.7 else 6
            remote_ip, rport = _random_address(rng, version), rng.randint(1024, 65535)
        lookups.append(
            (rng.choice(BUILTIN_PROTOCOLS), remote_ip, rport, _local(rng, version), rng.choice(_LOCAL_PORTS))
        )
    return Workload("carrier", rules, lookups)


def ports(n: int, q: int, seed: int = 0) -> Workload:
    """N rules on one remote network that differ only in remote and local port."""
    rng = random.Random(f"ports-{n}-{seed}")
    network = ipaddress.IPv4Network("198.51.100.0/24")
    rules = []
    for rule_id in range(1, n + 1):
        index = rule_id - 1
        rules.append(
            _rule(
                rule_id,
                proto="tcp" if index % 3 else None,
                remote=network,
                remote_port=1 + index % 65535 if index % 4 != 3 else 0,
                local_port=1 + (index // 65535 + index) % 65535 if index % 2 else 0,
                priority=0,
            )
        )
    lookups: list[Query] = []
    for _ in range(q):
        rule = rng.choice(rules) if rules and rng.random() < 0.5 else None
        rport = rule.remote_port if rule is not None and rule.remote_port else rng.randint(1, 65535)
        lport = rule.local_port if rule is not None and rule.local_port else rng.randint(1, 65535)
        lookups.append(("tcp", _inside(rng, network), rport, _local(rng, 4), lport))
    return Workload("ports", rules, lookups)


def nested(n: int, q: int, seed: int = 0) -> Workload:
    """Chains /8 > /9 > ... > /32 whose priorities favour the shorter prefixes."""
    rng = random.Random(f"nested-{n}-{seed}")
    rules: list[Rule] = []
    chains = []
    while len(rules) < n:
        base = rng.randrange(0x01000000, 0xE0000000)
        chains.append(base)
        for plen in range(8, 33):
            if len(rules) == n:
                break
            rules.append(
                _rule(
                    len(rules) + 1,
                    proto=_proto(rng),
                    remote=ipaddress.IPv4Network((base >> (32 - plen) << (32 - plen), plen)),
                    remote_port=rng.randint(1024, 65535) if rng.random() < 0.2 else 0,
                    priority=plen - 8 + rng.randint(0, 2),
                )
            )
    lookups: list[Query] = []
    for _ in range(q):
        remote = (
            str(ipaddress.IPv4Address(rng.choice(chains))) if chains and rng.random() < 0.8 else _random_address(rng, 4)
        )
        lookups.append(
            (rng.choice(BUILTIN_PROTOCOLS), remote, rng.randint(1024, 65535), _local(rng, 4), rng.choice(_LOCAL_PORTS))
        )
    return Workload("nested", rules, lookups)


WORKLOADS: dict[str, Callable[..., Workload]] = {"carrier": carrier, "ports": ports, "nested": nested}


def batch(lookups: Sequence[Query], version: int) -> Batch:
    """The lookups of one family as ``lookup_many`` buffers: IPv4 as ``array('I')``
    host-order integers, IPv6 as 16 packed bytes per address."""
    chosen = [item for item in lookups if ipaddress.ip_address(item[1]).version == version]

    def addresses(texts: Sequence[str]) -> array.array[int] | bytes:
        if version == 4:
            return array.array("I", [int(ipaddress.IPv4Address(t)) for t in texts])
        return b"".join(
            ipaddress.ip_address(t).packed
            if ipaddress.ip_address(t).version == 6
            else ipaddress.IPv6Address("::ffff:" + t).packed
            for t in texts
        )

    # The casts: the workloads' lookups name known protocols and a local
    # address, where a Query in general may have None for either.
    return Batch(
        array.array("H", cast(list[int], [protocol_code(item[0]) for item in chosen])),
        addresses([item[1] for item in chosen]),
        array.array("H", [item[2] for item in chosen]),
        addresses(cast(list[str], [item[3] for item in chosen])),
        array.array("H", [item[4] for item in chosen]),
    )
