"""``tcpmgm.aio``, the name the README documents: asyncio servers and connections with profiles applied.

The code lives in ``tcpmgm/service/aio.py`` (docs/architecture.md).
"""

from .service.aio import (
    Connection,
    start_server,
    open_connection,
)

__all__ = [
    "Connection",
    "start_server",
    "open_connection",
]
