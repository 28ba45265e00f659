"""The exceptions tcpmgm raises, in one hierarchy a caller can catch.

``TcpMgmError`` is the root.  ``RuleError`` and ``SchemaError`` are also
``ValueError`` so that code which already treats bad data as a ``ValueError``
keeps working.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "TcpMgmError",
    "RuleError",
    "RuleWarning",
    "SchemaError",
    "DatabaseError",
    "ReloadError",
    "NoNewConnection",
]


class TcpMgmError(Exception):
    """Base class of every error raised by tcpmgm."""


class RuleError(TcpMgmError, ValueError):
    """A row of the rule table is invalid (SPEC section 3).

    ``rule_id`` is the row's id (``None`` when the id itself is unusable),
    ``column`` the offending column, ``value`` what the row held there and
    ``reason`` why it was refused.
    """

    def __init__(self, rule_id: Any, column: str, value: Any, reason: str) -> None:
        self.rule_id = rule_id
        self.column = column
        self.value = value
        self.reason = reason
        super().__init__(
            f"rule {rule_id if rule_id is not None else '?'}: "
            f"column {column!r}, value {value!r}: {reason}"
        )

    def __reduce__(self):  # keep pickling (multiprocessing, logging handlers) working
        return (type(self), (self.rule_id, self.column, self.value, self.reason))


class RuleWarning:
    """Something odd about a row that is still loaded (host bits set, ...)."""

    __slots__ = ("rule_id", "column", "value", "reason")

    def __init__(self, rule_id: Any, column: str, value: Any, reason: str) -> None:
        self.rule_id = rule_id
        self.column = column
        self.value = value
        self.reason = reason

    def __str__(self) -> str:
        return f"rule {self.rule_id}: column {self.column!r}, value {self.value!r}: {self.reason}"

    def __repr__(self) -> str:
        return f"RuleWarning({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RuleWarning):
            return NotImplemented
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


class SchemaError(TcpMgmError, ValueError):
    """The table is missing, has the wrong version, or lacks a column."""


class DatabaseError(TcpMgmError):
    """The database could not be reached or a query failed."""


class ReloadError(TcpMgmError):
    """A reload failed; the previous rules stay in service.

    ``report`` holds the partial report (for a strict-mode failure, the
    rejected rows) when one exists.
    """

    def __init__(self, message: str, report: Optional[Any] = None) -> None:
        super().__init__(message)
        self.report = report


class NoNewConnection(TcpMgmError, ConnectionRefusedError):
    """The profile for this path forbids opening a new connection (no_new_conn)."""
