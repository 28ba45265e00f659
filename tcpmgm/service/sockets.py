"""Applying a profile to real sockets: keepalive options, connect timeout, no_new_conn.

:func:`apply` writes a profile's keepalive settings into a socket.
:func:`connect` is ``socket.create_connection`` that first asks the rules
about the would-be connection; :func:`tune` does the same for a socket that
already exists (an accepted one), reading both ends from the socket itself.

Keepalive timers follow OpenSIPS (docs/behaviour.md#the-connection-profile): a timer of 0 leaves the
operating system's value as it is; a non-zero one is set, clamped to what the
kernel accepts (:data:`KEEPALIVE_LIMITS`, Linux's bounds: idle and interval
1..32767 s, count 1..127) with a warning in the log naming the rule, rather
than failing the connection.  ``tcpmgm check`` warns about the same clamps
from the same limits.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, NoReturn, Protocol

from ..model.errors import NoNewConnection, RuleError, shown
from ..model.profile import Profile
from ..model.rule import Rule
from . import events
from .events import Event
from .options import Applied, OptionNotSet, set_socket_options

__all__ = [
    "KEEPALIVE_LIMITS",
    "Applied",
    "ConnectAttempt",
    "KeepaliveTimer",
    "OptionNotSet",
    "apply",
    "connect",
    "connect_with_profile",
    "endpoint",
    "keepalive_timers",
    "parse_endpoint",
    "tune",
]

# The public module's name (tcpmgm.sockets, the facade the README documents), not this file's.
log = logging.getLogger("tcpmgm.sockets")

# (profile attribute, socket option name, lowest, highest value the kernel accepts): Linux's
# bounds, the one definition that apply() clamps to and `tcpmgm check` warns from.
KEEPALIVE_LIMITS: tuple[tuple[str, str, int, int], ...] = (
    ("keepidle", "TCP_KEEPIDLE", 1, 32767),
    ("keepinterval", "TCP_KEEPINTVL", 1, 32767),
    ("keepcount", "TCP_KEEPCNT", 1, 127),
)


class SupportsLookup(Protocol):
    """What the ``mgr`` of :func:`tune`, :func:`connect` and :mod:`tcpmgm.aio` must have:
    a :class:`TcpMgm`, a matcher, anything with this ``lookup``."""

    def lookup(
        self,
        proto: str | None,
        remote_ip: Any,
        remote_port: int,
        local_ip: Any,
        local_port: int,
    ) -> Profile: ...


class KeepaliveTimer(NamedTuple):
    """One keepalive timer that :func:`apply` sets: the profile's value and the value set."""

    attribute: str  # the profile attribute (keepidle, keepinterval, keepcount)
    option: str  # the socket option's name (TCP_KEEPIDLE, ...)
    wanted: int  # the profile's value
    value: int  # what is set: ``wanted`` clamped to the kernel's range
    low: int
    high: int

    @property
    def clamped(self) -> bool:
        return self.value != self.wanted


def keepalive_timers(profile: Profile) -> list[KeepaliveTimer]:
    """The keepalive timers :func:`apply` sets for ``profile``, whatever the platform.

    None with keepalive off; otherwise each non-zero timer (0 leaves the
    operating system's value untouched, as in OpenSIPS), clamped to
    :data:`KEEPALIVE_LIMITS`.
    """
    if not profile.keepalive:
        return []
    timers = []
    for attr, name, low, high in KEEPALIVE_LIMITS:
        wanted = getattr(profile, attr)
        if wanted:
            timers.append(KeepaliveTimer(attr, name, wanted, min(max(wanted, low), high), low, high))
    return timers


def _option(name: str) -> int | None:
    if name == "TCP_KEEPIDLE" and not hasattr(socket, name):
        return getattr(socket, "TCP_KEEPALIVE", None)  # macOS names the idle time so
    return getattr(socket, name, None)


def apply(sock: Any, profile: Profile) -> Applied:
    """Set ``SO_KEEPALIVE``, where the platform has them the TCP keepalive
    timers, and the socket options of the profile's ``attrs``.

    Returns :class:`Applied`, ``{option name: value set}``.  With keepalive
    off only ``SO_KEEPALIVE = 0`` is set; a timer of 0 is not set (the
    operating system's value stays) and so is not in the result.  An ``attrs``
    socket option (``tcpmgm/service/options.py``) is in it by its option's
    name with the ``attrs`` value; one that cannot be set is in
    ``.not_set`` instead, with the reason, and logged
    (docs/behaviour.md#socket-options-from-attrs).  ``sock`` is a
    ``socket.socket`` or anything with its ``setsockopt`` (an asyncio
    transport's socket).
    """
    applied = Applied({"SO_KEEPALIVE": int(profile.keepalive)})
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, applied["SO_KEEPALIVE"])
    for timer in keepalive_timers(profile):
        option = _option(timer.option)
        if option is None:
            continue
        if timer.clamped:
            log.warning(
                "rule %s: %s=%d is outside %d..%d; using %d",
                profile.id,
                timer.attribute,
                timer.wanted,
                timer.low,
                timer.high,
                timer.value,
            )
        sock.setsockopt(socket.IPPROTO_TCP, option, timer.value)
        applied[timer.option] = timer.value
    set_socket_options(sock, profile, applied)
    return applied


def endpoint(sockaddr: Any) -> tuple[str | None, int]:
    """``(ip, port)`` of a socket address as ``getpeername``/``getsockname`` give it."""
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return sockaddr[0], int(sockaddr[1])
    return None, 0  # AF_UNIX and friends: no address to match on


def tune(mgr: SupportsLookup, proto: str, sock: Any) -> Profile:
    """Look up the profile of a connected socket by its own two ends and apply it.

    For accepted connections (and any socket whose ends are known only after
    connecting).  ``mgr`` is anything with ``lookup`` (a :class:`TcpMgm` or a
    matcher).
    """
    remote_ip, remote_port = endpoint(sock.getpeername())
    local_ip, local_port = endpoint(sock.getsockname())
    profile = mgr.lookup(proto, remote_ip, remote_port, local_ip, local_port)
    apply(sock, profile)
    return profile


def connect_timeout(profile: Profile) -> float | None:
    """The profile's connect timeout in seconds; 0 means no timeout of our own."""
    return profile.connect_timeout / 1000 if profile.connect_timeout else None


# One address of a host name as getaddrinfo gives it: (family, type, proto, canonname, sockaddr).
AddressInfo = tuple[Any, Any, int, str, Any]


class ConnectAttempt:
    """One connect under the rules, trying each address a host name resolves to in turn, as
    ``socket.create_connection`` does: the one definition of that loop, which :func:`connect`
    and :func:`tcpmgm.aio.open_connection` drive with their own connects.

    :meth:`paths` yields each address the rules allow with its profile (one lookup per
    address: its remote end and ``source``); the glue connects, returns on success and tells
    :meth:`failed` the error otherwise; :meth:`give_up` raises when no address connected.  An
    address whose profile has ``no_new_conn`` is skipped without a packet sent.  When every
    address was refused so, the attempt raises :class:`NoNewConnection`, counted once
    (``Event.NO_NEW_CONN_REFUSED``: one refused connect, however many addresses it had);
    when an allowed address was tried, its error is raised instead.
    """

    def __init__(self, mgr: SupportsLookup, proto: str, host: str, source: tuple[Any, int] | None) -> None:
        self.mgr = mgr
        self.proto = proto
        self.host = host
        self.local: tuple[Any, int] = source if source is not None else (None, 0)
        self._error: BaseException | None = None  # the last allowed address's failure
        self._refused: NoNewConnection | None = None

    def paths(self, infos: list[AddressInfo]) -> Iterator[tuple[AddressInfo, tuple[str | None, int], Profile]]:
        """``(address info, (ip, port), profile)`` of each address to try, in order."""
        for info in infos:
            remote = endpoint(info[4])
            profile = self.mgr.lookup(self.proto, remote[0], remote[1], self.local[0], self.local[1])
            if profile.no_new_conn:
                self._refused = NoNewConnection(
                    f"rule {profile.id} forbids new {self.proto} connections to {remote[0]} port {remote[1]} "
                    "(no_new_conn)"
                )
                continue
            yield info, remote, profile

    def failed(self, error: BaseException) -> None:
        """Connecting to the address just yielded raised ``error``."""
        self._error = error

    def give_up(self) -> NoReturn:
        """No address connected: raise why (see the class)."""
        if self._error is not None:
            raise self._error
        if self._refused is not None:
            events.count(Event.NO_NEW_CONN_REFUSED)
            raise self._refused
        raise OSError(f"getaddrinfo returned no address for {shown(self.host)}")


def connect(
    mgr: SupportsLookup,
    proto: str,
    address: tuple[str, int],
    *,
    source: tuple[str, int] | None = None,
) -> socket.socket:
    """Open a TCP connection to ``address`` = ``(host, port)`` under the rules of ``mgr``.

    The profile is looked up with the remote end ``address`` and the local end
    ``source`` (``(ip, port)`` to bind to; unknown when ``None``).  Raises
    :class:`NoNewConnection` when its ``no_new_conn`` is set (counted as
    ``Event.NO_NEW_CONN_REFUSED``), connects within ``connect_timeout``
    milliseconds (``TimeoutError``/``OSError`` otherwise), applies the profile
    and returns the socket, in blocking mode with the default socket timeout.
    A host name is resolved first; each address it resolves to is tried in
    turn, as ``socket.create_connection`` does (:class:`ConnectAttempt`: an
    address refused by ``no_new_conn`` is skipped, and the refusal is raised
    and counted once when every address was refused).
    """
    return connect_with_profile(mgr, proto, address, source=source)[0]


def connect_with_profile(
    mgr: SupportsLookup,
    proto: str,
    address: tuple[str, int],
    *,
    source: tuple[str, int] | None = None,
) -> tuple[socket.socket, Profile]:
    """:func:`connect`, also returning the profile the connection was opened under."""
    host, port = address
    attempt = ConnectAttempt(mgr, proto, host, source)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    for (family, kind, protocol, _, sockaddr), remote, profile in attempt.paths(infos):
        sock = socket.socket(family, kind, protocol)
        try:
            apply(sock, profile)  # before connecting: keepalive holds from the first packet
            if source is not None:
                sock.bind(source)
            sock.settimeout(connect_timeout(profile))
            sock.connect(sockaddr)
            sock.settimeout(socket.getdefaulttimeout())
            log.debug("connected %s to %s under rule %d", proto, remote, profile.id)
            return sock, profile
        except OSError as exc:
            sock.close()
            attempt.failed(exc)
    attempt.give_up()


def parse_endpoint(text: str, *, listeners: Mapping[str, Any] | None = None) -> tuple[str, int]:
    """``(ip, port)`` from ``ip``, ``ip:port``, ``[ipv6]`` or ``[ipv6]:port`` (no port: 0).

    An IPv6 address must be in brackets: unbracketed, ``2001:db8::1:5060``
    could be an address or an address and a port.  With ``listeners`` (socket
    tag -> address, as a rule's ``local_addr`` may name them) the address may
    also be a socket tag, resolved to its listener's address exactly as a
    rule's tag is.  ``ValueError`` names the text and what is wrong.
    """
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{shown(text)}: expected [ipv6]:port")
        colon, port_text = rest[:1], rest[1:]
    elif text.count(":") > 1:
        raise ValueError(f"{shown(text)}: an IPv6 address goes in brackets, [addr]:port or [addr]")
    else:
        host, colon, port_text = text.partition(":")
    if not host:
        raise ValueError(f"{shown(text)}: no address")
    if colon:
        # isdigit() alone would take non-ASCII digits ("٥٠٦٠"), which int() reads as 5060.
        if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"{shown(text)}: port must be a number between 0 and 65535")
        port = int(port_text)
    else:
        port = 0
    if listeners is not None:
        host = _listener_or_address(text, host, listeners)
    return host, port


def _listener_or_address(text: str, host: str, listeners: Mapping[str, Any]) -> str:
    """``host`` when it is an IP address, else the address of the socket tag it names."""
    try:
        ipaddress.ip_address(host.partition("%")[0])
        return host  # the matcher reads it (zone, IPv4-mapped form) as it reads any address
    except ValueError:
        pass
    # A tag means here what it means in a rule's local_addr: let the rule parser resolve it.
    try:
        rule = Rule.from_row({"id": 1, "proto": "any", "local_addr": host}, listeners=listeners)
    except RuleError as exc:
        raise ValueError(f"{shown(text)}: {exc.reason}") from None
    if rule.local is None:  # 'any' in a rule; a connection's end is one address
        raise ValueError(f"{shown(text)}: not an address or a socket tag")
    return str(rule.local.network_address)
