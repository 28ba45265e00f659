"""A rule ("TCP path", one row of the ``tcp_mgm`` table) and its key.

The rule: docs/behaviour.md#a-rule; its key: docs/behaviour.md#which-rule-wins.

:meth:`Rule.from_row` is the only place where table data becomes a rule: the
loader, the CLI's ``add`` and the tests all go through it, so every caller gets
the same validation and the same messages.  :meth:`Rule.key` is the one
definition of which rule wins (derived from the levels of :mod:`.key`); the
reference matcher sorts by it and the compiled classifier ranks by
:attr:`Rule.order`, the same key packed into one int when the rule is made.

What a rule keeps is declared once, by its dataclass fields: :data:`ATTRIBUTES`,
the names of its instance dict, is derived from them, and every writer of that
dict (``__post_init__``, ``_from_checked``, the compiled row reader) and its
reader by name (the compiled matcher) goes by it.

A rule keeps its networks as ints, ``remote_prefix``/``local_prefix`` =
``(version, network as int, prefix length)``: that is all a classifier reads.
The ``ipaddress`` objects of ``remote``/``local`` are built on first use,
because building them costs about 4 µs each, a third of validating a row, and a
reload of a million rows reads none of them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Union, overload

from .errors import RuleError, RuleWarning, shown
from .key import key_of as _key_of
from .key import order_of
from .limits import (
    BEYOND_EVERY_RANGE,
    ID_MAX,
    ID_MIN,
    PORT_MAX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    PROFILE_INT_MAX,
    check_id,
    check_port,
    check_priority,
    check_profile_int,
)
from .prefix import Prefix, unmap_ipv6
from .profile import (
    PROFILE_FIELDS,
    Profile,
    default_profile,
    format_attrs,
    parse_attrs,
    parse_integer,
)
from .protocols import ANY, NOT_TCP_PROTOCOLS, protocol_code

__all__ = ["ATTRIBUTES", "COLUMNS", "FILTER_COLUMNS", "Network", "Prefix", "Rule"]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

FILTER_COLUMNS: tuple[str, ...] = (
    "id",
    "proto",
    "remote_addr",
    "remote_port",
    "local_addr",
    "local_port",
    "priority",
)
# Every column a rule may have, in table order (parallel_read: schema version 1 only).
COLUMNS: tuple[str, ...] = FILTER_COLUMNS + PROFILE_FIELDS

_FLAG_COLUMNS = {"no_new_conn", "keepalive"}  # any non-zero is 1
_RANGED_COLUMNS = {"alias_mode": (0, 2), "parallel_read": (0, 2)}
# The integer profile columns in table order (attrs is the last profile field),
# so that a row with several errors reports the same one first, whatever path;
# each with the largest value that from_row may take as it is (flags: 1).
_INT_PROFILE_FIELDS = tuple(
    (name, 1 if name in _FLAG_COLUMNS else _RANGED_COLUMNS.get(name, (0, PROFILE_INT_MAX))[1])
    for name in PROFILE_FIELDS
    if name != "attrs"
)
assert PROFILE_FIELDS[-1] == "attrs"
_KEPT_AS = "kept_as"  # a network field's metadata: the attribute that keeps it as a Prefix


@dataclasses.dataclass(frozen=True)
class Rule:
    """One validated rule.  ``proto``, ``remote`` and ``local`` are ``None`` for "any".

    Besides the fields, every rule has ``remote_prefix`` and ``local_prefix``
    (:data:`Prefix` or ``None``, the networks as ints) and ``order``
    (:meth:`key` packed into one int, the same order).

    Made directly, a rule checks the ranges of :mod:`tcpmgm.limits` for its id,
    priority and ports as :meth:`from_row` does (the same :class:`RuleError`),
    so that no rule outside them reaches a matcher; the profile is taken as
    given.
    """

    id: int
    proto: str | None = None
    remote: Network | None = dataclasses.field(default=None, metadata={_KEPT_AS: "remote_prefix"})
    remote_port: int = 0
    local: Network | None = dataclasses.field(default=None, metadata={_KEPT_AS: "local_prefix"})
    local_port: int = 0
    priority: int = 0
    profile: Profile = dataclasses.field(default_factory=default_profile, compare=False)
    local_tag: str | None = None  # the socket tag the row named, if any
    warnings: tuple[RuleWarning, ...] = dataclasses.field(default=(), compare=False)

    if TYPE_CHECKING:
        # Not fields (ATTRIBUTES): __post_init__ and _from_checked put them in the instance dict.
        @property
        def remote_prefix(self) -> Prefix | None: ...
        @property
        def local_prefix(self) -> Prefix | None: ...
        @property
        def order(self) -> int: ...

    def __post_init__(self) -> None:
        check_id(self.id, self.id)
        check_priority(self.id, self.priority, self.priority)
        check_port(self.id, "remote_port", self.remote_port, self.remote_port)
        check_port(self.id, "local_port", self.local_port, self.local_port)
        if self.profile.id != self.id:
            object.__setattr__(self, "profile", self.profile.replace(id=self.id))
        fields = self.__dict__
        for network, kept_as in _NETWORK_FIELDS:
            fields[kept_as] = _prefix_of(fields[network])
        fields["order"] = order_of(self)

    # -- docs/behaviour.md#which-rule-wins ------------------------------------------------------
    def key(self) -> tuple[int, ...]:
        """Sort key: among the rules matching a connection, the smallest wins (the levels of :mod:`.key`)."""
        return _key_of(self)

    @property
    def family(self) -> int | None:
        """4 or 6 when the rule names an address, else ``None``."""
        prefix = self.remote_prefix if self.remote_prefix is not None else self.local_prefix
        return prefix[0] if prefix is not None else None

    # -- construction --------------------------------------------------------
    @classmethod
    def from_row(
        cls,
        row: Mapping[str, Any],
        *,
        listeners: Mapping[str, Any] | None = None,
        defaults: Profile | None = None,
    ) -> Rule:
        """Validate one table row (column name -> value as a DB-API cursor gives it).

        Missing or NULL profile columns take the value of ``defaults`` (the
        current default profile when omitted).  ``listeners`` maps socket tags
        to local addresses, for a ``local_addr`` that names a listener.
        Raises :class:`RuleError` naming the id, column, value and reason.
        """
        defaults = defaults if defaults is not None else default_profile()
        get = row.get
        rule_id = _rule_id(get("id"))
        warnings: list[RuleWarning] = []

        proto = _proto(rule_id, get("proto"))
        remote = _network(rule_id, "remote_addr", get("remote_addr"), warnings)
        local_raw = get("local_addr")
        local_tag = None
        local = _local(rule_id, local_raw, listeners, warnings)
        if isinstance(local, str):
            local_tag = local
            assert listeners is not None  # _local returns a tag only when listeners has it
            local = _tag_prefix(rule_id, local_raw, local_tag, listeners, warnings)
        if remote is not None and local is not None and remote[0] != local[0]:
            raise RuleError(
                rule_id,
                "local_addr",
                _shown(local_raw),
                f"IPv{local[0]} local address with an IPv{remote[0]} remote address",
            )
        remote_port = _port(rule_id, "remote_port", get("remote_port"))
        local_port = _port(rule_id, "local_port", get("local_port"))
        priority = get("priority")
        if type(priority) is not int or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            priority = _priority(rule_id, priority)  # the common case needs no checking

        # Reloads run this once per row (a million times for a big table), so
        # the plain case, a non-negative int in a column without further
        # rules, skips the general parser; everything else goes through it.
        values: dict[str, Any] = {"id": rule_id}
        for name, top in _INT_PROFILE_FIELDS:
            value = get(name)
            if type(value) is not int or value < 0 or value > top:
                value = _integer(rule_id, name, value, getattr(defaults, name))
            values[name] = value
        attrs = _attrs(rule_id, get("attrs"), defaults.attrs)
        values["attrs"] = attrs if isinstance(attrs, MappingProxyType) else MappingProxyType(dict(attrs))
        values["no_new_conn"] = bool(values["no_new_conn"])
        values["keepalive"] = bool(values["keepalive"])
        profile = Profile._from_checked(values)
        return cls._from_checked(
            rule_id,
            proto,
            remote,
            remote_port,
            local,
            local_port,
            priority,
            profile,
            local_tag,
            tuple(warnings),
        )

    @classmethod
    def _from_checked(cls, *checked: Any) -> Rule:
        """A rule from values already validated and normalised (the profile's id
        the rule's; a mapped IPv6 prefix already IPv4), one per name of
        ``_CHECKED_ATTRIBUTES`` in that order (the networks as their
        :data:`Prefix`): skips the dataclass ``__init__`` and the ``ipaddress``
        objects, which a reload of a million rows feels.  ``remote`` and
        ``local`` are made on first use."""
        if len(checked) != len(_CHECKED_ATTRIBUTES):
            raise TypeError(f"Rule._from_checked takes {len(_CHECKED_ATTRIBUTES)} values, got {len(checked)}")
        rule = object.__new__(cls)
        fields = dict(zip(_CHECKED_ATTRIBUTES, checked))
        # The whole attribute dict at once (a frozen dataclass refuses setattr).
        object.__setattr__(rule, "__dict__", fields)
        fields["order"] = order_of(rule)
        return rule

    def to_row(self) -> dict[str, Any]:
        """The row that :meth:`from_row` would turn back into this rule."""
        row: dict[str, Any] = {
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


class _NetworkOnFirstUse:
    """``Rule.remote`` / ``Rule.local``: the ``ipaddress`` network of the rule's
    prefix, made when first read and then kept in the instance.

    A non-data descriptor, like ``functools.cached_property``: once the
    instance holds the attribute (the dataclass ``__init__`` sets it, the
    first read caches it) the instance's value wins and this is not called.
    """

    def __init__(self, name: str, prefix_name: str) -> None:
        self.name = name
        self.prefix_name = prefix_name

    @overload
    def __get__(self, rule: None, owner: type | None = None) -> _NetworkOnFirstUse: ...
    @overload
    def __get__(self, rule: Rule, owner: type | None = None) -> Network | None: ...

    def __get__(
        self,
        rule: Rule | None,
        owner: type | None = None,
    ) -> _NetworkOnFirstUse | Network | None:
        if rule is None:
            return self
        network = _network_of(rule.__dict__[self.prefix_name])
        rule.__dict__[self.name] = network
        return network


# The network fields (remote, local) and the name under which a rule keeps each as its Prefix.
_NETWORK_FIELDS: tuple[tuple[str, str], ...] = tuple(
    (field.name, field.metadata[_KEPT_AS]) for field in dataclasses.fields(Rule) if _KEPT_AS in field.metadata
)
# What a rule keeps in its instance dict, derived from the fields: each field under
# its name, a network field as its Prefix (the network is made on first use), then
# the order, derived from the others (model/key.py).  _from_checked takes the
# values of _CHECKED_ATTRIBUTES in this order; so does the compiled row reader.
_CHECKED_ATTRIBUTES: tuple[str, ...] = tuple(
    field.metadata.get(_KEPT_AS, field.name) for field in dataclasses.fields(Rule)
)
ATTRIBUTES: tuple[str, ...] = (*_CHECKED_ATTRIBUTES, "order")

# After @dataclass has read the defaults (None) for __init__: the checker
# knows these fields by their instance type (a network or None).
for _field, _kept in _NETWORK_FIELDS:
    setattr(Rule, _field, _NetworkOnFirstUse(_field, _kept))
del _field, _kept


def _prefix_of(network: Network | None) -> Prefix | None:
    if network is None:
        return None
    return network.version, int(network.network_address), network.prefixlen


def _network_of(prefix: Prefix | None) -> Network | None:
    if prefix is None:
        return None
    version, value, length = prefix
    if version == 4:
        return ipaddress.IPv4Network((value, length))
    return ipaddress.IPv6Network((value, length))


# -- column parsers ----------------------------------------------------------


def _shown(value: Any) -> Any:
    """The value a RuleError holds for what the row held (bytes decoded, CHAR
    padding kept); its message renders it, bounded, with errors.shown."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return value


def _text(rule_id: Any, column: str, value: Any) -> str | None:
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
    """The integer ``value`` holds, for a range check: exact, except that a
    magnitude of BEYOND_EVERY_RANGE or more may come back as +-BEYOND_EVERY_RANGE."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        # NUMERIC columns can hold NaN and Infinity (PostgreSQL), which int() refuses.
        if not (value.is_finite() and value == value.to_integral_value()):
            raise RuleError(rule_id, column, value, "not an integer")
        # adjusted(): the exponent of the leading digit, so >= 20 means at least
        # 10**20 > BEYOND_EVERY_RANGE, known without making a 100,000-digit int.
        if value.adjusted() >= 20:
            return -BEYOND_EVERY_RANGE if value < 0 else BEYOND_EVERY_RANGE
        return int(value)
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise RuleError(rule_id, column, value, "not an integer")
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        text = _text(rule_id, column, value)
        assert text is not None  # _text gives None for None only
        try:
            return parse_integer(text)
        except ValueError:
            raise RuleError(rule_id, column, _shown(value), "not an integer") from None
    raise RuleError(rule_id, column, value, f"expected an integer, got {type(value).__name__}")


def _rule_id(value: Any) -> int:
    # An unusable id is reported as rule_id None (RuleError's contract); the value shows it.
    if type(value) is int and ID_MIN <= value <= ID_MAX:
        return value
    if value is None:
        raise RuleError(None, "id", None, "id is NULL")
    rule_id = _as_int(None, "id", value)
    check_id(rule_id, value)
    return rule_id


def _priority(rule_id: int, value: Any) -> int:
    if value is None:
        return 0
    number = _as_int(rule_id, "priority", value)
    check_priority(rule_id, number, value)
    return number


def _integer(rule_id: int, column: str, value: Any, default: Any) -> int:
    """A profile integer (NULL: ``default``)."""
    if value is None:
        return int(default)
    number = _as_int(rule_id, column, value)
    check_profile_int(rule_id, column, number, value)
    bounds = _RANGED_COLUMNS.get(column)
    if bounds is not None and not bounds[0] <= number <= bounds[1]:
        raise RuleError(rule_id, column, value, f"must be between {bounds[0]} and {bounds[1]}")
    if column in _FLAG_COLUMNS:
        return int(number != 0)
    return number


def _port(rule_id: int, column: str, value: Any) -> int:
    if type(value) is int and 0 <= value <= PORT_MAX:
        return value
    if value is None:
        return 0
    port = _as_int(rule_id, column, value)
    check_port(rule_id, column, port, value)
    return port


# proto text -> its name (None: any), for text already accepted once; the
# registry only ever grows, so an accepted name stays accepted.
_accepted_protos: dict[str, str | None] = {}


def _proto(rule_id: int, value: Any) -> str | None:
    if type(value) is str and value in _accepted_protos:
        return _accepted_protos[value]
    text = _text(rule_id, "proto", value)
    if text is None:
        raise RuleError(rule_id, "proto", None, "proto is NULL (use 'any')")
    name = text.lower()
    if name in NOT_TCP_PROTOCOLS:
        raise RuleError(rule_id, "proto", _shown(value), f"{name!r} is not a TCP-based protocol")
    code = protocol_code(name)
    if code is None:
        raise RuleError(rule_id, "proto", _shown(value), "unknown protocol")
    result = None if code == 0 else name
    if type(value) is str:
        _accepted_protos[value] = result
    return result


def _ip_value(address: str) -> tuple[int | None, int]:
    """(address as an int, 4 or 6), or (None, family tried) when it does not parse.

    ``inet_pton`` is the fast path (it accepts no form that ``ipaddress``
    refuses); whatever it refuses goes to ``ipaddress``, which decides.
    """
    family, version = (socket.AF_INET6, 6) if ":" in address else (socket.AF_INET, 4)
    try:
        return int.from_bytes(socket.inet_pton(family, address), "big"), version
    except (OSError, ValueError):
        pass
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None, version
    return int(ip), ip.version


def _parse_network(rule_id: int, column: str, raw: Any, text: str, warnings: list[RuleWarning]) -> Prefix:
    address, slash, length = text.partition("/")
    if "%" in address:
        raise RuleError(rule_id, column, _shown(raw), "an IPv6 zone has no meaning in a rule")
    value, version = _ip_value(address)
    if value is None:
        raise RuleError(rule_id, column, _shown(raw), "not an IPv4 or IPv6 address")
    max_prefixlen = 32 if version == 4 else 128
    if slash:
        if not (length.isascii() and length.isdigit()):
            raise RuleError(rule_id, column, _shown(raw), "prefix length is not a number")
        # Leading zeros are allowed ("/008"); more digits than that can only be
        # out of range, and int() would refuse them past 4300.
        digits = length.lstrip("0") or "0"
        if len(digits) > 3 or int(digits) > max_prefixlen:
            raise RuleError(
                rule_id,
                column,
                _shown(raw),
                f"prefix length /{digits if len(digits) <= 5 else digits[:5] + '…'} "
                f"is out of range for IPv{version} (0..{max_prefixlen})",
            )
        prefixlen = int(digits)
    else:
        prefixlen = max_prefixlen
    host_bits = max_prefixlen - prefixlen
    network_int = value >> host_bits << host_bits
    # Lookups match an IPv4-mapped address as IPv4 (docs/behaviour.md#which-rule-wins), so a rule written
    # in mapped form (a prefix of /96 or longer inside ::ffff:0:0/96) must live
    # among the IPv4 rules to ever match.
    prefix = unmap_ipv6(network_int, prefixlen) if version == 6 else (4, network_int, prefixlen)
    if network_int != value:
        warnings.append(
            RuleWarning(
                rule_id,
                column,
                _shown(raw),
                f"host bits set under the prefix; stored as {_network_of(prefix)}",
            )
        )
    return prefix


def _network(rule_id: int, column: str, value: Any, warnings: list[RuleWarning]) -> Prefix | None:
    text = _text(rule_id, column, value)
    if text is None or text == "" or text.lower() == ANY:
        return None
    return _parse_network(rule_id, column, value, text, warnings)


def _looks_like_address(text: str) -> bool:
    return any(ch in text for ch in ":/") or all(ch.isdigit() or ch == "." for ch in text)


def _local(
    rule_id: int,
    value: Any,
    listeners: Mapping[str, Any] | None,
    warnings: list[RuleWarning],
) -> Prefix | str | None:
    """The local prefix, or the socket tag the column names (see :func:`_tag_prefix`)."""
    text = _text(rule_id, "local_addr", value)
    if text is None or text == "" or text.lower() == ANY:
        return None
    if _looks_like_address(text):
        return _parse_network(rule_id, "local_addr", value, text, warnings)
    if listeners is None or text not in listeners:
        known = ", ".join(sorted(listeners)) if listeners else "none configured"
        raise RuleError(
            rule_id,
            "local_addr",
            _shown(value),
            f"neither an address nor a known socket tag (listeners: {known})",
        )
    return text


def _tag_prefix(
    rule_id: int,
    value: Any,
    tag: str,
    listeners: Mapping[str, Any],
    warnings: list[RuleWarning],
) -> Prefix:
    listener = listeners[tag]
    try:
        ip = ipaddress.ip_address(str(listener).partition("%")[0])
    except ValueError:
        raise RuleError(
            rule_id,
            "local_addr",
            _shown(value),
            f"socket tag {tag!r} maps to {shown(listener)}, which is not an address",
        ) from None
    return _parse_network(rule_id, "local_addr", value, str(ip), warnings)


def _attrs(rule_id: int, value: Any, default: Mapping[str, int]) -> Mapping[str, int]:
    text = _text(rule_id, "attrs", value)
    if text is None:
        return default
    try:
        return parse_attrs(text)
    except ValueError as exc:
        raise RuleError(rule_id, "attrs", _shown(value), str(exc)) from None


def _net_text(network: Network | None) -> str | None:
    if network is None:
        return None
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)
