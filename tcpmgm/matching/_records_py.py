"""The build input of a matcher, in pure Python (the twin of ``RuleRecords`` in ``_matcher.pyx``).

A reload appends the rules it validated, in database order, and builds a
matcher from them (docs/architecture.md#a-reload).  This twin keeps
the :class:`Rule` objects as given and their ids in a set (the loader's
duplicate check); the compiled one keeps C records only and makes the rules
on demand.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..model.rule import Rule
from .arguments import check_unique_ids

__all__ = ["RuleRecords"]


class RuleRecords:
    """Validated rules in the order they were appended ("as given")."""

    __slots__ = ("_ids", "_rules")

    def __init__(self) -> None:
        self._rules: list[Rule] = []
        self._ids: set[int] = set()

    def append(self, rule: Rule) -> None:
        """Append ``rule``; a repeated id is kept, for the matcher build to refuse by name."""
        if not isinstance(rule, Rule):
            check_unique_ids((rule,))  # raises the matchers' TypeError
        self._rules.append(rule)
        self._ids.add(rule.id)

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, rule_id: object) -> bool:
        # An id is an int: 1.0 and True, equal to 1 in a set, are no id (as in the compiled twin).
        return type(rule_id) is int and rule_id in self._ids

    def rules(self) -> Iterator[Rule]:
        """The rules as given."""
        return iter(self._rules)
