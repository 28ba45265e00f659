"""Raw access to the rule table for operator tools: read rows as stored, delete a row.

The loader turns rows into validated rules; an operator listing the table
wants to see what is *stored*, invalid rows included, and to remove a row by
id.  Both go through the :class:`~tcpmgm.sql.db.Source` of a :class:`TcpMgm`, its
dialect's quoting and the table's renames, so they work on every backend the
manager supports.
"""

from __future__ import annotations

from typing import Any

from ..model.errors import SchemaError
from ..model.rule import COLUMNS
from .db import Source, work
from .schema import TableNames, require_columns

__all__ = ["count_rows", "read_rows", "remove_rule"]


def read_rows(source: Source, names: TableNames, *, by_id: bool = True) -> list[dict[str, Any]]:
    """Every row of the table, ordered by id, keyed by canonical column name.

    Only the canonical columns the table has are returned (``parallel_read``
    appears for schema version 1 only); values are as the driver gives them.
    A table without a required column (renames not given) is a :class:`SchemaError`.
    With ``by_id=False`` the rows come in the order the database returns them
    to a plain ``SELECT``, the order OpenSIPS reads them in
    (docs/opensips.md#opensips-pitfalls).
    """
    q = source.dialect.quote
    by_stored = {names.column(c).lower(): c for c in COLUMNS}
    order = f" ORDER BY {q(names.column('id'))}" if by_id else ""
    with work(source, f"cannot read table {names.table!r}", error=SchemaError) as cur:
        cur.execute(f"SELECT * FROM {q(names.table)}{order}")
        stored = [d[0] for d in cur.description]
        rows = cur.fetchall()
    # Renames not given: a listing without those columns would look like a valid table.
    require_columns(stored, names)
    wanted = [(i, by_stored[name.lower()]) for i, name in enumerate(stored) if name.lower() in by_stored]
    wanted.sort(key=lambda pair: COLUMNS.index(pair[1]))
    return [{canonical: row[i] for i, canonical in wanted} for row in rows]


def count_rows(source: Source, names: TableNames) -> int:
    """The number of rows in the table (for progress display)."""
    with work(source, f"cannot read table {names.table!r}", error=SchemaError) as cur:
        cur.execute(f"SELECT COUNT(*) FROM {source.dialect.quote(names.table)}")
        return int(cur.fetchone()[0])


def remove_rule(source: Source, names: TableNames, rule_id: int) -> bool:
    """Delete the row with ``rule_id``; ``False`` when there was none."""
    q = source.dialect.quote
    sql = f"DELETE FROM {q(names.table)} WHERE {q(names.column('id'))} = {source.dialect.placeholder}"
    with work(source, f"cannot delete from {names.table!r}", commit=True) as cur:
        cur.execute(sql, (int(rule_id),))
        deleted: int = cur.rowcount  # DB-API: an int (-1 when unknown)
    return deleted > 0
