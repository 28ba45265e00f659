"""A network as ints, and the rule that an IPv4-mapped IPv6 address is the IPv4 address.

docs/behaviour.md#which-rule-wins: a connection that presents ``::ffff:192.0.2.1``
(what a dual-stack socket reports for an IPv4 peer) is matched as ``192.0.2.1``.
:func:`unmap_ipv6` is that rule, in Python, for both sides of a match: the
rule's networks (:meth:`tcpmgm.model.rule.Rule.from_row`) and the connection's
addresses (``tcpmgm.matching._addr_py``), so that the two always agree.
"""

from __future__ import annotations

__all__ = ["MAPPED", "Prefix", "bits", "inside", "last", "unmap_ipv6"]

Prefix = tuple[int, int, int]  # (4 or 6, network address as an int, prefix length)

MAPPED: Prefix = (6, 0xFFFF << 32, 96)  # ::ffff:0:0/96, the IPv4-mapped IPv6 space


def bits(version: int) -> int:
    """The width of an address of IP ``version`` (4 or 6)."""
    return 32 if version == 4 else 128


def inside(prefix: Prefix, network: Prefix) -> bool:
    """Whether every address of ``prefix`` is in ``network``."""
    if prefix[0] != network[0] or prefix[2] < network[2]:
        return False
    shift = bits(network[0]) - network[2]
    return prefix[1] >> shift == network[1] >> shift


def last(prefix: Prefix) -> int:
    """The last address of ``prefix`` (its first is ``prefix[1]``, host bits clear)."""
    return prefix[1] | ((1 << (bits(prefix[0]) - prefix[2])) - 1)


def unmap_ipv6(value: int, length: int = 128) -> Prefix:
    """The IPv6 network ``value``/``length`` (host bits clear; one address: /128)
    as a :data:`Prefix`; inside ``::ffff:0:0/96`` it is the IPv4 network it maps.

    A mapped network of /96 or longer is an IPv4 network of ``length - 96``;
    a shorter one reaches beyond the mapped space and stays IPv6.
    """
    if length >= MAPPED[2] and value >> 32 == MAPPED[1] >> 32:
        return 4, value & 0xFFFFFFFF, length - 96
    return 6, value, length
