"""The connection policy on blocking sockets: framed reads, timed sends, idle expiry.

:class:`Connection` wraps one connected ``socket.socket`` with its
:class:`ConnectionPolicy`: :meth:`Connection.read_message` (and
:meth:`~Connection.recv_exactly`, :meth:`~Connection.recv_until`, which are
messages of a known shape) enforce ``msg_read_timeout`` from a message's first
bytes and ``max_msg_chunks``, closing the connection when either runs out;
:meth:`Connection.send` measures each send against ``send_threshold``.
:class:`IdleConnections` is what a server loop calls to close connections
idle for their ``con_lifetime``.  The semantics are the policy's own
(:mod:`tcpmgm.service.policy`, docs/operations.md#the-connection-policy).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..model.errors import ConnectionDropped
from . import events
from .events import Event
from .policy import ConnectionPolicy, Parser, SlowSendHook
from .sockets import SupportsLookup, connect_with_profile, endpoint, tune

__all__ = ["Connection", "IdleConnections", "open_connection"]

# The public module's name (tcpmgm.sockets, the facade the README documents), not this file's.
log = logging.getLogger("tcpmgm.sockets")

_RECV_SIZE = 65536


def _peer_of(sock: socket.socket) -> tuple[str | None, int]:
    try:
        return endpoint(sock.getpeername())
    except OSError:  # not connected (any more): no address to name it by
        return None, 0


class IdleConnections:
    """The ``con_lifetime`` expiry of blocking connections, for a server loop to call.

    :meth:`add` a socket with its policy (a policy without ``idle_timeout``
    is never expired), :meth:`touch` it on every read and write (a
    :class:`Connection` made with ``idle=`` does so itself), and call
    :meth:`close_idle` every time the loop wakes; :meth:`timeout` is how long
    the loop may sleep (a ``selectors`` ``select(timeout)``).  Each close is
    counted as ``Event.IDLE_CLOSE``.  Not thread-safe: one loop owns it.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tracked: dict[socket.socket, tuple[float, float]] = {}  # sock -> (idle timeout, last activity)

    def __len__(self) -> int:
        return len(self._tracked)

    def __contains__(self, sock: object) -> bool:
        return sock in self._tracked

    def add(self, sock: socket.socket, policy: ConnectionPolicy) -> None:
        """Track ``sock`` (active now) when its policy has an idle timeout."""
        if policy.idle_timeout is not None:
            self._tracked[sock] = (policy.idle_timeout, self._clock())

    def touch(self, sock: socket.socket) -> None:
        """``sock`` was read from or written to: its idle time starts again."""
        tracked = self._tracked.get(sock)
        if tracked is not None:
            self._tracked[sock] = (tracked[0], self._clock())

    def discard(self, sock: socket.socket) -> None:
        """Stop tracking ``sock`` (the application closed it)."""
        self._tracked.pop(sock, None)

    def next_deadline(self) -> float | None:
        """The clock time of the next idle expiry (``None``: nothing tracked expires)."""
        return min((last + idle for idle, last in self._tracked.values()), default=None)

    def timeout(self) -> float | None:
        """Seconds until the next idle expiry, never negative (``None``: no expiry pending)."""
        deadline = self.next_deadline()
        return None if deadline is None else max(0.0, deadline - self._clock())

    def close_idle(self) -> list[socket.socket]:
        """Close and forget every socket idle for its ``con_lifetime``; returns them."""
        now = self._clock()
        expired = [sock for sock, (idle, last) in self._tracked.items() if now - last >= idle]
        for sock in expired:
            idle, last = self._tracked.pop(sock)
            log.debug("closing %s: idle for %g s (con_lifetime %g s)", _peer_of(sock), now - last, idle)
            sock.close()
            events.count(Event.IDLE_CLOSE)
        return expired


class Connection:
    """One blocking connection under its policy.

    ``idle``: the :class:`IdleConnections` of the loop that serves it, touched
    on every read and write.  ``peer`` names the other end in messages and in
    the slow-send hook (default: the socket's peer address).
    """

    def __init__(
        self,
        sock: socket.socket,
        policy: ConnectionPolicy,
        *,
        peer: Any = None,
        idle: IdleConnections | None = None,
    ) -> None:
        self.sock = sock
        self.policy = policy
        self.peer = peer if peer is not None else _peer_of(sock)
        self.idle = idle
        self._buffer = bytearray()  # read from the socket, not yet given to the application
        self._guard = policy.message_guard(self.peer)
        self._message_started = False  # bytes of the current message have arrived
        self._in_message_block = False  # inside ``with conn.message():``
        if idle is not None:
            idle.add(sock, policy)

    def __repr__(self) -> str:
        return f"<tcpmgm.sockets.Connection {self.peer} rule {self.policy.rule_id}>"

    @classmethod
    def tune(
        cls,
        mgr: SupportsLookup,
        proto: str,
        sock: socket.socket,
        *,
        on_slow_send: SlowSendHook | None = None,
        idle: IdleConnections | None = None,
    ) -> Connection:
        """An accepted ``sock`` looked up by its two ends, tuned (:func:`tune`) and wrapped."""
        policy = ConnectionPolicy.from_profile(tune(mgr, proto, sock), on_slow_send=on_slow_send)
        return cls(sock, policy, idle=idle)

    # -- reading ----------------------------------------------------------------------
    @contextlib.contextmanager
    def message(self) -> Iterator[None]:
        """Make every read inside the block one message, for a protocol that reads a
        message in several calls (a header, then its body)::

            with conn.message():
                size = int(conn.recv_until(b"\\n"))
                body = conn.recv_exactly(size)

        The deadline runs from the message's first bytes to the end of the
        block and the reads of all its calls count together.  A block inside
        another adds nothing.
        """
        if self._in_message_block:
            yield
            return
        self._in_message_block = True
        try:
            yield
        finally:
            self._in_message_block = False
            self._message_done()

    def _message_done(self) -> None:
        self._guard.complete()
        self._message_started = False

    def read_message(self, parse: Parser) -> bytes:
        """The next message of a framed protocol; ``b""`` at end of file before it starts.

        ``parse(buffer)`` gets the bytes read so far (a ``bytearray``, the
        message at its start) and returns the message's length once they hold
        all of it, else ``None`` (:data:`tcpmgm.service.policy.Parser`).
        Once a message has started, the wait for its rest is bounded by
        ``message_timeout`` and its reads by ``max_msg_chunks``: when either
        runs out the connection is closed and :class:`tcpmgm.MessageTimeout`
        or :class:`tcpmgm.MessageTooFragmented` raised.  Waiting for a
        message to start is bounded by the socket's own timeout only (idle
        expiry is :class:`IdleConnections`' part).  End of file in the middle
        of a message raises ``EOFError``.  Bytes after the message stay for
        the next call.
        """
        try:
            return self._read_message(parse)
        except ConnectionDropped:
            # The message is given up with the connection: a later read fails on the closed
            # socket instead of repeating the verdict (and counting the drop twice).
            self._buffer.clear()
            self._message_done()
            self.close()
            raise

    def _read_message(self, parse: Parser) -> bytes:
        while True:
            if self._buffer:
                self._message_started = True
                length = parse(self._buffer)
                if length is not None:
                    message = bytes(self._buffer[:length])
                    del self._buffer[:length]
                    if not self._in_message_block:
                        self._message_done()
                    return message
            if self._message_started:
                # A read is needed after some of the message came: what came left it incomplete.
                self._guard.incomplete()
            data = self._recv(self._guard.remaining())
            if not data:
                if self._buffer:
                    raise EOFError(f"{self.peer} closed the connection in the middle of a message")
                return b""
            self._buffer += data

    def _recv(self, deadline: float | None) -> bytes:
        """One read, within ``deadline`` seconds when a message is under way."""
        if deadline is None:
            data = self.sock.recv(_RECV_SIZE)
        else:
            own = self.sock.gettimeout()
            self.sock.settimeout(deadline if own is None else min(own, deadline))
            try:
                data = self.sock.recv(_RECV_SIZE)
            except socket.timeout:  # TimeoutError from Python 3.10
                if own is not None and own < deadline:
                    raise  # the caller's own timeout, not the message's
                self._guard.expired()
                raise
            finally:
                self.sock.settimeout(own)
        if data and self.idle is not None:
            self.idle.touch(self.sock)
        return data

    def recv_exactly(self, n: int) -> bytes:
        """A message of exactly ``n`` bytes (:meth:`read_message` with that framing)."""
        return self.read_message(lambda buffer: n if len(buffer) >= n else None)

    def recv_until(self, separator: bytes = b"\n") -> bytes:
        """The bytes up to and including ``separator`` (:meth:`read_message` with that framing)."""

        def through_separator(buffer: bytearray) -> int | None:
            found = buffer.find(separator)
            return None if found < 0 else found + len(separator)

        return self.read_message(through_separator)

    # -- writing ----------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """``sendall(data)`` measured against ``send_threshold`` (a slow send is logged,
        counted and given to the policy's ``on_slow_send``)."""
        with self.policy.send_timer(self.peer):
            self.sock.sendall(data)
        if self.idle is not None:
            self.idle.touch(self.sock)

    def may_alias(self, asked_alias: bool) -> bool:
        """:meth:`ConnectionPolicy.may_alias`."""
        return self.policy.may_alias(asked_alias)

    def close(self) -> None:
        if self.idle is not None:
            self.idle.discard(self.sock)
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_connection(
    mgr: SupportsLookup,
    proto: str,
    address: tuple[str, int],
    *,
    source: tuple[str, int] | None = None,
    on_slow_send: SlowSendHook | None = None,
    idle: IdleConnections | None = None,
) -> Connection:
    """:func:`tcpmgm.connect` returning a :class:`Connection` under the profile it connected with."""
    sock, profile = connect_with_profile(mgr, proto, address, source=source)
    return Connection(sock, ConnectionPolicy.from_profile(profile, on_slow_send=on_slow_send), idle=idle)
