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


def expected(profile):
    """What ``keepalive_of`` must say for a socket tuned with ``profile``."""
    return (True, profile.keepidle, profile.keepinterval, profile.keepcount)
