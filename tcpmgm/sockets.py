"""``tcpmgm.sockets``, the name the README documents: profiles applied to sockets.

The code lives in ``tcpmgm/service/sockets.py`` (docs/architecture.md).
"""

from .service.sockets import (
    apply,
    connect,
    tune,
    endpoint,
    parse_endpoint,
    KEEPALIVE_LIMITS,
    KeepaliveTimer,
    keepalive_timers,
)

__all__ = [
    "apply",
    "connect",
    "tune",
    "endpoint",
    "parse_endpoint",
    "KEEPALIVE_LIMITS",
    "KeepaliveTimer",
    "keepalive_timers",
]
