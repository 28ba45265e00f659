"""OpenSIPS's order restated from its C source, as plainly as possible, and tables to test it on.

The restatement is written apart from ``tcpmgm.opensips.order``: it follows
the C code statement by statement, where the module is written for speed.
Paths are structs with 16-byte masks (``struct net``: an IPv4 mask's bytes
past the fourth are 0) and the comparator walks them byte by byte;
``msort_with_tmp`` works in place on one array with a temporary buffer, as
glibc 2.36's stdlib/msort.c does; a lookup is ``tcp_mgm_get_profile``'s loop,
with ``matchnet``'s family check.  The facts: docs/opensips.md#the-order-opensips-applies.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from hypothesis import strategies as st

from tcpmgm import Rule

# Several named protocols at one priority is what makes the comparator non-transitive.
PROTOS = (None, "tcp", "tls", "ws")
PORTS = (0, 5060, 5061)
# Nested prefixes: every remote network is a prefix of one of these addresses.
V4_BASES = ("10.0.0.0", "10.0.0.128", "10.1.0.0", "10.1.2.0")
V4_LENGTHS = (8, 16, 24, 25, 32)
V6_BASES = ("2001:db8::", "2001:db8:1::", "2001:db8:1:1::")
V6_LENGTHS = (0, 32, 48, 64, 128)
LOCALS = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8:ffff::1",)}


@dataclasses.dataclass
class CPath:
    """``struct tcp_path``: what the comparator and the lookup read (``*_any`` as 1/0)."""

    id: int
    priority: int
    proto: str | None  # None: PROTO_NONE ("any")
    remote_any: int
    remote_af: int
    remote_ip: bytes  # 16 bytes, the address's len bytes first
    remote_mask: bytes
    remote_port: int
    local_any: int
    local_af: int
    local_ip: bytes
    local_mask: bytes
    local_port: int


def _net(network: Any) -> tuple[int, int, bytes, bytes]:
    """(any, af, ip, mask) as ``mk_net_bitlen`` leaves them: the mask memset to 0, then its bits."""
    if network is None:
        return 1, 0, bytes(16), bytes(16)
    length = network.max_prefixlen // 8
    bits = network.prefixlen
    mask = bytearray(16)
    for r in range(bits // 8):
        mask[r] = 0xFF
    if bits % 8:
        mask[bits // 8] = (~((1 << (8 - bits % 8)) - 1)) & 0xFF
    ip = network.network_address.packed.ljust(16, b"\0")
    assert len(network.network_address.packed) == length
    return 0, network.version, ip, bytes(mask)


def cpath(rule: Rule) -> CPath:
    r_any, r_af, r_ip, r_mask = _net(rule.remote)
    l_any, l_af, l_ip, l_mask = _net(rule.local)
    return CPath(
        rule.id,
        rule.priority,
        rule.proto,
        r_any,
        r_af,
        r_ip,
        r_mask,
        rule.remote_port,
        l_any,
        l_af,
        l_ip,
        l_mask,
        rule.local_port,
    )


def tcp_path_comparator(a: CPath, b: CPath) -> int:
    if a.priority > b.priority:
        return 1
    elif a.priority < b.priority:
        return -1
    if a.proto is not None and b.proto is not None and a.proto != b.proto:
        return 0
    if a.proto is None and b.proto is not None:
        return 1
    elif a.proto is not None and b.proto is None:
        return -1
    if a.remote_any and not b.remote_any:
        return 1
    elif not a.remote_any and b.remote_any:
        return -1
    if not a.remote_any:
        lim = 4 if a.remote_af == 4 else 16
        for i in range(lim):
            if a.remote_mask[i] > b.remote_mask[i]:
                return -1
            elif a.remote_mask[i] < b.remote_mask[i]:
                return 1
    if not a.remote_port and b.remote_port:
        return 1
    elif a.remote_port and not b.remote_port:
        return -1
    if a.local_any and not b.local_any:
        return 1
    elif not a.local_any and b.local_any:
        return -1
    if not a.local_any:
        lim = 4 if a.local_af == 4 else 16
        for i in range(lim):
            if a.local_mask[i] > b.local_mask[i]:
                return -1
            elif a.local_mask[i] < b.local_mask[i]:
                return 1
    if not a.local_port and b.local_port:
        return 1
    elif a.local_port and not b.local_port:
        return -1
    return 0


def msort_with_tmp(b: list[Any], start: int, n: int, tmp: list[Any], cmp: Any) -> None:
    """glibc's msort_with_tmp on ``b[start:start+n]`` (indices for the C pointers)."""
    if n <= 1:
        return
    n1 = n // 2
    n2 = n - n1
    b1 = start
    b2 = start + n1
    msort_with_tmp(b, b1, n1, tmp, cmp)
    msort_with_tmp(b, b2, n2, tmp, cmp)
    t = 0
    while n1 > 0 and n2 > 0:
        if cmp(b[b1], b[b2]) <= 0:
            tmp[t] = b[b1]
            b1 += 1
            n1 -= 1
        else:
            tmp[t] = b[b2]
            b2 += 1
            n2 -= 1
        t += 1
    if n1 > 0:
        tmp[t : t + n1] = b[b1 : b1 + n1]
    b[start : start + n - n2] = tmp[: n - n2]


def qsort(paths: list[CPath]) -> list[CPath]:
    array = list(paths)
    msort_with_tmp(array, 0, len(array), [None] * len(array), tcp_path_comparator)
    return array


def _c_ip(address: str | None) -> tuple[int, bytes]:
    """``sockaddr2ip_addr``: the family as given (no unmapping) and the address bytes."""
    if address is None:
        return 0, bytes(16)  # an unknown address: matches no network (matchnet's family check)
    ip = ipaddress.ip_address(address)
    return ip.version, ip.packed.ljust(16, b"\0")


def matchnet(af: int, ip: bytes, net_af: int, net_ip: bytes, net_mask: bytes) -> int:
    if af == net_af:
        for r in range(0, 4 if af == 4 else 16, 4):
            if bytes(x & y for x, y in zip(ip[r : r + 4], net_mask[r : r + 4])) != net_ip[r : r + 4]:
                return 0
        return 1
    return -1


def get_profile(paths: list[CPath], proto: str | None, remote: str, rport: int, local: str | None, lport: int) -> int:
    """``tcp_mgm_get_profile``'s loop: the id of the first path that matches, 0 for none."""
    r_af, r_ip = _c_ip(remote)
    l_af, l_ip = _c_ip(local)
    for path in paths:
        if path.proto is not None and proto is not None and path.proto != proto:
            continue
        if (
            (not path.remote_port or path.remote_port == rport)
            and (not path.local_port or path.local_port == lport)
            and (path.remote_any or matchnet(r_af, r_ip, path.remote_af, path.remote_ip, path.remote_mask) == 1)
            and (path.local_any or matchnet(l_af, l_ip, path.local_af, path.local_ip, path.local_mask) == 1)
        ):
            return path.id
    return 0


# -- tables ------------------------------------------------------------------------------------


def _network(version: int, base: str, length: int) -> Any:
    return ipaddress.ip_network(f"{base}/{length}", strict=False)


@st.composite
def filters(draw: Any) -> dict[str, Any]:
    """The filters of one rule: nested prefixes of both families, few ports and locals."""
    version = draw(st.sampled_from((4, 4, 6)))
    remote = None
    if draw(st.integers(0, 4)):
        bases, lengths = (V4_BASES, V4_LENGTHS) if version == 4 else (V6_BASES, V6_LENGTHS)
        remote = _network(version, draw(st.sampled_from(bases)), draw(st.sampled_from(lengths)))
    local = None
    if not draw(st.integers(0, 3)):
        local = ipaddress.ip_network(draw(st.sampled_from(LOCALS[version])))
    return {
        "proto": draw(st.sampled_from(PROTOS)),
        "remote": remote,
        "remote_port": draw(st.sampled_from(PORTS)),
        "local": local,
        "local_port": draw(st.sampled_from((0, 0, 5060))),
        "priority": draw(st.sampled_from((0, 0, 0, 1))),
    }


@st.composite
def tables(draw: Any, min_size: int = 0, max_size: int = 14) -> list[Rule]:
    """Rules in a database order: distinct ids in a shuffled order, repeated filters (ties) likely."""
    size = draw(st.integers(min_size, max_size))
    pool = draw(st.lists(filters(), min_size=1, max_size=max(1, size)))
    ids = draw(st.permutations(range(1, size + 1)))
    return [Rule(id=rule_id, **draw(st.sampled_from(pool))) for rule_id in ids]


def connection_grid(rules: list[Rule]) -> list[tuple[str | None, str, int, str | None, int]]:
    """Connections around the tables' addresses: each base and its neighbours, every port and protocol."""
    remotes: set[str] = set()
    for base in (*V4_BASES, *V6_BASES):
        ip = ipaddress.ip_address(base)
        for delta in (-1, 0, 1, 200, 70000):
            remotes.add(str(ip + delta))
    remotes |= {"11.0.0.1", "2001:db9::1", "::ffff:10.1.2.3"}
    for rule in rules:
        if rule.remote is not None:
            remotes.add(str(rule.remote.network_address))
            remotes.add(str(rule.remote.broadcast_address))
    grid = []
    for remote in sorted(remotes):
        version = ipaddress.ip_address(remote).version
        for local in (None, *LOCALS[version], "192.0.2.9" if version == 4 else "2001:db8:ffff::9"):
            for proto in (*PROTOS, "wss"):
                for rport in (5060, 5061, 7000):
                    for lport in (5060, 5062):
                        grid.append((proto, remote, rport, local, lport))
    return grid
