"""The admin endpoint on both transports, started on 127.0.0.1 for the tests of tcpmgm.service.mi."""

import asyncio
import socket
import threading
import urllib.parse

from tcpmgm.service import mi

KINDS = ("thread", "asyncio")


class AsyncioEndpoint:
    """mi.serve on a loop of its own thread, so that blocking clients can call it."""

    def __init__(self, mgr, options):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(mi.serve(mgr, "127.0.0.1", 0, **options), self.loop).result(10)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/mi"

    def stop(self):
        async def close():
            self.server.close()
            await self.server.wait_closed()
            # wait_closed does not wait for the handlers of open connections (Python 3.11):
            # end them here, or they are destroyed pending when the loop closes under them.
            handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def start(kind, mgr, token=None, limits=None):
    """(something with .stop(), its URL) for the transport ``kind``; ``limits`` None: the defaults."""
    options = {"token": token} if limits is None else {"token": token, "limits": limits}
    if kind == "thread":
        server = mi.MIServer(mgr, "127.0.0.1", 0, **options).start()
        return server, server.url
    endpoint = AsyncioEndpoint(mgr, options)
    return endpoint, endpoint.url


def address(url):
    parts = urllib.parse.urlsplit(url)
    return parts.hostname, parts.port


def exchange(url, data, *, timeout=10.0):
    """Send ``data`` as is, end the sending side, and return every byte the endpoint answers."""
    with socket.create_connection(address(url), timeout=timeout) as client:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
        return received


def status_of(reply):
    """The status of an HTTP reply's status line, or None for no reply."""
    if not reply:
        return None
    line = reply.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1.1 ") and line[9:12].isdigit(), reply[:200]
    return int(line[9:12])
