"""The warnings for NULLs in NOT NULL columns: one text for both row readers."""

from __future__ import annotations

from collections.abc import Iterable

from ..model.errors import RuleWarning
from ..model.rule import Rule

__all__ = ["null_warnings"]


def null_warnings(rule: Rule, columns: Iterable[str]) -> list[RuleWarning]:
    """Warnings for NULLs in columns the OpenSIPS schema declares NOT NULL.

    Such a table was not created the OpenSIPS way.  The NULL is read as the
    column's default in the reader's default profile (OpenSIPS's own defaults,
    what its DDL would have stored, unless ``set_default_profile`` changed
    them); refusing the row instead would drop its other columns too (a NAT
    pool's ``no_new_conn`` lost over a NULL ``keepidle``).
    ``id`` and ``proto`` have no default and were already refused by
    ``Rule.from_row``.
    """
    stored = rule.to_row()
    return [
        RuleWarning(rule.id, column, None, f"NULL in a NOT NULL column, read as the default {stored[column]}")
        for column in columns
    ]
