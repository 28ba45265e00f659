"""Whether a rule matches a connection (docs/behaviour.md#which-rule-wins), in Python.

One predicate, :func:`matches`, for everything in Python that asks: the
reference matcher's lookups and ``explain``, and the lint, which asks it of
rules instead of connections (a rule's network is the set of its addresses).
The compiled matcher answers the same question in C; the differential tests
hold the two together.
"""

from __future__ import annotations

from typing import NamedTuple

from ..model.prefix import Prefix, bits, inside
from ..model.protocols import protocol_code
from ..model.rule import Rule

__all__ = ["Filters", "host_prefix", "matches"]


class Filters(NamedTuple):
    """A rule's filters as a match compares them; ``None`` and 0 are "any"."""

    # The protocol's code (tcpmgm.model.protocols), 0 for any; None for a name
    # never registered (a Rule made by hand), which only a lookup for any matches.
    proto: int | None
    remote: Prefix | None
    remote_port: int
    local: Prefix | None
    local_port: int

    @classmethod
    def of(cls, rule: Rule) -> Filters:
        return cls(protocol_code(rule.proto), rule.remote_prefix, rule.remote_port, rule.local_prefix, rule.local_port)


def host_prefix(address: tuple[int, int] | None) -> Prefix | None:
    """A connection's address, ``(version, int)`` as ``tcpmgm.matching.addresses`` gives it, as a one-address prefix."""
    if address is None:
        return None
    version, value = address
    return version, value, bits(version)


def _inside(prefix: Prefix | None, network: Prefix | None) -> bool:
    """Whether every address of ``prefix`` is in ``network`` (``None``: any).
    An unknown address (``None``) is in no network but "any"."""
    if network is None:
        return True
    return prefix is not None and inside(prefix, network)


def matches(
    filters: Filters,
    proto: int | None,
    remote: Prefix | None,
    remote_port: int,
    local: Prefix | None,
    local_port: int,
) -> bool:
    """Whether a rule with ``filters`` matches the connection: every filter
    matches.  ``proto`` is the connection's protocol code (0: a lookup for any
    protocol, which every rule's protocol matches; ``None`` as in
    :class:`Filters`, for the lint); an address is a
    :func:`host_prefix`, or a wider prefix for every address in it, and
    ``None`` when unknown; a port is 0 when unknown.  Only "any" matches an
    unknown address or port."""
    rule_proto, rule_remote, rule_rport, rule_local, rule_lport = filters
    return (
        (rule_proto == 0 or proto == 0 or rule_proto == proto)
        and (rule_rport == 0 or rule_rport == remote_port)
        and (rule_lport == 0 or rule_lport == local_port)
        and _inside(remote, rule_remote)
        and _inside(local, rule_local)
    )
