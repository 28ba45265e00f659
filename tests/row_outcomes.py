"""What a row reader made of a row, comparable across readers, and values whose repr misbehaves
(tests of the row readers and of the messages they raise)."""

from collections.abc import Sequence
from typing import Any, Callable

from tcpmgm import Rule, RuleError


def attributes(rule: Rule) -> dict[str, Any]:
    """Everything a rule holds (its networks apart: they follow from the prefixes)."""
    held = {k: v for k, v in vars(rule).items() if k not in ("remote", "local")}
    held["profile"] = (type(held["profile"]), vars(held["profile"]))
    held["warnings"] = [str(w) for w in held["warnings"]]
    return held


def outcome(reader: Callable[[Sequence[Any]], Rule], values: Sequence[Any]) -> tuple[Any, ...]:
    """``("rule", attributes)`` or ``("error", message, rule_id, column)``."""
    try:
        rule = reader(values)
    except RuleError as exc:
        return "error", str(exc), exc.rule_id, exc.column
    return "rule", attributes(rule)


class RaisingRepr:
    """A column value whose repr fails: a message must still show something."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class HugeRepr:
    """A column value whose repr is 100,000 characters: a message must show it cut."""

    def __repr__(self) -> str:
        return "h" * 100_000
