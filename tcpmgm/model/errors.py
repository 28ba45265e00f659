"""The exceptions tcpmgm raises, in one hierarchy a caller can catch.

``TcpMgmError`` is the root.  ``RuleError`` and ``SchemaError`` are also
``ValueError`` so that code which already treats bad data as a ``ValueError``
keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArgumentError",
    "ConnectionDropped",
    "DatabaseError",
    "ImageError",
    "MessageTimeout",
    "MessageTooFragmented",
    "NoNewConnection",
    "ReloadError",
    "RuleError",
    "RuleWarning",
    "SchemaError",
    "TcpMgmError",
    "shown",
]


# How much of an offending value a message shows.
SHOWN_CHARS = 40
# An int of more bits than this is shown by its size: its decimal form costs
# time quadratic in its length, and past 4300 digits int's str() refuses.
_SHOWN_INT_BITS = 1024
_BRACKETS: dict[type, tuple[str, str]] = {
    list: ("[", "]"),
    tuple: ("(", ")"),
    set: ("{", "}"),
    frozenset: ("frozenset({", "})"),
    dict: ("{", "}"),
}
# The empty containers whose repr is not their brackets.
_EMPTY: dict[type, str] = {set: "set()", frozenset: "frozenset()"}


def shown(value: Any) -> str:
    """``value`` as a message shows it: its repr, cut with an ellipsis past
    :data:`SHOWN_CHARS` characters, whatever its type or size, never raising.

    The work is bounded by what is shown, not by the value: long text and
    containers are rendered only as far as the cut.
    """
    try:
        text = _rendered(value, SHOWN_CHARS)
    except Exception:
        text = f"<{type(value).__name__} object, repr failed>"
    if len(text) > SHOWN_CHARS:
        text = text[:SHOWN_CHARS] + "\u2026"
    return text


def _rendered(value: Any, room: int) -> str:
    """``repr(value)``, or a text longer than ``room`` when that repr would be."""
    kind = type(value)
    if kind is int and value.bit_length() > _SHOWN_INT_BITS:
        return f"<{'-' if value < 0 else ''}int of {value.bit_length()} bits>"
    if kind is str or kind is bytes:
        return repr(value[: room + 1])
    brackets = _BRACKETS.get(kind)
    if brackets is None:
        try:
            return repr(value)
        except Exception:
            return f"<{kind.__name__} object, repr failed>"
    if not value:
        return _EMPTY.get(kind, "".join(brackets))
    opening, closing = brackets
    parts, used = [], len(opening)
    for item in value.items() if kind is dict else value:
        if used > room:
            parts.append("...")
            break
        if kind is dict:
            key = _rendered(item[0], room - used)
            part = f"{key}: {_rendered(item[1], room - used - len(key) - 2)}"
        else:
            part = _rendered(item, room - used)
        parts.append(part)
        used += len(part) + 2
    if kind is tuple and len(parts) == 1 and len(value) == 1:
        return f"({parts[0]},)"
    return opening + ", ".join(parts) + closing


class TcpMgmError(Exception):
    """Base class of every error raised by tcpmgm."""


class RuleError(TcpMgmError, ValueError):
    """A row of the rule table is invalid (docs/behaviour.md#a-rule).

    ``rule_id`` is the row's id (``None`` when the id itself is unusable),
    ``column`` the offending column, ``value`` what the row held there and
    ``reason`` why it was refused.  The message shows the value through
    :func:`shown` (bounded); ``value`` keeps it as it was given.
    """

    def __init__(self, rule_id: Any, column: str, value: Any, reason: str) -> None:
        self.rule_id = rule_id
        self.column = column
        self.value = value
        self.reason = reason
        super().__init__(_message(rule_id, column, value, reason))

    # Keep pickling (multiprocessing, logging handlers) working.
    def __reduce__(self) -> tuple[type[RuleError], tuple[Any, str, Any, str]]:
        return (type(self), (self.rule_id, self.column, self.value, self.reason))


class RuleWarning:
    """Something odd about a row that is still loaded (host bits set, ...)."""

    __slots__ = ("column", "reason", "rule_id", "value")

    def __init__(self, rule_id: Any, column: str, value: Any, reason: str) -> None:
        self.rule_id = rule_id
        self.column = column
        self.value = value
        self.reason = reason

    def __str__(self) -> str:
        return _message(self.rule_id, self.column, self.value, self.reason)

    def __repr__(self) -> str:
        return f"RuleWarning({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RuleWarning):
            return NotImplemented
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


def _message(rule_id: Any, column: str, value: Any, reason: str) -> str:
    """The one format of RuleError and RuleWarning messages."""
    rule = "?" if rule_id is None else shown(rule_id)
    return f"rule {rule}: column {column!r}, value {shown(value)}: {reason}"


class ArgumentError(TcpMgmError, ValueError):
    """A function of tcpmgm was given an argument outside the values it takes."""


class SchemaError(TcpMgmError, ValueError):
    """The table is missing, has the wrong version, or lacks a column."""


class ImageError(TcpMgmError, ValueError):
    """An image file tcpmgm cannot open: truncated, corrupt, foreign or of another format
    version (docs/architecture.md#the-image); the message is ``image {path}: {reason}``."""


class DatabaseError(TcpMgmError):
    """The database could not be reached or a query failed."""


class ReloadError(TcpMgmError):
    """A reload failed; the previous rules stay in service.

    ``report`` holds the partial report (for a strict-mode failure, the
    rejected rows) when one exists.
    """

    def __init__(self, message: str, report: Any | None = None) -> None:
        super().__init__(message)
        self.report = report


class NoNewConnection(TcpMgmError, ConnectionRefusedError):
    """The profile for this path forbids opening a new connection (no_new_conn)."""


class ConnectionDropped(TcpMgmError, ConnectionError):
    """The connection policy dropped a connection (docs/operations.md#the-connection-policy).

    Raised by the read helpers after they closed the connection; ``rule_id``
    is the rule whose profile set the limit, ``peer`` the other end when known.
    """

    def __init__(self, message: str, *, rule_id: int, peer: Any = None) -> None:
        super().__init__(message)
        self.rule_id = rule_id
        self.peer = peer

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuilt, (type(self), str(self), self.rule_id, self.peer))


def _rebuilt(kind: type[ConnectionDropped], message: str, rule_id: int, peer: Any) -> ConnectionDropped:
    return kind(message, rule_id=rule_id, peer=peer)


class MessageTimeout(ConnectionDropped, TimeoutError):
    """A message was not complete ``msg_read_timeout`` seconds after its first byte."""


class MessageTooFragmented(ConnectionDropped):
    """A message needed more reads than the profile's ``max_msg_chunks`` allows."""
