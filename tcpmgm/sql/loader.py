"""Read the rule table into validated rules (the SQL side of a reload).

The loader asks the database which columns the table has, infers the schema
version from them (``parallel_read`` present: version 1), checks the optional
``version`` table, then streams the rows in batches (a server-side cursor on
PostgreSQL, an unbuffered one on MySQL) through a :class:`RowReader`
(:meth:`Rule.from_row`, with a compiled shortcut for rows that need no
judgement).  A NULL in a column that OpenSIPS declares NOT NULL is read as the
column's default, with a warning.  Bad rows are
collected, not raised: the caller decides (strict mode) whether they fail the
reload.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Callable

from ..matching.records import RuleRecords
from ..model.errors import DatabaseError, RuleError, RuleWarning, SchemaError
from ..model.profile import Profile
from ..model.rule import Rule
from .db import work_on
from .rows import row_reader
from .schema import (
    SCHEMA_VERSIONS,
    VERSION_TABLE,
    Dialect,
    TableNames,
    expected_version,
    require_columns,
    version_check,
)

__all__ = ["BATCH_SIZE", "LoadResult", "gc_paused", "load_rules", "version_row"]

log = logging.getLogger(__name__)

BATCH_SIZE = 10_000


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """What a load read: the accepted rules as a matcher's build records (in table order), the
    rejected rows' errors and the warnings (both in row order), the table's schema version."""

    records: RuleRecords
    rejected: tuple[RuleError, ...]
    warnings: tuple[RuleWarning, ...]
    schema_version: int

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The accepted rules as :class:`Rule` objects, in table order (made on demand from the
        compiled records: a reload that only builds a matcher never needs them)."""
        return tuple(self.records.rules())


def _table_columns(conn: Any, dialect: Dialect, names: TableNames) -> list[str]:
    with work_on(conn, f"cannot read table {names.table!r}", error=SchemaError) as cur:
        cur.execute(f"SELECT * FROM {dialect.quote(names.table)} WHERE 1 = 0")
        columns = [d[0] for d in cur.description]
        cur.fetchall()
    return columns


def version_row(conn: Any, dialect: Dialect, table: str) -> int | None:
    """The ``table_version`` recorded for ``table``; ``None`` when there is no version table/row."""
    q = dialect.quote
    try:
        with work_on(conn, "no usable version table") as cur:
            cur.execute(
                f"SELECT {q('table_version')} FROM {q(VERSION_TABLE)} WHERE {q('table_name')} = {dialect.placeholder}",
                (table,),
            )
            row = cur.fetchone()
    except DatabaseError as exc:  # no version table (or no access to it): the columns decide
        log.debug("%s", exc)
        return None
    if row is None or row[0] is None:
        return None
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise SchemaError(f"version table: table_version for {table!r} is {row[0]!r}, not a number") from None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector out of a load.

    Rules hold no reference cycles, but creating a million of them would start
    the collector hundreds of times, and its older-generation passes scan every
    live object, the rules in service included: a large share of a reload.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_rules(
    conn: Any,
    dialect: Dialect,
    names: TableNames,
    *,
    listeners: Mapping[str, Any] | None = None,
    defaults: Profile | None = None,
    schema_version: int | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Read and validate every row of the rule table over ``conn``.

    ``progress(n)`` is called with the number of rows of each batch fetched.
    """
    present = _table_columns(conn, dialect, names)
    require_columns(present, names)
    version = version_check(
        version_row(conn, dialect, names.table),
        expected_version(present, names),
        schema_version,
        names.table,
    )
    canonical = SCHEMA_VERSIONS[version]
    q = dialect.quote
    select = ", ".join(q(names.column(c)) for c in canonical)

    read = row_reader(canonical, listeners=listeners, defaults=defaults)
    records = RuleRecords()
    rejected: list[RuleError] = []
    warnings: list[RuleWarning] = []
    failure = f"reading table {names.table!r} failed"
    own: Exception | None = None
    with gc_paused(), work_on(conn, failure, stream=dialect) as cur:
        cur.execute(f"SELECT {select} FROM {q(names.table)}")
        while True:
            batch: Sequence[Sequence[Any]] = cur.fetchmany(batch_size)
            if not batch:
                break
            if progress is not None:
                progress(len(batch))
            try:
                read.read_batch(batch, records, rejected, warnings)
            except Exception as exc:
                own = exc
                break
    if own is not None:
        # tcpmgm's own failure (not the driver's) keeps its type and traceback for
        # the reload that reports it.
        raise own
    return LoadResult(records, tuple(rejected), tuple(warnings), version)
