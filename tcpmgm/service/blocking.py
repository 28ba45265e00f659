"""The connection policy on blocking sockets: framed reads, timed sends, idle expiry.

:class:`Connection` wraps one connected ``socket.socket`` with its
:class:`ConnectionPolicy`: :meth:`Connection.read_message` (and
:meth:`~Connection.recv_exactly`, :meth:`~Connection.recv_until`, which are
messages of a known shape) enforce ``msg_read_timeout`` from a message's first
bytes and ``max_msg_chunks``, closing the connection when either runs out;
:meth:`Connection.send` measures each send against ``send_threshold``; a
:class:`Connection` closes itself when idle for its ``con_lifetime`` (a
thread per connection needs no more), and :class:`IdleConnections` is what a
server loop calls instead to close the connections it serves.  The reads are
the policy's :class:`~tcpmgm.service.policy.MessageReader` driven by
``recv``: the semantics are the policy's own (:mod:`tcpmgm.service.policy`,
docs/operations.md#the-connection-policy).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..model.errors import ConnectionDropped
from . import events
from .events import Event
from .policy import ConnectionPolicy, Parser, ReadSteps, SlowSendHook
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
    counted as ``Event.IDLE_CLOSE``.

    Thread-safe: a sweeping thread may call :meth:`close_idle` while other
    threads read from the connections it tracks.  A close shuts the socket
    down first, so that a ``recv`` blocked on it in another thread returns
    end of file (``close()`` alone does not wake it on Linux) and the peer
    sees the connection end.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tracked: dict[socket.socket, tuple[float, float]] = {}  # sock -> (idle timeout, last activity)

    def __len__(self) -> int:
        return len(self._tracked)

    def __contains__(self, sock: object) -> bool:
        return sock in self._tracked

    def add(self, sock: socket.socket, policy: ConnectionPolicy) -> None:
        """Track ``sock`` (active now) when its policy has an idle timeout."""
        if policy.idle_timeout is not None:
            with self._lock:
                self._tracked[sock] = (policy.idle_timeout, self._clock())

    def touch(self, sock: socket.socket) -> None:
        """``sock`` was read from or written to: its idle time starts again."""
        with self._lock:
            tracked = self._tracked.get(sock)
            if tracked is not None:
                self._tracked[sock] = (tracked[0], self._clock())

    def discard(self, sock: socket.socket) -> None:
        """Stop tracking ``sock`` (the application closed it)."""
        with self._lock:
            self._tracked.pop(sock, None)

    def next_deadline(self) -> float | None:
        """The clock time of the next idle expiry (``None``: nothing tracked expires)."""
        with self._lock:
            return min((last + idle for idle, last in self._tracked.values()), default=None)

    def timeout(self) -> float | None:
        """Seconds until the next idle expiry, never negative (``None``: no expiry pending)."""
        deadline = self.next_deadline()
        return None if deadline is None else max(0.0, deadline - self._clock())

    def close_idle(self) -> list[socket.socket]:
        """Close and forget every socket idle for its ``con_lifetime``; returns them."""
        with self._lock:
            now = self._clock()
            expired = [(sock, idle, last) for sock, (idle, last) in self._tracked.items() if now - last >= idle]
            for sock, _, _ in expired:
                del self._tracked[sock]
        for sock, idle, last in expired:
            log.debug("closing %s: idle for %g s (con_lifetime %g s)", _peer_of(sock), now - last, idle)
            _shut_and_close(sock)
            events.count(Event.IDLE_CLOSE)
        return [sock for sock, _, _ in expired]


def _shut_and_close(sock: socket.socket) -> None:
    """Close ``sock`` so that a ``recv`` blocked on it in another thread wakes with end of file."""
    with contextlib.suppress(OSError):  # already shut down or reset by the peer: closing is enough
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class Connection:
    """One blocking connection under its policy.

    ``idle``: the :class:`IdleConnections` of the loop that serves it, touched
    on every read and write.  Without ``idle`` the connection keeps its own
    ``con_lifetime``: every wait for a read is bounded by the idle time left,
    and when it runs out the connection is closed (counted as
    ``Event.IDLE_CLOSE``) and the read sees end of file, so that a thread per
    connection needs no sweeper.  ``peer`` names the other end in messages and
    in the slow-send hook (default: the socket's peer address).
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
        # The idle expiry this connection keeps itself (no IdleConnections): the time of its last read or write.
        self._own_idle_timeout = policy.idle_timeout if idle is None else None
        self._last_activity = time.monotonic()
        self._reader = policy.message_reader(self.peer)  # the buffer, the framing, the message guard
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
    def message(self) -> contextlib.AbstractContextManager[None]:
        """Make every read inside the block one message, for a protocol that reads a
        message in several calls (a header, then its body)::

            with conn.message():
                size = int(conn.recv_until(b"\n"))
                body = conn.recv_exactly(size)

        The deadline runs from the message's first bytes to the end of the
        block and the reads of all its calls count together, :meth:`read`'s
        included.  A block inside another adds nothing.
        """
        return self._reader.message()

    def read_message(self, parse: Parser) -> bytes:
        """The next message of a framed protocol; ``b""`` at end of file before it starts.

        ``parse(buffer)`` gets the bytes read so far (a ``bytearray``, the
        message at its start) and returns the message's length once they hold
        all of it, else ``None`` (:data:`tcpmgm.service.policy.Parser`).
        Once a message has started, the wait for its rest is bounded by
        ``message_timeout`` and its reads by ``max_msg_chunks``: when either
        runs out the connection is closed and :class:`tcpmgm.MessageTimeout`
        or :class:`tcpmgm.MessageTooFragmented` raised.  Waiting for a
        message to start is bounded by the socket's own timeout and by the
        idle expiry (``b""`` once the connection is closed for it).  End of
        file in the middle of a message raises ``EOFError``
        (:class:`tcpmgm.service.policy.IncompleteMessage`, with the bytes that
        came, which are given up).  Bytes after the message stay for the next
        call.
        """
        return self._run(self._reader.read_message(parse))

    def recv_exactly(self, n: int) -> bytes:
        """A message of exactly ``n`` bytes (:meth:`read_message` with that framing; ``b""`` for 0)."""
        return self._run(self._reader.exactly(n))

    def recv_until(self, separator: bytes = b"\n") -> bytes:
        """The bytes up to and including ``separator`` (:meth:`read_message` with that framing)."""
        return self._run(self._reader.until(separator))

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``-1``: what one read brings), whatever has arrived; ``b""`` at
        end of file.  A whole message by itself; inside :meth:`message` a read of that message."""
        return self._run(self._reader.read(n))

    def _run(self, steps: ReadSteps) -> bytes:
        """Drive one of the reader's helpers with this socket's reads."""
        try:
            wait = next(steps)
            while True:
                wait = steps.send(self._recv(wait))
        except StopIteration as done:
            result: bytes = done.value
            return result
        except ConnectionDropped:
            # The message is given up with the connection: a later read fails on the closed
            # socket instead of repeating the verdict (and counting the drop twice).
            self.close()
            raise

    def _recv(self, message_left: float | None) -> bytes:
        """One read, within ``message_left`` seconds when a message is under way and within the
        idle time left when the connection keeps its own ``con_lifetime``; ``b""`` once idle."""
        idle_left = self._idle_left()
        if idle_left is not None and idle_left <= 0:
            return self._idle_expired()
        limits = [left for left in (message_left, idle_left) if left is not None]
        if not limits:
            data = self._recv_chunk()
        else:
            limit = min(limits)
            own = self.sock.gettimeout()
            self.sock.settimeout(limit if own is None else min(own, limit))
            try:
                data = self._recv_chunk()
            except socket.timeout:  # TimeoutError from Python 3.10
                if own is not None and own < limit:
                    raise  # the caller's own timeout, not the policy's
                if limit == message_left:
                    self._reader.expired()
                return self._idle_expired()
            finally:
                if self.sock.fileno() != -1:
                    self.sock.settimeout(own)
        if data:
            self._touch()
        return data

    def _recv_chunk(self) -> bytes:
        if self.sock.fileno() == -1:
            return self.sock.recv(_RECV_SIZE)  # closed before this read: the socket's own error
        try:
            return self.sock.recv(_RECV_SIZE)
        except OSError:
            if self.sock.fileno() == -1:
                # Closed under the read by another thread (an idle sweep): shutdown() woke the wait
                # and close() took the descriptor before recv() ran. That is end of file.
                return b""
            raise

    def _touch(self) -> None:
        self._last_activity = time.monotonic()
        if self.idle is not None:
            self.idle.touch(self.sock)

    def _idle_left(self) -> float | None:
        if self._own_idle_timeout is None:
            return None
        return self._last_activity + self._own_idle_timeout - time.monotonic()

    def _idle_expired(self) -> bytes:
        """No read or write for ``con_lifetime``: close (counted) and read end of file."""
        log.debug("closing %s: idle for %g s (con_lifetime)", self.peer, self._own_idle_timeout)
        events.count(Event.IDLE_CLOSE)
        self.close()
        return b""

    # -- writing ----------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """``sendall(data)`` measured against ``send_threshold`` (a slow send is logged,
        counted and given to the policy's ``on_slow_send``)."""
        with self.policy.send_timer(self.peer):
            self.sock.sendall(data)
        self._touch()

    def may_alias(self, asked_alias: bool) -> bool:
        """:meth:`ConnectionPolicy.may_alias`."""
        return self.policy.may_alias(asked_alias)

    def close(self) -> None:
        if self.idle is not None:
            self.idle.discard(self.sock)
        _shut_and_close(self.sock)

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
