"""The connection profile (docs/behaviour.md#the-connection-profile) and the registry of ``attrs`` names.

A :class:`Profile` is immutable: the classifier hands the same object to every
connection that matches a rule, so nobody may change it under another caller.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from .errors import shown
from .limits import ATTR_MAX, ATTR_MIN, BEYOND_EVERY_RANGE

__all__ = [
    "BUILTIN_ATTRS",
    "OPENSIPS_DEFAULTS",
    "PROFILE_FIELDS",
    "AttrSpec",
    "Profile",
    "attr_spec",
    "default_profile",
    "format_attrs",
    "known_attrs",
    "parse_attrs",
    "parse_integer",
    "register_attr",
    "set_default_profile",
]

_EMPTY: Mapping[str, int] = MappingProxyType({})


@dataclasses.dataclass(frozen=True, eq=False)
class Profile:
    """How one connection is to be treated; ``id`` is the rule it came from (0: default)."""

    id: int = 0
    connect_timeout: int = 100  # ms
    con_lifetime: int = 120  # s
    msg_read_timeout: int = 4  # s
    send_threshold: int = 0  # us, 0 = not set
    no_new_conn: bool = False
    alias_mode: int = 0  # 0 never, 1 with RFC 5923 ;alias, 2 always
    parallel_read: int = 0  # 0, 1 or 2 (schema version 1 only)
    keepalive: bool = True
    keepcount: int = 9
    keepidle: int = 7200  # s
    keepinterval: int = 75  # s
    attrs: Mapping[str, int] = dataclasses.field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        # A plain dict passed by the caller must not stay mutable behind our back.
        if not isinstance(self.attrs, MappingProxyType):
            object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))
        object.__setattr__(self, "no_new_conn", bool(self.no_new_conn))
        object.__setattr__(self, "keepalive", bool(self.keepalive))

    def __hash__(self) -> int:
        return hash(self._identity())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Profile):
            return NotImplemented
        return self._identity() == other._identity()

    def _identity(self) -> tuple[Any, ...]:
        values = tuple(getattr(self, name) for name in PROFILE_FIELDS if name != "attrs")
        return (self.id, values, tuple(sorted(self.attrs.items())))

    def __reduce__(self) -> tuple[type[Profile], tuple[Any, ...]]:
        # A mappingproxy cannot be pickled: rebuild from the plain values
        # (multiprocessing, copy.deepcopy and caches all go through here).
        return (type(self), (self.id, *self.values().values()))

    @classmethod
    def _from_checked(cls, values: dict[str, Any]) -> Profile:
        """A profile from values already validated and normalised (``attrs`` a
        read-only mapping, the flags bools), as Rule.from_row makes them:
        skips ``__init__``, which a reload of a million rows feels.  ``values``
        (a new dict: ``id`` and the twelve attributes) becomes the profile's own."""
        profile = object.__new__(cls)
        object.__setattr__(profile, "__dict__", values)
        return profile

    def replace(self, **changes: Any) -> Profile:
        """A copy with some attributes changed."""
        return dataclasses.replace(self, **changes)

    def values(self) -> dict[str, Any]:
        """The twelve attributes as a plain dict (``attrs`` as a dict too)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in PROFILE_FIELDS}
        out["attrs"] = dict(self.attrs)
        return out

    def differences(self, other: Profile) -> dict[str, Any]:
        """The attributes whose value differs from ``other``'s, with this profile's value."""
        mine, theirs = self.values(), other.values()
        return {name: mine[name] for name in PROFILE_FIELDS if mine[name] != theirs[name]}


# The twelve attributes, in the order of the OpenSIPS table.
PROFILE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Profile) if f.name != "id")

OPENSIPS_DEFAULTS = Profile()

_default = OPENSIPS_DEFAULTS
_default_lock = threading.Lock()


def default_profile() -> Profile:
    """The profile used when no rule matches, and for NULL profile columns."""
    return _default


def set_default_profile(profile: Profile | None = None, **values: Any) -> Profile:
    """Replace the process-wide default profile (OpenSIPS's global ``tcp_*`` settings).

    Pass a :class:`Profile`, or keyword values changed from the current one.
    Matchers built before the call keep the default they were built with.
    """
    global _default
    with _default_lock:
        base = profile if profile is not None else _default
        _default = base.replace(id=0, **values)
        return _default


class AttrSpec(NamedTuple):
    """An ``attrs`` name and the values it takes: the one definition of both.

    ``Rule.from_row`` refuses a value outside ``minimum..maximum`` with a row
    error naming the item; the socket options among the built-in names are set
    by ``tcpmgm.apply`` (``tcpmgm/service/options.py`` maps each to its socket
    option; docs/behaviour.md#the-connection-profile lists them).
    """

    name: str
    minimum: int
    maximum: int


# The built-in names.  The ranges of the socket options are what Linux accepts
# for each (tcp(7), ip(7), ipv6(7), socket(7)); max_msg_chunks keeps the
# range every attrs value had before names had ranges of their own.  ATTR_MAX:
# a C int, what setsockopt takes and what OpenSIPS holds an attrs value in.
BUILTIN_ATTRS: tuple[AttrSpec, ...] = (
    AttrSpec("max_msg_chunks", ATTR_MIN, ATTR_MAX),  # the most reads one message may take (OpenSIPS's name)
    AttrSpec("tcp_user_timeout", 0, ATTR_MAX),  # ms; 0: the kernel's own rule
    AttrSpec("nodelay", 0, 1),
    AttrSpec("tos", 0, 255),  # one byte: DSCP and the ECN bits (which TCP keeps its own)
    AttrSpec("sndbuf", 1, ATTR_MAX),  # bytes
    AttrSpec("rcvbuf", 1, ATTR_MAX),  # bytes
    AttrSpec("notsent_lowat", 0, ATTR_MAX),  # bytes; 0: the sysctl's value
    AttrSpec("linger", 0, ATTR_MAX),  # seconds; 0: abortive close
    AttrSpec("syncnt", 1, 127),  # the kernel's MAX_TCP_SYNCNT
    AttrSpec("mark", 0, ATTR_MAX),  # a u32 in the kernel, kept to what a C int holds
)

_attrs_lock = threading.Lock()
_attrs: dict[str, AttrSpec] = {spec.name: spec for spec in BUILTIN_ATTRS}


def register_attr(name: str, minimum: int = ATTR_MIN, maximum: int = ATTR_MAX) -> AttrSpec:
    """Allow ``name`` in the ``attrs`` column, with values ``minimum..maximum``
    (by default any C int, ``limits.ATTR_MIN..ATTR_MAX``).

    A name keeps the range it was first registered with (the built-in names
    theirs): registering it again with the same range changes nothing, with
    another range is a ``ValueError``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"attrs name must be an identifier, got {name!r}")
    if not ATTR_MIN <= minimum <= maximum <= ATTR_MAX:
        raise ValueError(f"attrs range {minimum}..{maximum} of {name!r} is not within {ATTR_MIN}..{ATTR_MAX}")
    spec = AttrSpec(name, minimum, maximum)
    with _attrs_lock:
        known = _attrs.get(name)
        if known is None:
            _attrs[name] = spec
            return spec
        if (known.minimum, known.maximum) != (minimum, maximum):
            raise ValueError(f"attrs name {name!r} is already registered as {known.minimum}..{known.maximum}")
        return known


def known_attrs() -> frozenset[str]:
    """The names the ``attrs`` column accepts."""
    return frozenset(_attrs)


def attr_spec(name: str) -> AttrSpec | None:
    """The registered definition of ``name``, or None."""
    return _attrs.get(name)


# What SQL calls an integer literal.  Python's int() would also take "1_000"
# and non-ASCII digits, which are no integer in any table.
_INTEGER = re.compile(r"([+-]?)0*([0-9]+)\Z")
# More significant digits than this is at least 10**20, beyond every range.
_MAX_DIGITS = 20


def parse_integer(text: str) -> int:
    """``text`` (already stripped) as an integer: optional sign, ASCII digits; else ``ValueError``.

    A number of more than 20 significant digits comes back as
    ``+-limits.BEYOND_EVERY_RANGE``: it is outside every range a column has,
    and converting its digits would be slow (int() refuses past 4300).
    """
    match = _INTEGER.match(text)
    if match is None:
        raise ValueError(f"{shown(text)} is not an integer")
    sign, digits = match.groups()
    if len(digits) > _MAX_DIGITS:
        return -BEYOND_EVERY_RANGE if sign == "-" else BEYOND_EVERY_RANGE
    return -int(digits) if sign == "-" else int(digits)


# How much of the list of known names a message shows: all the built-in ones,
# a few an application registered, never a message as long as the registry.
_KNOWN_CHARS = 160


def _known_names() -> str:
    names = ", ".join(sorted(_attrs))
    return names if len(names) <= _KNOWN_CHARS else names[:_KNOWN_CHARS] + "\u2026"


def parse_attrs(text: str) -> dict[str, int]:
    """Parse ``name=int;name`` into a dict; raise ``ValueError`` naming the bad item.

    A name must be registered, and its value (a bare name: 0) within the
    name's :class:`AttrSpec` range."""
    result: dict[str, int] = {}
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name = name.strip()
        spec = _attrs.get(name)
        if spec is None:
            raise ValueError(f"unknown attribute {shown(name)} (known: {_known_names()})")
        raw = raw.strip()
        if not sep:
            value = 0
        else:
            try:
                value = parse_integer(raw)
            except ValueError:
                raise ValueError(f"attribute {name!r} has non-integer value {shown(raw)}") from None
        if not spec.minimum <= value <= spec.maximum:
            given = f"value {shown(raw)}" if sep else "without a value (0)"
            raise ValueError(f"attribute {name!r} {given} is outside {spec.minimum}..{spec.maximum}")
        result[name] = value
    return result


def format_attrs(attrs: Mapping[str, int]) -> str:
    return ";".join(f"{k}={v}" for k, v in sorted(attrs.items()))
