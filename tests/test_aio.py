"""tcpmgm.aio end to end on loopback: accepted and opened connections carry their rule's socket options.

What each policy field does to a connection (idle close, message limits, slow sends, refusals,
aliasing) is in tests/test_aio_policy.py.
"""

import asyncio
import socket

import pytest
from keepalive import expected, keepalive_of, matcher, os_defaults

from tcpmgm.service import aio

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="needs Linux TCP keepalive options")

GENEROUS = 15.0  # seconds: an upper bound for "eventually", never a timing assertion


def _ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


HAVE_IPV6 = _ipv6_loopback()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, GENEROUS * 2))


SERVER_RULES = matcher(
    {"id": 1, "proto": "tcp", "remote_addr": "127.0.0.2", "keepidle": 11, "keepinterval": 12, "keepcount": 3},
    {
        "id": 2,
        "proto": "tcp",
        "remote_addr": "127.0.0.3",
        "keepidle": 21,
        "keepinterval": 22,
        "keepcount": 4,
    },
    {"id": 3, "proto": "tcp", "remote_addr": "::1", "keepidle": 31, "keepinterval": 32, "keepcount": 5},
)
CLIENT_RULES = matcher(
    {"id": 11, "proto": "tcp", "local_addr": "127.0.0.2", "keepidle": 111, "keepinterval": 112, "keepcount": 6},
    {"id": 12, "proto": "tcp", "local_addr": "127.0.0.3", "keepidle": 121, "keepinterval": 122, "keepcount": 7},
    {"id": 13, "proto": "tcp", "remote_addr": "::1", "keepidle": 131, "keepinterval": 132, "keepcount": 8},
)


async def echo_server(host, seen):
    """A server that records what each accepted connection carried, then echoes one line."""

    async def handle(conn):
        seen.append((conn.profile.id, conn.peer[0], keepalive_of(conn.socket)))
        line = await conn.readuntil(b"\n")
        conn.write(line)
        await conn.drain()

    return await aio.start_server(SERVER_RULES, handle, host, 0, proto="tcp")


async def talk(server_host, port, source):
    conn = await aio.open_connection(CLIENT_RULES, "tcp", server_host, port, local_addr=(source, 0))
    try:
        conn.write(b"ping\n")
        assert await conn.readuntil(b"\n") == b"ping\n"
        return conn.profile.id, keepalive_of(conn.socket)
    finally:
        conn.close()
        await conn.wait_closed()


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_each_side_carries_its_rules_keepalive(family):
    if family == "ipv6" and not HAVE_IPV6:
        pytest.skip("no IPv6 loopback (::1) on this machine")
    host, sources = ("127.0.0.1", ["127.0.0.2", "127.0.0.3"]) if family == "ipv4" else ("::1", ["::1"])

    async def scenario():
        seen = []
        server = await echo_server(host, seen)
        port = server.sockets[0].getsockname()[1]
        async with server:
            clients = [await talk(host, port, source) for source in sources]
        return seen, clients

    seen, clients = run(scenario())
    server_ids = [rule_id for rule_id, _, _ in seen]
    assert server_ids == ([1, 2] if family == "ipv4" else [3])
    for rule_id, _peer, options in seen:
        assert options == expected(SERVER_RULES.get(rule_id).profile)
    assert [rule_id for rule_id, _ in clients] == ([11, 12] if family == "ipv4" else [13])
    for rule_id, options in clients:
        assert options == expected(CLIENT_RULES.get(rule_id).profile)


def test_a_zero_keepalive_timer_leaves_the_os_value_on_both_sides():
    """Issue 10, item 19: aio tunes through tcpmgm.apply, so 0 is "not set" there too, never 1 s."""
    server_rules = matcher({"id": 21, "proto": "tcp", "remote_addr": "127.0.0.7", "keepidle": 0, "keepcount": 4})
    client_rules = matcher(
        {"id": 22, "proto": "tcp", "local_addr": "127.0.0.7", "keepinterval": 0, "keepcount": 0, "keepidle": 45}
    )

    async def scenario():
        seen = asyncio.get_running_loop().create_future()

        async def handle(conn):
            seen.set_result((conn.profile.id, keepalive_of(conn.socket)))
            await conn.read(1)

        server = await aio.start_server(server_rules, handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            conn = await aio.open_connection(client_rules, "tcp", "127.0.0.1", port, local_addr=("127.0.0.7", 0))
            client = (conn.profile.id, keepalive_of(conn.socket))
            accepted = await asyncio.wait_for(seen, GENEROUS)
            conn.close()
            await conn.wait_closed()
        return accepted, client

    accepted, client = run(scenario())
    _, idle, interval, count = os_defaults()
    assert accepted == (21, (True, idle, server_rules.get(21).profile.keepinterval, 4))
    assert client == (22, (True, 45, interval, count))
