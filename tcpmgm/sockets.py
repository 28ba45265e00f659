"""``tcpmgm.sockets``, the name the README documents: profiles applied to sockets.

The code lives in ``tcpmgm/service/sockets.py`` (docs/architecture.md).
"""

from .service.sockets import (
    KEEPALIVE_LIMITS,
    KeepaliveTimer,
    apply,
    connect,
    endpoint,
    keepalive_timers,
    parse_endpoint,
    tune,
)

__all__ = [
    "KEEPALIVE_LIMITS",
    "KeepaliveTimer",
    "apply",
    "connect",
    "endpoint",
    "keepalive_timers",
    "parse_endpoint",
    "tune",
]
