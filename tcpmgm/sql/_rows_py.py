"""Table rows to rules, in pure Python (the reference twin of ``_rows.pyx``).

A :class:`RowReader` is made once per load for the column order of the
``SELECT``.  Called with one row's values it returns the :class:`Rule` that
:meth:`Rule.from_row` makes of them, or raises its :class:`RuleError`;
:meth:`RowReader.read_batch` does that for a batch of rows the way a reload
needs it: the rules appended to a matcher's :class:`RuleRecords`, bad rows and
repeated ids collected, warnings gathered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..model.errors import RuleError, RuleWarning
from ..model.profile import Profile, default_profile
from ..model.rule import Rule
from .nulls import null_warnings

if TYPE_CHECKING:
    # Either twin's records (the compiled reader takes the compiled ones only).
    from ..matching.records import RuleRecords

__all__ = ["RowReader"]


class RowReader:
    def __init__(
        self,
        columns: Sequence[str],
        *,
        listeners: Mapping[str, Any] | None = None,
        defaults: Profile | None = None,
        not_null: Iterable[str] = (),
    ) -> None:
        self.columns = tuple(columns)
        self.listeners = listeners
        self.defaults = defaults if defaults is not None else default_profile()
        self.not_null = frozenset(not_null)

    def __call__(self, values: Sequence[Any]) -> Rule:
        return Rule.from_row(dict(zip(self.columns, values)), listeners=self.listeners, defaults=self.defaults)

    def read_batch(
        self,
        batch: Iterable[Sequence[Any]],
        records: RuleRecords,
        rejected: list[RuleError],
        warnings: list[RuleWarning],
    ) -> None:
        """Append each row's rule to ``records`` or its error to ``rejected`` (an id
        already in ``records`` is a repeated id), in row order, and the warnings of
        accepted rows, NULLs in ``not_null`` columns included, to ``warnings``."""
        for values in batch:
            try:
                rule = self(values)
            except RuleError as exc:
                rejected.append(exc)
                continue
            if rule.id in records:
                rejected.append(RuleError(rule.id, "id", values[self.columns.index("id")], "duplicate id"))
                continue
            records.append(rule)
            warnings.extend(rule.warnings)
            nulls = [c for c, v in zip(self.columns, values) if v is None and c in self.not_null]
            if nulls:
                warnings.extend(null_warnings(rule, nulls))
