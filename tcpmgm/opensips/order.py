"""The order real OpenSIPS applies to a ``tcp_mgm`` table, emulated (docs/opensips.md#the-order-opensips-applies).

OpenSIPS (``modules/tcp_mgm`` of OpenSIPS 4.1.0-dev) sorts the paths it read
with glibc's ``qsort`` and its own comparator, then answers a connection with
the first path of the sorted array that matches.  glibc's ``qsort`` (2.36) is a
top-down merge sort; the comparator returns 0 for two paths of different named
protocols, whatever else differs, so it is not transitive and the array is not
the documented order (docs/behaviour.md#which-rule-wins).  :class:`OpenSIPSOrder`
reproduces both steps: :func:`merge_sort` is glibc's merge, :func:`compare_paths`
the comparator, and a lookup is the first match of the sorted array.

A linear scan's first match is the matching path with the smallest position.
So a lookup asks a :class:`~tcpmgm.Matcher` built from the paths with each
path's priority replaced by its position: its winner, the matching rule of
the smallest key, is the matching path of the smallest position, at the
matcher's speed.  Only a connection address presented as IPv4-mapped IPv6,
which OpenSIPS (unlike tcpmgm) keeps as IPv6, takes the scan itself.
"""

from __future__ import annotations

import array
import dataclasses
import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

from ..matching.addresses import normalize
from ..matching.arguments import check_unique_ids, lookup_port, lookup_proto
from ..matching.filters import Filters, host_prefix, matches
from ..matching.matcher import Matcher
from ..model.prefix import MAPPED, Prefix
from ..model.profile import Profile, default_profile
from ..model.rule import Rule

__all__ = ["OpenSIPSOrder", "PathKey", "compare_paths", "merge_sort", "path_key"]

_T = TypeVar("_T")


class PathKey(NamedTuple):
    """What OpenSIPS's comparator reads of a path (``struct tcp_path``); ``None`` and 0 are "any"."""

    priority: int
    proto: str | None
    remote: Prefix | None
    remote_port: int
    local: Prefix | None
    local_port: int


def path_key(rule: Rule) -> PathKey:
    """The fields of ``rule`` that :func:`compare_paths` reads."""
    return PathKey(rule.priority, rule.proto, rule.remote_prefix, rule.remote_port, rule.local_prefix, rule.local_port)


def _masks(a: Prefix, b: Prefix) -> int:
    """OpenSIPS's byte-by-byte comparison of two network masks, the larger first.

    It walks as many bytes as ``a``'s address has (4 or 16); an IPv4 mask's
    bytes past the fourth are 0.  The masks are contiguous, so a byte walk is a
    comparison of the prefix lengths, of ``b``'s cut to 32 bits when ``a`` is
    IPv4: the comparison is not symmetric across families.
    """
    mine = a[2]
    theirs = min(b[2], 32) if a[0] == 4 else b[2]
    return -1 if mine > theirs else (1 if mine < theirs else 0)


def compare_paths(a: PathKey, b: PathKey) -> int:
    """OpenSIPS's ``tcp_path_comparator``: negative when ``a`` goes first, 0 when equal.

    Lower priority first; two different named protocols compare equal (0,
    whatever else differs); a named protocol before ``any``; a remote network
    before none, then the larger remote mask; a remote port before none; a
    local address before none, then the larger local mask; a local port before
    none.  Ids are never compared.
    """
    if a.priority != b.priority:
        return 1 if a.priority > b.priority else -1
    if a.proto is not None and b.proto is not None and a.proto != b.proto:
        return 0
    if (a.proto is None) != (b.proto is None):
        return 1 if a.proto is None else -1
    if (a.remote is None) != (b.remote is None):
        return 1 if a.remote is None else -1
    if a.remote is not None and b.remote is not None and (step := _masks(a.remote, b.remote)):
        return step
    if (a.remote_port == 0) != (b.remote_port == 0):
        return 1 if a.remote_port == 0 else -1
    if (a.local is None) != (b.local is None):
        return 1 if a.local is None else -1
    if a.local is not None and b.local is not None and (step := _masks(a.local, b.local)):
        return step
    if (a.local_port == 0) != (b.local_port == 0):
        return 1 if a.local_port == 0 else -1
    return 0


def merge_sort(items: Sequence[_T], cmp: Callable[[_T, _T], int]) -> list[_T]:
    """glibc 2.36's ``qsort`` (``msort_with_tmp``): top-down, the left run the
    first ``n // 2`` items, the merge taking from the left run while
    ``cmp(left, right) <= 0``.  With an inconsistent ``cmp`` the result depends
    on exactly these choices, which is why they are reproduced.  (glibc falls
    back to a quicksort only when it cannot allocate a buffer of the array's
    size, which a ``tcp_mgm`` table never comes near.)"""
    if len(items) <= 1:
        return list(items)
    half = len(items) // 2
    left, right = merge_sort(items[:half], cmp), merge_sort(items[half:], cmp)
    merged: list[_T] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if cmp(left[i], right[j]) <= 0:
            merged.append(left[i])
            i += 1
        else:
            merged.append(right[j])
            j += 1
    merged += left[i:]
    merged += right[j:]
    return merged


def _presented_ipv6(value: Any) -> bool:
    """Whether a connection address, in one of the forms lookups take, is written as IPv6."""
    if isinstance(value, str):
        return ":" in value
    if isinstance(value, ipaddress.IPv6Address):
        return True
    if isinstance(value, (bytes, bytearray)):
        return len(value) == 16
    if isinstance(value, memoryview):
        return value.nbytes == 16
    if isinstance(value, tuple) and len(value) == 2:
        return value[1] in (6, socket.AF_INET6)
    return False


def _as_opensips_sees(value: Any, argument: str) -> tuple[Prefix | None, bool]:
    """A connection address as OpenSIPS matches it (``matchnet``: the family as
    presented, no unmapping), and whether that differs from tcpmgm's reading
    (an IPv4-mapped IPv6 address, which tcpmgm matches as IPv4)."""
    address = normalize(value, argument)
    if address is not None and address[0] == 4 and _presented_ipv6(value):
        return host_prefix((6, MAPPED[1] | address[1])), True
    return host_prefix(address), False


class OpenSIPSOrder:
    """The answers OpenSIPS gives for a table: its sort of the paths, then the first match.

    ``rules`` in the order the database returned them (``SELECT`` without
    ``ORDER BY``): with a comparator that is not transitive, that order
    decides where paths land.  The emulation assumes OpenSIPS accepted every
    row (the rows it refuses are pitfalls, see docs/opensips.md).
    """

    def __init__(self, rules: Iterable[Rule], *, default: Profile | None = None) -> None:
        given = check_unique_ids(rules)
        keys = {id(rule): path_key(rule) for rule in given}
        self.paths: tuple[Rule, ...] = tuple(merge_sort(given, lambda a, b: compare_paths(keys[id(a)], keys[id(b)])))
        self.default: Profile = (default if default is not None else default_profile()).replace(id=0)
        self._by_id = {rule.id: rule for rule in self.paths}
        self._position = {rule.id: position for position, rule in enumerate(self.paths)}
        self._filters = [Filters.of(rule) for rule in self.paths]
        self._scan = Matcher(
            (dataclasses.replace(rule, priority=position) for position, rule in enumerate(self.paths)),
            default=self.default,
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self)} paths>"

    def position(self, rule_id: int) -> int:
        """Where the rule of ``rule_id`` is in :attr:`paths` (``KeyError`` if none)."""
        return self._position[rule_id]

    def lookup(
        self,
        proto: str | None,
        remote_ip: Any,
        remote_port: int = 0,
        local_ip: Any = None,
        local_port: int = 0,
    ) -> Profile:
        """OpenSIPS's profile for the connection: the first path that matches, or the default (id 0).

        The arguments are ``Matcher.lookup``'s, with the same checks."""
        remote, remote_mapped = _as_opensips_sees(remote_ip, "remote_ip")
        local, local_mapped = _as_opensips_sees(local_ip, "local_ip")
        if not (remote_mapped or local_mapped):
            return self._scan.lookup(proto, remote_ip, remote_port, local_ip, local_port)
        want = lookup_proto(proto)
        rport, lport = lookup_port(remote_port, "remote_port"), lookup_port(local_port, "local_port")
        for rule, filters in zip(self.paths, self._filters):
            if matches(filters, want, remote, rport, local, lport):
                return rule.profile
        return self.default

    def winner(
        self,
        proto: str | None,
        remote_ip: Any,
        remote_port: int = 0,
        local_ip: Any = None,
        local_port: int = 0,
    ) -> Rule | None:
        """The path OpenSIPS picks for the connection, ``None`` when none matches."""
        return self._by_id.get(self.lookup(proto, remote_ip, remote_port, local_ip, local_port).id)

    def lookup_many(
        self,
        protos: str | Any | None,
        remote_ips: Any,
        remote_ports: Any = None,
        local_ips: Any = None,
        local_ports: Any = None,
    ) -> array.array[int]:
        """``Matcher.lookup_many`` in OpenSIPS's order: the id of each row's first matching path (0: none).

        Its buffers carry IPv6 as 16 packed bytes, read as tcpmgm reads them
        (an IPv4-mapped address as IPv4): ask :meth:`lookup` for those."""
        return self._scan.lookup_many(protos, remote_ips, remote_ports, local_ips, local_ports)
