"""Process-wide counts of what the connection policy did to connections.

The blocking and asyncio glue count here (a slow send, an idle close, ...);
monitoring reads :func:`snapshot`.  One counter per :class:`Event`, shared by
every manager and connection of the process, because a socket option or a
timeout is applied per process, not per rule set.
"""

from __future__ import annotations

import enum
import threading

__all__ = ["Event", "count", "snapshot"]


class Event(enum.Enum):
    """Something the policy did to one connection (the value is the metric's name part)."""

    NO_NEW_CONN_REFUSED = "no_new_conn_refusals"
    SLOW_SEND = "slow_sends"
    IDLE_CLOSE = "idle_closes"
    MESSAGE_TIMEOUT_CLOSE = "message_timeout_closes"
    CHUNK_LIMIT_CLOSE = "chunk_limit_closes"


_lock = threading.Lock()
_counts = dict.fromkeys(Event, 0)


def count(event: Event) -> None:
    """Count one ``event`` (thread-safe; a connection's loop may run in any thread)."""
    with _lock:
        _counts[event] += 1


def snapshot() -> dict[Event, int]:
    """Every event's count since the process started."""
    with _lock:
        return dict(_counts)
