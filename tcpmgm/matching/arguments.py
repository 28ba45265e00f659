"""The checks of a matcher's arguments that both matchers make, with the same messages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..model.errors import RuleError, shown
from ..model.protocols import protocol_code
from ..model.rule import Rule

__all__ = ["check_schema_version", "check_top_hits_n", "check_unique_ids", "lookup_port", "lookup_proto"]

# The largest schema version a matcher keeps: the image header's field is a uint32 in which 0
# means unknown, and 0xFFFFFFFF is NONE in every uint32 of the format.
SCHEMA_VERSION_MAX = 0xFFFFFFFE


def check_unique_ids(rules: Iterable[Rule]) -> list[Rule]:
    """The rules as a list; :class:`RuleError` on the first repeated id."""
    seen: dict[int, Rule] = {}
    out = []
    for rule in rules:
        if not isinstance(rule, Rule):
            raise TypeError(f"rules must be tcpmgm.Rule objects, got {type(rule).__name__}")
        if rule.id in seen:
            raise RuleError(rule.id, "id", rule.id, "duplicate id")
        seen[rule.id] = rule
        out.append(rule)
    return out


def lookup_proto(proto: Any) -> int:
    """The protocol code a lookup asks for (0: any); ``ValueError`` if unknown."""
    if proto is not None and not isinstance(proto, str):
        raise TypeError(f"proto: expected str or None, got {type(proto).__name__}")
    code = protocol_code(proto)
    if code is None:
        raise ValueError(f"proto: unknown protocol {shown(proto)}")
    return code


def lookup_port(port: Any, argument: str) -> int:
    if port is None:
        return 0
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{argument}: expected int, got {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"{argument}: {shown(port)} is outside 0..65535")
    return port


def check_top_hits_n(n: Any) -> None:
    """``top_hits(n)``'s ``n``: an ``int`` (not a bool), 0 or more."""
    if type(n) is not int:
        raise TypeError(f"n: expected int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be 0 or more, not {n}")


def check_schema_version(version: Any) -> None:
    """``from_records``' ``schema_version``: ``None`` (unknown) or an ``int`` 1..SCHEMA_VERSION_MAX."""
    if version is None:
        return
    if type(version) is not int:
        raise TypeError(f"schema_version: expected int or None, got {type(version).__name__}")
    if not 1 <= version <= SCHEMA_VERSION_MAX:
        raise ValueError(f"schema_version: {shown(version)} is not a schema version")
