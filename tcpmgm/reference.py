"""The reference matcher: SPEC section 4 written as directly as Python allows.

Rules are sorted once by :meth:`Rule.key`; a lookup returns the first rule in
that order whose every filter matches.  It is slow (linear in the number of
rules) and meant to be obviously right: it is the oracle the compiled
classifier is tested against, and what ``TCPMGM_NO_EXTENSIONS=1`` selects.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from . import _addr_py
from ._text import aligned
from .errors import RuleError, shown
from .profile import Profile, default_profile, format_attrs
from .protocols import protocol_code
from .rule import Network, Rule, key_difference

__all__ = ["ReferenceMatcher", "Explanation", "explanation", "check_unique_ids", "lookup_proto", "lookup_port"]


class Explanation(NamedTuple):
    """What ``explain`` found: the winner (``None``: default profile), its profile,
    and every matching rule in key order with the reason it lost."""

    winner: Optional[Rule]
    profile: Profile
    matches: Tuple[Tuple[Rule, str], ...]

    def summary(self) -> str:
        """The winner on one line, then the profile's attributes as an aligned table."""
        head = f"rule {self.winner.describe()}" if self.winner else "rule 0: no rule matches (default profile)"
        values = [
            (name, (format_attrs(value) or "-") if name == "attrs" else int(value))
            for name, value in self.profile.values().items()
        ]
        return f"{head}\n{aligned([('attribute', 'value'), *values])}"

    def __str__(self) -> str:
        """:meth:`summary`, then each matching rule in key order with why it lost
        (what ``tcpmgm match --explain`` prints)."""
        if not self.matches:
            return self.summary()
        lines = [self.summary(), "", "matching rules, best first:"]
        lines += [f"{rule.describe()}: {reason}" for rule, reason in self.matches]
        return "\n".join(lines)


def explanation(matches: List[Rule], default: Profile) -> Explanation:
    """The :class:`Explanation` for ``matches``, the matching rules in key order."""
    if not matches:
        return Explanation(None, default, ())
    winner = matches[0]
    reasons = tuple(
        (rule, "winner" if rule is winner else key_difference(rule, winner)) for rule in matches
    )
    return Explanation(winner, winner.profile, reasons)


def check_unique_ids(rules: Iterable[Rule]) -> List[Rule]:
    """The rules as a list; :class:`RuleError` on the first repeated id."""
    seen: Dict[int, Rule] = {}
    out = []
    for rule in rules:
        if not isinstance(rule, Rule):
            raise TypeError(f"rules must be tcpmgm.Rule objects, got {type(rule).__name__}")
        if rule.id in seen:
            raise RuleError(rule.id, "id", rule.id, "duplicate id")
        seen[rule.id] = rule
        out.append(rule)
    return out


def lookup_proto(proto: Any) -> int:
    """The protocol code a lookup asks for (0: any); ``ValueError`` if unknown."""
    if proto is not None and not isinstance(proto, str):
        raise TypeError(f"proto: expected str or None, got {type(proto).__name__}")
    code = protocol_code(proto)
    if code is None:
        raise ValueError(f"proto: unknown protocol {shown(proto)}")
    return code


def lookup_port(port: Any, argument: str) -> int:
    if port is None:
        return 0
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{argument}: expected int, got {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"{argument}: {shown(port)} is outside 0..65535")
    return port


def _net_filter(network: Optional[Network]) -> Optional[Tuple[int, int, int]]:
    if network is None:
        return None
    bits = network.max_prefixlen
    mask = ((1 << network.prefixlen) - 1) << (bits - network.prefixlen)
    return network.version, int(network.network_address), mask


def _inside(address: Optional[Tuple[int, int]], net: Optional[Tuple[int, int, int]]) -> bool:
    if net is None:
        return True
    return address is not None and address[0] == net[0] and address[1] & net[2] == net[1]


class ReferenceMatcher:
    """Pure-Python matcher: same API as the compiled :class:`tcpmgm.Matcher`."""

    def __init__(self, rules: Iterable[Rule] = (), *, default: Optional[Profile] = None) -> None:
        ordered = sorted(check_unique_ids(rules), key=Rule.key)
        self._rules: Tuple[Rule, ...] = tuple(ordered)
        self._by_id = {rule.id: rule for rule in ordered}
        self._default = (default if default is not None else default_profile()).replace(id=0)
        self._filters = [
            (protocol_code(r.proto), _net_filter(r.remote), r.remote_port,
             _net_filter(r.local), r.local_port)
            for r in ordered
        ]

    # -- container protocol --------------------------------------------------
    def __len__(self) -> int:
        return len(self._rules)

    def __iter__(self) -> Iterator[Rule]:
        """The rules in key order (the order in which they are tried)."""
        return iter(self._rules)

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._by_id

    def get(self, rule_id: int, default: Optional[Rule] = None) -> Optional[Rule]:
        return self._by_id.get(rule_id, default)

    @property
    def default(self) -> Profile:
        return self._default

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self)} rules>"

    # -- lookups -------------------------------------------------------------
    def _matching(
        self, proto: Optional[str], remote_ip: Any, remote_port: int, local_ip: Any, local_port: int,
    ) -> Iterator[Rule]:
        want_proto = lookup_proto(proto)
        remote = _addr_py.normalize(remote_ip, "remote_ip")
        rport = lookup_port(remote_port, "remote_port")
        local = _addr_py.normalize(local_ip, "local_ip")
        lport = lookup_port(local_port, "local_port")
        for rule, (r_proto, r_remote, r_rport, r_local, r_lport) in zip(self._rules, self._filters):
            if (
                (r_proto == 0 or want_proto == 0 or r_proto == want_proto)
                and _inside(remote, r_remote)
                and (r_rport == 0 or r_rport == rport)
                and _inside(local, r_local)
                and (r_lport == 0 or r_lport == lport)
            ):
                yield rule

    def lookup(
        self, proto: Optional[str], remote_ip: Any, remote_port: int = 0,
        local_ip: Any = None, local_port: int = 0,
    ) -> Profile:
        """The profile of the winning rule, or the default profile (id 0)."""
        for rule in self._matching(proto, remote_ip, remote_port, local_ip, local_port):
            return rule.profile
        return self._default

    def explain(
        self, proto: Optional[str], remote_ip: Any, remote_port: int = 0,
        local_ip: Any = None, local_port: int = 0,
    ) -> Explanation:
        """The winner and every matching rule in key order, with why each lost."""
        return explanation(list(self._matching(proto, remote_ip, remote_port, local_ip, local_port)), self._default)
