"""Table rows to rules, in pure Python (the reference twin of ``_rows.pyx``).

A :class:`RowReader` is made once per load for the column order of the
``SELECT``; called with one row's values it returns the :class:`Rule` that
:meth:`Rule.from_row` makes of them, or raises its :class:`RuleError`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from .profile import Profile, default_profile
from .rule import Rule

__all__ = ["RowReader"]


class RowReader:
    def __init__(
        self, columns: Sequence[str], *,
        listeners: Optional[Mapping[str, Any]] = None, defaults: Optional[Profile] = None,
    ) -> None:
        self.columns = tuple(columns)
        self.listeners = listeners
        self.defaults = defaults if defaults is not None else default_profile()

    def __call__(self, values: Sequence[Any]) -> Rule:
        return Rule.from_row(dict(zip(self.columns, values)), listeners=self.listeners, defaults=self.defaults)
