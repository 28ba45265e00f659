"""asyncio glue: servers and clients whose connections are tuned by the rules.

:func:`start_server` wraps ``asyncio.start_server``: every accepted
connection is looked up (peer and local address from the transport), tuned
(:func:`tcpmgm.apply`) and handed to the application as a :class:`Connection`
that carries its profile.  :func:`open_connection` is the client side:
lookup first, ``no_new_conn`` refusal, ``connect_timeout``, then tuning.

A :class:`Connection` closes itself when it has been idle (nothing read or
written through it) for the profile's ``con_lifetime`` seconds, the way
OpenSIPS expires idle TCP connections; a pending read then sees end of file.
``read()`` waits for the next data however long that takes (up to the idle
close); ``readexactly()`` and ``readuntil()`` read the rest of a message and
must finish within ``msg_read_timeout`` seconds.  A lifetime or read timeout
of 0 means "no limit".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable
from typing import Any, Callable

from ..model.profile import Profile
from .sockets import SupportsLookup, apply, connect_timeout, endpoint, refuse_if_forbidden

__all__ = ["Connection", "open_connection", "start_server"]

# The public module's name (tcpmgm.aio, the facade the README documents), not this file's.
log = logging.getLogger("tcpmgm.aio")

Handler = Callable[["Connection"], Awaitable[None]]


class Connection:
    """One tuned TCP connection: the asyncio stream pair plus its profile."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, profile: Profile) -> None:
        self.reader = reader
        self.writer = writer
        self.profile = profile
        self.peer = endpoint(writer.get_extra_info("peername"))
        self.local = endpoint(writer.get_extra_info("sockname"))
        self._loop = asyncio.get_running_loop()
        self._last_activity = self._loop.time()
        self._idle_task: asyncio.Task[None] | None = None
        if self.con_lifetime:
            self._idle_task = self._loop.create_task(self._close_when_idle())

    def __repr__(self) -> str:
        return f"<Connection {self.local} <- {self.peer} rule {self.profile.id}>"

    @property
    def con_lifetime(self) -> int:
        """Seconds of inactivity after which the connection is closed (0: never)."""
        return self.profile.con_lifetime

    @property
    def msg_read_timeout(self) -> int:
        """Seconds allowed for reading the rest of a started message (0: no limit)."""
        return self.profile.msg_read_timeout

    @property
    def socket(self) -> Any:
        return self.writer.get_extra_info("socket")

    def touch(self) -> None:
        """Count as activity now (postpones the idle close)."""
        self._last_activity = self._loop.time()

    async def _close_when_idle(self) -> None:
        while not self.writer.is_closing():
            remaining = self._last_activity + self.con_lifetime - self._loop.time()
            if remaining <= 0:
                log.debug("%r idle for %d s: closing", self, self.con_lifetime)
                self.writer.close()
                return
            await asyncio.sleep(remaining)

    # -- reading ----------------------------------------------------------------
    async def read(self, n: int = -1) -> bytes:
        """The next data (``b""`` at end of file, including after the idle close)."""
        data = await self.reader.read(n)
        self.touch()
        return data

    async def _in_time(self, read: Awaitable[bytes]) -> bytes:
        timeout = self.msg_read_timeout or None
        data = await asyncio.wait_for(read, timeout)
        self.touch()
        return data

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes within ``msg_read_timeout`` (``asyncio.TimeoutError`` otherwise)."""
        return await self._in_time(self.reader.readexactly(n))

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Data up to and including ``separator`` within ``msg_read_timeout``."""
        return await self._in_time(self.reader.readuntil(separator))

    # -- writing and closing ------------------------------------------------------
    def write(self, data: bytes) -> None:
        self.writer.write(data)
        self.touch()

    async def drain(self) -> None:
        await self.writer.drain()

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
    **kwargs: Any,
) -> asyncio.AbstractServer:
    """``asyncio.start_server`` whose callback gets a tuned :class:`Connection`.

    ``mgr`` is anything with ``lookup`` (a :class:`TcpMgm` or a matcher);
    ``proto`` is the protocol name rules are matched with.  Other keyword
    arguments go to ``asyncio.start_server`` (``ssl=``, ``reuse_port=`` ...).
    The connection is closed when the callback returns.
    """

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            remote = endpoint(writer.get_extra_info("peername"))
            local = endpoint(writer.get_extra_info("sockname"))
            profile = mgr.lookup(proto, remote[0], remote[1], local[0], local[1])
            apply(writer.get_extra_info("socket"), profile)
        except Exception:
            writer.close()
            raise
        conn = Connection(reader, writer, profile)
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
    **kwargs: Any,
) -> Connection:
    """Connect to ``host``:``port`` under the rules of ``mgr``; the client twin of :func:`start_server`.

    Raises :class:`tcpmgm.NoNewConnection` when the path's profile forbids
    new connections, ``asyncio.TimeoutError`` when ``connect_timeout``
    passes.  Other keyword arguments go to ``asyncio.open_connection``.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    remote = endpoint(infos[0][4])
    local_ip, local_port = local_addr if local_addr is not None else (None, 0)
    profile = mgr.lookup(proto, remote[0], remote[1], local_ip, local_port)
    refuse_if_forbidden(profile, proto, remote)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(remote[0], remote[1], local_addr=local_addr, **kwargs),
        connect_timeout(profile),
    )
    apply(writer.get_extra_info("socket"), profile)
    return Connection(reader, writer, profile)
