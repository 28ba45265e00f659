"""Helpers shared by the socket and asyncio end-to-end tests."""

import socket

import tcpmgm


def matcher(*rows):
    return tcpmgm.Matcher([tcpmgm.Rule.from_row(row) for row in rows])


def keepalive_of(sock):
    """What the kernel says the socket's keepalive settings are."""
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0,
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


def os_defaults(family=socket.AF_INET):
    """``keepalive_of`` a fresh TCP socket: the operating system's own values."""
    with socket.socket(family, socket.SOCK_STREAM) as fresh:
        return keepalive_of(fresh)


def expected(profile, family=socket.AF_INET):
    """What ``keepalive_of`` must say for a fresh socket tuned with ``profile``:
    a timer of 0 leaves the operating system's value."""
    _, idle, interval, count = os_defaults(family)
    return (True, profile.keepidle or idle, profile.keepinterval or interval, profile.keepcount or count)
