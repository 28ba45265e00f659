"""The socket options that ``attrs`` names set: one table entry per option, and setting them.

Which values a name takes is defined once, by its ``AttrSpec`` in
``tcpmgm/model/profile.py`` (a value outside it never reaches a socket: the
row is refused); this module says which socket option each name is, per
address family, and how its value is passed (docs/behaviour.md#socket-options-from-attrs).

An option that cannot be set (the platform lacks the constant, the kernel
answers ``ENOPROTOOPT``, ``SO_MARK`` without ``CAP_NET_ADMIN`` is ``EPERM``)
never fails the connection and is never skipped in silence: it is an
:class:`OptionNotSet` in the result of ``tcpmgm.apply`` and a warning on the
``tcpmgm.sockets`` logger.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from ..model.profile import Profile

__all__ = [
    "SOCKET_OPTIONS",
    "Applied",
    "OptionNotSet",
    "SocketOption",
    "set_socket_options",
]

# The facade's name (tcpmgm.sockets), as for the rest of what apply() logs.
log = logging.getLogger("tcpmgm.sockets")


def _as_int(value: int) -> int:
    return value


def _linger(seconds: int) -> bytes:
    # struct linger {int l_onoff; int l_linger;}: on, and how long close() waits.
    return struct.pack("ii", 1, seconds)


class SocketOption(NamedTuple):
    """How one ``attrs`` name is set: ``(level, option)`` by the names of their
    constants in :mod:`socket` (resolved when set: a platform may lack one),
    ``ipv6`` when an IPv6 socket needs another pair, and the value's encoding."""

    attr: str
    level: str
    option: str
    ipv6: tuple[str, str] | None = None
    encode: Callable[[int], int | bytes] = _as_int
    needs: str = ""  # the privilege the kernel asks for, said when it refuses with EPERM

    def constants(self, family: int | None) -> tuple[str, str]:
        """The names of level and option for a socket of ``family`` (None: not known)."""
        if family == socket.AF_INET6 and self.ipv6 is not None:
            return self.ipv6
        return self.level, self.option


# One entry per option, in the order they are set.  The Linux manual pages
# each cites are the documentation of the option and of the values it takes.
SOCKET_OPTIONS: Mapping[str, SocketOption] = MappingProxyType(
    {
        option.attr: option
        for option in (
            SocketOption("tcp_user_timeout", "IPPROTO_TCP", "TCP_USER_TIMEOUT"),  # tcp(7), RFC 5482
            SocketOption("nodelay", "IPPROTO_TCP", "TCP_NODELAY"),  # tcp(7)
            SocketOption("tos", "IPPROTO_IP", "IP_TOS", ipv6=("IPPROTO_IPV6", "IPV6_TCLASS")),  # ip(7), ipv6(7)
            SocketOption("sndbuf", "SOL_SOCKET", "SO_SNDBUF"),  # socket(7): the kernel doubles it
            SocketOption("rcvbuf", "SOL_SOCKET", "SO_RCVBUF"),  # socket(7): the kernel doubles it
            SocketOption("notsent_lowat", "IPPROTO_TCP", "TCP_NOTSENT_LOWAT"),  # tcp(7), ip-sysctl tcp_notsent_lowat
            SocketOption("linger", "SOL_SOCKET", "SO_LINGER", encode=_linger),  # socket(7)
            SocketOption("syncnt", "IPPROTO_TCP", "TCP_SYNCNT"),  # tcp(7)
            SocketOption("mark", "SOL_SOCKET", "SO_MARK", needs="CAP_NET_ADMIN"),  # socket(7)
        )
    }
)


class OptionNotSet(NamedTuple):
    """An option the profile's ``attrs`` asked for and :func:`set_socket_options` could not set."""

    attr: str  # the attrs name (tos, mark, ...)
    option: str  # the socket option's name (IP_TOS, SO_MARK, ...)
    value: int  # the attrs value
    reason: str  # why not, for a person


class Applied(dict[str, int]):
    """What ``tcpmgm.apply`` set: ``{socket option name: value}``, and in
    :attr:`not_set` the options it was asked for and could not set."""

    __slots__ = ("not_set",)

    def __init__(self, values: Mapping[str, int] | None = None) -> None:
        super().__init__(values or {})
        self.not_set: list[OptionNotSet] = []


_UNSUPPORTED = frozenset({errno.ENOPROTOOPT, errno.EOPNOTSUPP})
_NOT_PERMITTED = frozenset({errno.EPERM, errno.EACCES})


def _family(sock: Any) -> int | None:
    """The family of the packets ``sock`` sends: AF_INET for an IPv6 socket
    bound to an IPv4-mapped address (a dual-stack listener's IPv4 peer)."""
    family: int | None = getattr(sock, "family", None)
    if family == socket.AF_INET6:
        try:
            local = ipaddress.IPv6Address(sock.getsockname()[0].partition("%")[0])
        except (OSError, ValueError, AttributeError, TypeError, IndexError):
            return family
        if local.ipv4_mapped is not None:
            return socket.AF_INET
    return family


def _why(exc: OSError, option: SocketOption) -> str:
    if exc.errno in _UNSUPPORTED:
        return f"not supported by this system ({exc.strerror})"
    if exc.errno in _NOT_PERMITTED:
        needs = f", needs {option.needs}" if option.needs else ""
        return f"refused ({exc.strerror}{needs})"
    return f"refused ({exc})"


def set_socket_options(sock: Any, profile: Profile, applied: Applied) -> None:
    """Set each socket option of ``profile.attrs`` on ``sock``, into ``applied``.

    An option set goes into ``applied`` as ``{option name: attrs value}``; one
    that cannot be set goes into ``applied.not_set`` and is logged as a
    warning naming the rule.  ``attrs`` names that are no socket option
    (``max_msg_chunks``, an application's own) are left to their readers.
    """
    attrs = profile.attrs
    if not attrs:
        return
    for name, option in SOCKET_OPTIONS.items():
        if name not in attrs:
            continue
        value = attrs[name]
        family = _family(sock) if option.ipv6 is not None else None
        level_name, option_name = option.constants(family)
        level, number = getattr(socket, level_name, None), getattr(socket, option_name, None)
        if option.ipv6 is not None and family not in (socket.AF_INET, socket.AF_INET6):
            reason = f"the socket's family ({family!r}) is neither IPv4 nor IPv6"
        elif level is None or number is None:
            reason = f"not available on this platform (socket.{option_name if number is None else level_name})"
        else:
            try:
                sock.setsockopt(level, number, option.encode(value))
            except OSError as exc:
                reason = _why(exc, option)
            else:
                applied[option_name] = value
                continue
        applied.not_set.append(OptionNotSet(name, option_name, value, reason))
        log.warning("rule %s: attrs %s=%d: %s not set: %s", profile.id, name, value, option_name, reason)
