"""asyncio glue: servers and clients whose connections follow their rule's policy.

:func:`start_server` wraps ``asyncio.start_server``: every accepted
connection is looked up (peer and local address from the transport), its
:class:`~tcpmgm.ConnectionPolicy` applied to the socket, and handed to the
application as a :class:`Connection` that carries the policy.
:func:`open_connection` is the client side: lookup first, ``no_new_conn``
refusal, ``connect_timeout``, then the socket options.

A :class:`Connection` acts on every field of its policy
(docs/operations.md#the-connection-policy-in-asyncio): it closes itself
after ``con_lifetime`` seconds without a read or a write; its read helpers
hold each message to ``msg_read_timeout`` from its first bytes and to
``max_msg_chunks`` reads, and drop the connection when it takes longer or
more reads; ``drain()`` times the send (write plus drain) against
``send_threshold``; ``may_alias()`` answers from ``alias_mode``.  What the
limits mean, and the read helpers themselves (its ``MessageReader``), are
defined once, in :mod:`tcpmgm.service.policy`; this module only feeds them
the reads and sends of asyncio streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable
from typing import Any, Callable

from ..model.errors import ConnectionDropped
from ..model.profile import Profile
from . import events
from .events import Event
from .policy import ConnectionPolicy, IncompleteMessage, Parser, ReadSteps, SlowSendHook, through
from .sockets import ConnectAttempt, SupportsLookup, endpoint

__all__ = ["Connection", "open_connection", "start_server"]

# The public module's name (tcpmgm.aio, the facade the README documents), not this file's.
log = logging.getLogger("tcpmgm.aio")

Handler = Callable[["Connection"], Awaitable[None]]

# The most one socket read takes: a read is one chunk of a message, as one recv() is in OpenSIPS.
CHUNK_SIZE = 65536
# asyncio's own limit for readuntil() (asyncio.StreamReader's default): a separator not
# found within this many bytes raises LimitOverrunError, as asyncio's readuntil() does.
READUNTIL_LIMIT = 65536


class Connection:
    """One TCP connection under its rule's :class:`~tcpmgm.ConnectionPolicy`: the asyncio
    stream pair, the policy (``conn.policy``) and the profile it came from (``conn.profile``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, policy: ConnectionPolicy) -> None:
        self.reader = reader
        self.writer = writer
        self.policy = policy
        self.peer = endpoint(writer.get_extra_info("peername"))
        self.local = endpoint(writer.get_extra_info("sockname"))
        self._loop = asyncio.get_running_loop()
        # The buffer, the framing and the message guard; the deadline on the loop's clock, which
        # asyncio's waits use.
        self._reader = policy.message_reader(self.peer, clock=self._loop.time)
        self._send_started: int | None = None  # perf_counter_ns of the first write not yet drained
        self._last_activity = self._loop.time()
        self._idle_task: asyncio.Task[None] | None = None
        if policy.idle_timeout is not None:
            self._idle_task = self._loop.create_task(self._close_when_idle(policy.idle_timeout))

    def __repr__(self) -> str:
        return f"<Connection {self.local} <- {self.peer} rule {self.profile.id}>"

    @property
    def profile(self) -> Profile:
        return self.policy.profile

    @property
    def socket(self) -> Any:
        return self.writer.get_extra_info("socket")

    def may_alias(self, asked_alias: bool) -> bool:
        """May this connection be reused for requests towards its peer (``alias_mode``)?
        ``asked_alias``: the request's Via carries RFC 5923's ``;alias``."""
        return self.policy.may_alias(asked_alias)

    def touch(self) -> None:
        """Count as activity now (postpones the idle close)."""
        self._last_activity = self._loop.time()

    async def _close_when_idle(self, lifetime: float) -> None:
        while not self.writer.is_closing():
            remaining = self._last_activity + lifetime - self._loop.time()
            if remaining <= 0:
                log.debug("%r idle for %g s: closing (con_lifetime)", self, lifetime)
                events.count(Event.IDLE_CLOSE)
                self.writer.close()
                return
            await asyncio.sleep(remaining)

    # -- reading ----------------------------------------------------------------
    def message(self) -> contextlib.AbstractContextManager[None]:
        """Make every read inside the block one message, for a protocol that reads a
        message in several calls (a header, then its body)::

            with conn.message():
                size = int.from_bytes(await conn.readexactly(4), "big")
                body = await conn.readexactly(size)

        ``msg_read_timeout`` runs from the message's first bytes and
        ``max_msg_chunks`` counts its reads across the calls, ``read()``'s
        included.  Outside such a block each ``read_message()``,
        ``readexactly()`` and ``readuntil()`` call reads one message, and a
        ``read()`` is a whole chunk.  A block inside another adds nothing.
        """
        return self._reader.message()

    async def _run(self, steps: ReadSteps) -> bytes:
        """Drive one of the reader's helpers with this stream's reads; a drop closes the connection."""
        try:
            wait = next(steps)
            while True:
                wait = steps.send(await self._chunk(wait))
        except StopIteration as done:
            result: bytes = done.value
            return result
        except ConnectionDropped as dropped:
            log.info("%r dropped: %s", self, dropped)
            # The reader gave the message up: a read after this one sees end of file rather than
            # the same verdict again (and the drop counted twice).
            self.close()
            raise

    async def _chunk(self, wait: float | None) -> bytes:
        """One read from the stream, within ``wait`` seconds (the message's time left)."""
        try:
            data = await asyncio.wait_for(self.reader.read(CHUNK_SIZE), wait)
        except asyncio.TimeoutError:
            self._reader.expired()
        if data:
            self.touch()
        return data

    async def read_message(self, parse: Parser) -> bytes:
        """The next message of a framed protocol: ``parse(buffer)``
        (:data:`tcpmgm.service.policy.Parser`, as every glue's ``read_message`` takes it)
        returns the message's length once ``buffer``, the bytes read so far with the message
        at their start, holds all of it, else ``None``; the bytes after the message stay for
        the next call.

        ``b""`` at end of file (or after the idle close) before the message's
        first byte; ``asyncio.IncompleteReadError`` when it ends the message
        (whose bytes are given up).
        :class:`tcpmgm.MessageTimeout` / :class:`tcpmgm.MessageTooFragmented`
        after closing the connection, when the message is not whole within
        ``msg_read_timeout`` of its first bytes or within ``max_msg_chunks``
        reads.  ``parse`` may raise to refuse a message (it is too long, say).
        """
        return await self._whole(self._reader.read_message(parse), None)

    async def _whole(self, steps: ReadSteps, expected: int | None) -> bytes:
        """A message that end of file must not cut: ``IncompleteReadError`` as asyncio's streams raise it."""
        try:
            return await self._run(steps)
        except IncompleteMessage as short:
            raise asyncio.IncompleteReadError(short.partial, expected) from None

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes: one message (see :meth:`read_message` for its limits);
        ``asyncio.IncompleteReadError`` at end of file, as ``StreamReader.readexactly``."""
        data = await self._whole(self._reader.exactly(n), n)
        if n and not data:
            raise asyncio.IncompleteReadError(data, n)
        return data

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Data up to and including ``separator``: one message (see :meth:`read_message`).

        ``asyncio.IncompleteReadError`` at end of file and
        ``asyncio.LimitOverrunError`` when :data:`READUNTIL_LIMIT` bytes hold
        no separator, as ``StreamReader.readuntil``.
        """
        find = through(separator)

        def within_limit(buffer: bytearray) -> int | None:
            length = find(buffer)
            if length is None and len(buffer) > READUNTIL_LIMIT:
                raise asyncio.LimitOverrunError(f"no {separator!r} in the first {READUNTIL_LIMIT} bytes", len(buffer))
            return length

        data = await self._whole(self._reader.read_message(within_limit), None)
        if not data:
            raise asyncio.IncompleteReadError(data, None)
        return data

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``-1``: what one read brings), whatever has arrived;
        ``b""`` at end of file, including after the idle close.

        A whole chunk by itself; inside :meth:`message` a read of that message.
        """
        return await self._run(self._reader.read(n))

    # -- writing and closing ------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue ``data``; the send it starts is timed until :meth:`drain` returns."""
        if self._send_started is None:
            self._send_started = time.perf_counter_ns()
        self.writer.write(data)
        self.touch()

    async def drain(self) -> None:
        """Wait until the written data is sent (``StreamWriter.drain``).

        The send, from the first :meth:`write` after the last drain to here,
        is measured against ``send_threshold``: over it, a warning on
        ``tcpmgm.aio`` names the peer, the rule and the microseconds, the slow
        send is counted and the policy's ``on_slow_send`` hook is called.
        """
        try:
            await self.writer.drain()
        finally:
            started, self._send_started = self._send_started, None
            if started is not None:
                elapsed_us = (time.perf_counter_ns() - started) // 1000
                self.policy.report_send(elapsed_us, self.peer, logger=log)

    def close(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
        self.writer.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):  # the peer went away first; closed is closed
            await self.writer.wait_closed()


async def start_server(
    mgr: SupportsLookup,
    client_connected_cb: Handler,
    host: Any = None,
    port: int | None = None,
    *,
    proto: str = "tcp",
    on_slow_send: SlowSendHook | None = None,
    **kwargs: Any,
) -> asyncio.AbstractServer:
    """``asyncio.start_server`` whose callback gets a :class:`Connection` under its policy.

    ``mgr`` is anything with ``lookup`` (a :class:`TcpMgm` or a matcher);
    ``proto`` is the protocol name rules are matched with; ``on_slow_send``
    is called with a :class:`tcpmgm.service.policy.SlowSend` after each slow
    send.  Other keyword arguments go to ``asyncio.start_server``
    (``ssl=``, ``reuse_port=`` ...).  The connection is closed when the
    callback returns.
    """

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            remote = endpoint(writer.get_extra_info("peername"))
            local = endpoint(writer.get_extra_info("sockname"))
            profile = mgr.lookup(proto, remote[0], remote[1], local[0], local[1])
            policy = ConnectionPolicy.from_profile(profile, on_slow_send=on_slow_send)
            policy.apply(writer.get_extra_info("socket"))
        except Exception:
            writer.close()
            raise
        conn = Connection(reader, writer, policy)
        try:
            await client_connected_cb(conn)
        finally:
            conn.close()
            await conn.wait_closed()

    return await asyncio.start_server(accepted, host, port, **kwargs)


async def open_connection(
    mgr: SupportsLookup,
    proto: str,
    host: str,
    port: int,
    *,
    local_addr: tuple[str, int] | None = None,
    on_slow_send: SlowSendHook | None = None,
    **kwargs: Any,
) -> Connection:
    """Connect to ``host``:``port`` under the rules of ``mgr``; the client twin of :func:`start_server`.

    Each address ``host`` resolves to is tried in turn under its own profile,
    as :func:`tcpmgm.connect` does (one loop for both:
    :class:`tcpmgm.sockets.ConnectAttempt`).  Raises
    :class:`tcpmgm.NoNewConnection` (counted once) when the profile of every
    address forbids new connections, ``asyncio.TimeoutError`` when
    ``connect_timeout`` passes (the last address's error when none connects).  ``on_slow_send`` as for
    :func:`start_server`; other keyword arguments go to
    ``asyncio.open_connection``.
    """
    loop = asyncio.get_running_loop()
    attempt = ConnectAttempt(mgr, proto, host, local_addr)
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    for _, remote, profile in attempt.paths(infos):
        policy = ConnectionPolicy.from_profile(profile, on_slow_send=on_slow_send)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(remote[0], remote[1], local_addr=local_addr, **kwargs),
                policy.connect_timeout,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            attempt.failed(exc)
            continue
        policy.apply(writer.get_extra_info("socket"))
        return Connection(reader, writer, policy)
    attempt.give_up()
