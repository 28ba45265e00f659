"""A rule ("TCP path", one row of the ``tcp_mgm`` table, SPEC section 3) and its key (section 4).

:meth:`Rule.from_row` is the only place where table data becomes a rule: the
loader, the CLI's ``add`` and the tests all go through it, so every caller gets
the same validation and the same messages.  :meth:`Rule.key` is the one
definition of which rule wins; the reference matcher sorts by it and the
compiled classifier ranks by it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from decimal import Decimal
from typing import Any, Mapping, Optional, Tuple, Union

from .errors import RuleError, RuleWarning
from .profile import (
    PROFILE_FIELDS, Profile, default_profile, format_attrs, parse_attrs, parse_integer,
)
from .protocols import ANY, NOT_TCP_PROTOCOLS, protocol_code

__all__ = ["Rule", "Network", "FILTER_COLUMNS", "COLUMNS", "key_difference"]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

FILTER_COLUMNS: Tuple[str, ...] = (
    "id", "proto", "remote_addr", "remote_port", "local_addr", "local_port", "priority",
)
# Every column a rule may have, in table order (parallel_read: schema version 1 only).
COLUMNS: Tuple[str, ...] = FILTER_COLUMNS + PROFILE_FIELDS

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_UNLIMITED_INT_COLUMNS = {"priority"}          # may be negative
_FLAG_COLUMNS = {"no_new_conn", "keepalive"}    # any non-zero is 1
_RANGED_COLUMNS = {"alias_mode": (0, 2), "parallel_read": (0, 2)}


@dataclasses.dataclass(frozen=True)
class Rule:
    """One validated rule.  ``proto``, ``remote`` and ``local`` are ``None`` for "any"."""

    id: int
    proto: Optional[str] = None
    remote: Optional[Network] = None
    remote_port: int = 0
    local: Optional[Network] = None
    local_port: int = 0
    priority: int = 0
    profile: Profile = dataclasses.field(default_factory=default_profile, compare=False)
    local_tag: Optional[str] = None     # the socket tag the row named, if any
    warnings: Tuple[RuleWarning, ...] = dataclasses.field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.profile.id != self.id:
            object.__setattr__(self, "profile", self.profile.replace(id=self.id))

    # -- SPEC section 4 ------------------------------------------------------
    def key(self) -> Tuple[int, ...]:
        """Sort key: among the rules matching a connection, the smallest wins."""
        remote, local = self.remote, self.local      # read once: matchers sort 10^6 rules by this
        return (
            self.priority,
            self.proto is None,
            remote is None,
            -(remote.prefixlen if remote is not None else 0),
            self.remote_port == 0,
            local is None,
            -(local.prefixlen if local is not None else 0),
            self.local_port == 0,
            self.id,
        )

    @property
    def family(self) -> Optional[int]:
        """4 or 6 when the rule names an address, else ``None``."""
        net = self.remote if self.remote is not None else self.local
        return net.version if net is not None else None

    # -- construction --------------------------------------------------------
    @classmethod
    def from_row(
        cls,
        row: Mapping[str, Any],
        *,
        listeners: Optional[Mapping[str, Any]] = None,
        defaults: Optional[Profile] = None,
    ) -> "Rule":
        """Validate one table row (column name -> value as a DB-API cursor gives it).

        Missing or NULL profile columns take the value of ``defaults`` (the
        current default profile when omitted).  ``listeners`` maps socket tags
        to local addresses, for a ``local_addr`` that names a listener.
        Raises :class:`RuleError` naming the id, column, value and reason.
        """
        defaults = defaults if defaults is not None else default_profile()
        rule_id = _rule_id(row.get("id"))
        warnings: list = []

        proto = _proto(rule_id, row.get("proto"))
        remote = _network(rule_id, "remote_addr", row.get("remote_addr"), warnings)
        local_raw = row.get("local_addr")
        local_tag = None
        local = _local(rule_id, local_raw, listeners, warnings)
        if isinstance(local, tuple):
            local, local_tag = local
        if remote is not None and local is not None and remote.version != local.version:
            raise RuleError(
                rule_id, "local_addr", _shown(local_raw),
                f"IPv{local.version} local address with an IPv{remote.version} remote address",
            )
        remote_port = _port(rule_id, "remote_port", row.get("remote_port"))
        local_port = _port(rule_id, "local_port", row.get("local_port"))
        priority = _integer(rule_id, "priority", row.get("priority"), 0)

        values = {}
        for name in PROFILE_FIELDS:
            if name == "attrs":
                values[name] = _attrs(rule_id, row.get("attrs"), defaults.attrs)
            else:
                values[name] = _integer(rule_id, name, row.get(name), getattr(defaults, name))
        profile = Profile(id=rule_id, **values)
        return cls(
            id=rule_id, proto=proto, remote=remote, remote_port=remote_port,
            local=local, local_port=local_port, priority=priority, profile=profile,
            local_tag=local_tag, warnings=tuple(warnings),
        )

    def to_row(self) -> dict:
        """The row that :meth:`from_row` would turn back into this rule."""
        row = {
            "id": self.id,
            "proto": self.proto or ANY,
            "remote_addr": _net_text(self.remote),
            "remote_port": self.remote_port,
            "local_addr": self.local_tag or _net_text(self.local),
            "local_port": self.local_port,
            "priority": self.priority,
        }
        for name, value in self.profile.values().items():
            row[name] = (format_attrs(value) or None) if name == "attrs" else int(value)
        return row

    def describe(self) -> str:
        """A one-line summary of the filters, for messages and tables."""
        remote = _net_text(self.remote) or "any"
        local = self.local_tag or _net_text(self.local) or "any"
        return (
            f"#{self.id} {self.proto or ANY} {remote}:{self.remote_port or '*'} "
            f"<- {local}:{self.local_port or '*'} prio {self.priority}"
        )


# -- why a rule loses to another (used by every explain) --------------------

_KEY_LEVELS = (
    "a higher priority value",
    "protocol 'any' where the winner names a protocol",
    "remote 'any' where the winner names a remote network",
    "a shorter remote prefix",
    "remote port 'any' where the winner names a port",
    "local 'any' where the winner names a local address",
    "a shorter local prefix",
    "local port 'any' where the winner names a port",
    "a higher id (full tie)",
)


def key_difference(loser: Rule, winner: Rule) -> str:
    """Why ``loser`` ranks after ``winner``: the first level of the key that differs."""
    for level, (mine, theirs) in enumerate(zip(loser.key(), winner.key())):
        if mine != theirs:
            reason = _KEY_LEVELS[level]
            if level == 0:
                return f"{reason} ({loser.priority} > {winner.priority})"
            if level == 3:
                return f"{reason} (/{loser.remote.prefixlen} < /{winner.remote.prefixlen})"
            if level == 6:
                return f"{reason} (/{loser.local.prefixlen} < /{winner.local.prefixlen})"
            if level == 8:
                return f"{reason} ({loser.id} > {winner.id})"
            return reason
    return "it is the winner"


# -- column parsers ----------------------------------------------------------

def _shown(value: Any) -> Any:
    """The value as a message should show it (bytes decoded, CHAR padding kept)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return value


def _text(rule_id: Any, column: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise RuleError(rule_id, column, _shown(value), "not valid UTF-8 text") from None
    if not isinstance(value, str):
        raise RuleError(rule_id, column, value, f"expected text, got {type(value).__name__}")
    return value.strip()


def _as_int(rule_id: Any, column: str, value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        # NUMERIC columns can hold NaN and Infinity (PostgreSQL), which int() refuses.
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        raise RuleError(rule_id, column, value, "not an integer")
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise RuleError(rule_id, column, value, "not an integer")
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        text = _text(rule_id, column, value)
        try:
            return parse_integer(text)
        except ValueError:
            raise RuleError(rule_id, column, _shown(value), "not an integer") from None
    raise RuleError(rule_id, column, value, f"expected an integer, got {type(value).__name__}")


def _rule_id(value: Any) -> int:
    # An unusable id is reported as rule_id None (RuleError's contract); the value shows it.
    if value is None:
        raise RuleError(None, "id", None, "id is NULL")
    rule_id = _as_int(None, "id", value)
    if rule_id <= 0:
        raise RuleError(None, "id", value, "id must be a positive integer (0 is the default profile)")
    return rule_id


def _integer(rule_id: int, column: str, value: Any, default: Any) -> int:
    if value is None:
        return int(default)
    number = _as_int(rule_id, column, value)
    if column in _UNLIMITED_INT_COLUMNS:
        return number
    if number < 0:
        raise RuleError(rule_id, column, value, "must not be negative")
    if column in _FLAG_COLUMNS:
        return int(number != 0)
    bounds = _RANGED_COLUMNS.get(column)
    if bounds is not None and not bounds[0] <= number <= bounds[1]:
        raise RuleError(rule_id, column, value, f"must be between {bounds[0]} and {bounds[1]}")
    return number


def _port(rule_id: int, column: str, value: Any) -> int:
    if value is None:
        return 0
    port = _as_int(rule_id, column, value)
    if not 0 <= port <= 65535:
        raise RuleError(rule_id, column, value, "port must be between 0 (any) and 65535")
    return port


def _proto(rule_id: int, value: Any) -> Optional[str]:
    text = _text(rule_id, "proto", value)
    if text is None:
        raise RuleError(rule_id, "proto", None, "proto is NULL (use 'any')")
    name = text.lower()
    if name in NOT_TCP_PROTOCOLS:
        raise RuleError(rule_id, "proto", _shown(value), f"{name!r} is not a TCP-based protocol")
    code = protocol_code(name)
    if code is None:
        raise RuleError(rule_id, "proto", _shown(value), "unknown protocol")
    return None if code == 0 else name


def _parse_network(rule_id: int, column: str, raw: Any, text: str, warnings: list) -> Network:
    address, slash, length = text.partition("/")
    if "%" in address:
        raise RuleError(rule_id, column, _shown(raw), "an IPv6 zone has no meaning in a rule")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise RuleError(rule_id, column, _shown(raw), "not an IPv4 or IPv6 address") from None
    if slash:
        if not (length.isascii() and length.isdigit()):
            raise RuleError(rule_id, column, _shown(raw), "prefix length is not a number")
        prefixlen = int(length)
        if prefixlen > ip.max_prefixlen:
            raise RuleError(
                rule_id, column, _shown(raw),
                f"prefix length /{prefixlen} is out of range for IPv{ip.version} (0..{ip.max_prefixlen})",
            )
    else:
        prefixlen = ip.max_prefixlen
    network = ipaddress.ip_network((ip, prefixlen), strict=False)
    host_bits = network.network_address != ip
    # Lookups match an IPv4-mapped address as IPv4 (SPEC 4), so a rule written
    # in mapped form must live among the IPv4 rules to ever match.
    if network.version == 6 and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        network = ipaddress.IPv4Network(
            (int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96)
        )
    if host_bits:
        warnings.append(RuleWarning(
            rule_id, column, _shown(raw), f"host bits set under the prefix; stored as {network}",
        ))
    return network


def _network(rule_id: int, column: str, value: Any, warnings: list) -> Optional[Network]:
    text = _text(rule_id, column, value)
    if text is None or text == "" or text.lower() == ANY:
        return None
    return _parse_network(rule_id, column, value, text, warnings)


def _looks_like_address(text: str) -> bool:
    return any(ch in text for ch in ":/") or all(ch.isdigit() or ch == "." for ch in text)


def _local(
    rule_id: int, value: Any, listeners: Optional[Mapping[str, Any]], warnings: list,
) -> Union[None, Network, Tuple[Network, str]]:
    text = _text(rule_id, "local_addr", value)
    if text is None or text == "" or text.lower() == ANY:
        return None
    if _looks_like_address(text):
        return _parse_network(rule_id, "local_addr", value, text, warnings)
    if listeners is None or text not in listeners:
        known = ", ".join(sorted(listeners)) if listeners else "none configured"
        raise RuleError(
            rule_id, "local_addr", _shown(value),
            f"neither an address nor a known socket tag (listeners: {known})",
        )
    listener = listeners[text]
    try:
        ip = ipaddress.ip_address(str(listener).partition("%")[0])
    except ValueError:
        raise RuleError(
            rule_id, "local_addr", _shown(value),
            f"socket tag {text!r} maps to {listener!r}, which is not an address",
        ) from None
    return _parse_network(rule_id, "local_addr", value, str(ip), warnings), text


def _attrs(rule_id: int, value: Any, default: Mapping[str, int]) -> Mapping[str, int]:
    text = _text(rule_id, "attrs", value)
    if text is None:
        return default
    try:
        return parse_attrs(text)
    except ValueError as exc:
        raise RuleError(rule_id, "attrs", _shown(value), str(exc)) from None


def _net_text(network: Optional[Network]) -> Optional[str]:
    if network is None:
        return None
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)
