"""The key that ranks rules (docs/behaviour.md#which-rule-wins), as data.

Among the rules that match a connection, the one with the smallest key wins.
:data:`LEVELS` is that key, one level per entry, the most significant first;
everything that ranks rules is derived from it:

* :func:`key_of`, the tuple :meth:`Rule.key <tcpmgm.model.rule.Rule.key>` returns;
* :func:`order_of`, the same key packed into one int (``Rule.order``): each
  level shifted above the next by its width, so that the ints compare as the
  tuples do.  Sorting a million ints is several times cheaper than sorting a
  million 9-tuples; the compiled matcher reads the levels above the id
  (``order >> ID_BITS``) and the id as two C int64;
* :func:`key_difference`, why one rule ranks after another (the loser reasons
  of ``explain`` and of the lint);
* the compiled row reader (``sql/_rows.pyx``), which packs ``Rule.order`` in C
  from the attributes, kinds and widths it reads here when it is imported
  (tests/test_key.py holds it to :func:`order_of`).

A level reads one attribute of the rule (``tcpmgm.model.rule.ATTRIBUTES``
names them) and turns it into an int by its :class:`Kind`.  This module needs
nothing of ``rule.py``: it reads rules by attribute name, so ``rule.py`` can
build on it.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, NamedTuple, cast

__all__ = ["ID_BITS", "LENGTH_OFFSET", "LEVELS", "Kind", "Level", "key_difference", "key_of", "order_of"]


class Kind(enum.Enum):
    """How a level turns the attribute it reads into its value (smaller wins)."""

    VALUE = "value"  # the attribute itself, an int
    ANY_NONE = "any is None"  # True when the attribute is None, its "any": naming one wins
    ANY_ZERO = "any is 0"  # True when the attribute is 0, its "any" (a port): naming one wins
    LENGTH = "length"  # minus the length of the attribute's Prefix (0 for None): the longer prefix wins


class Level(NamedTuple):
    """One level of the key."""

    name: str
    attribute: str  # the attribute of the rule it reads
    kind: Kind
    bits: int  # its width in Rule.order (the first level's value may be negative: nothing is above it)
    reason: str  # what a rule that loses at this level has, for key_difference


LEVELS: tuple[Level, ...] = (
    Level("priority", "priority", Kind.VALUE, 32, "a higher priority value"),
    Level("proto", "proto", Kind.ANY_NONE, 1, "protocol 'any' where the winner names a protocol"),
    Level("remote", "remote_prefix", Kind.ANY_NONE, 1, "remote 'any' where the winner names a remote network"),
    Level("remote_length", "remote_prefix", Kind.LENGTH, 8, "a shorter remote prefix"),
    Level("remote_port", "remote_port", Kind.ANY_ZERO, 1, "remote port 'any' where the winner names a port"),
    Level("local", "local_prefix", Kind.ANY_NONE, 1, "local 'any' where the winner names a local address"),
    Level("local_length", "local_prefix", Kind.LENGTH, 8, "a shorter local prefix"),
    Level("local_port", "local_port", Kind.ANY_ZERO, 1, "local port 'any' where the winner names a port"),
    Level("id", "id", Kind.VALUE, 64, "a higher id (full tie)"),
)

# Added to a LENGTH level's value in Rule.order, so that it packs as 0..128 (the longest prefix).
LENGTH_OFFSET = 128
# The width of the last level (the id), under everything else in Rule.order.
ID_BITS = LEVELS[-1].bits


def _expression(level: Level) -> str:
    """The Python expression of a rule's value at ``level``, for a rule named ``rule``."""
    value = f"rule.{level.attribute}"
    if level.kind is Kind.ANY_NONE:
        return f"{value} is None"
    if level.kind is Kind.ANY_ZERO:
        return f"{value} == 0"
    if level.kind is Kind.LENGTH:
        return f"-(prefix[2] if (prefix := {value}) is not None else 0)"
    return value


def _packed() -> str:
    """The Python expression of :func:`order_of`: each level's value (plus its
    offset) shifted above the next's.  Below the first level every value is in
    0 .. 2**bits - 1, so ``|`` adds it."""
    first, *rest = LEVELS
    packed = _expression(first)
    for level in rest:
        offset = f" + {LENGTH_OFFSET}" if level.kind is Kind.LENGTH else ""
        packed = f"({packed}) << {level.bits} | ({_expression(level)}{offset})"
    return packed


def _written_out(name: str, expression: str, doc: str) -> Callable[[object], Any]:
    """A function of one rule returning ``expression``, written out from the
    levels as dataclasses writes ``__init__`` from the fields: a loop over the
    levels costs several times more per call, and reloads and sorts make a
    million calls."""
    namespace: dict[str, Any] = {}
    exec(f"def {name}(rule):\n    return {expression}\n", namespace)
    function = cast(Callable[[object], Any], namespace[name])
    function.__module__, function.__qualname__, function.__doc__ = __name__, name, doc
    return function


key_of: Callable[[object], tuple[int, ...]] = _written_out(
    "key_of",
    "(" + ", ".join(_expression(level) for level in LEVELS) + ",)",
    "The key of ``rule`` (a :class:`~tcpmgm.model.rule.Rule`), one value per level.",
)
order_of: Callable[[object], int] = _written_out(
    "order_of",
    _packed(),
    ":func:`key_of` of ``rule`` as one int, each level shifted above the next by its width.",
)


def key_difference(loser: object, winner: object) -> str:
    """Why ``loser`` ranks after ``winner``: the first level of the key that differs."""
    for level, mine, theirs in zip(LEVELS, key_of(loser), key_of(winner)):
        if mine != theirs:
            if level.kind is Kind.VALUE:
                return f"{level.reason} ({mine} > {theirs})"
            if level.kind is Kind.LENGTH:  # the level above is equal: both rules name a network
                return f"{level.reason} (/{-mine} < /{-theirs})"
            return level.reason
    return "it is the winner"
