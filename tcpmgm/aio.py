"""``tcpmgm.aio``, the name the README documents: asyncio servers and connections with profiles applied.

The code lives in ``tcpmgm/service/aio.py`` (docs/architecture.md).
"""

from .service.aio import (
    Connection,
    open_connection,
    start_server,
)

__all__ = [
    "Connection",
    "open_connection",
    "start_server",
]
