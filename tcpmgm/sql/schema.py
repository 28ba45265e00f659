"""The ``tcp_mgm`` table as OpenSIPS defines it, per SQL dialect, with renames.

Schema version 1 has ``parallel_read``; version 2 does not.  Which OpenSIPS
releases read which version is :data:`OPENSIPS_RELEASES` (said in words by
:func:`opensips_releases`), the one statement of it.  The optional ``version``
table holds one row per table (``table_name``, ``table_version``).  Table and column names come from
configuration, so each one is checked against a strict identifier pattern and
then quoted for its dialect: a name can never smuggle SQL into a statement.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

from ..model.errors import SchemaError
from ..model.profile import OPENSIPS_DEFAULTS
from ..model.rule import COLUMNS

__all__ = [
    "DEFAULT_SCHEMA_VERSION",
    "DIALECTS",
    "NULLABLE_COLUMNS",
    "OPENSIPS_RELEASES",
    "SCHEMA_VERSIONS",
    "Dialect",
    "TableNames",
    "create_table_statements",
    "known_schema_version",
    "opensips_releases",
]

DEFAULT_SCHEMA_VERSION = 2
SCHEMA_VERSIONS: dict[int, tuple[str, ...]] = {
    1: COLUMNS,
    2: tuple(c for c in COLUMNS if c != "parallel_read"),
}
VERSION_TABLE = "version"

# The OpenSIPS releases whose tcp_mgm reads each schema version (TCP_TABLE_VERSION in
# modules/tcp_mgm/tcp_db.c): 1 from 3.3 to 3.6; 2 from 4.0 on, since the change that dropped
# parallel_read (f8e7ec10e3, 2026-04-17).  (first release, last release or None: every later one)
OPENSIPS_RELEASES: dict[int, tuple[str, str | None]] = {1: ("3.3", "3.6"), 2: ("4.0", None)}


def known_schema_version(schema_version: int) -> int:
    """``schema_version`` when tcpmgm knows it, else :class:`SchemaError`."""
    if schema_version not in SCHEMA_VERSIONS:
        known = ", ".join(map(str, SCHEMA_VERSIONS))
        raise SchemaError(f"unknown schema version {schema_version!r} (known: {known})")
    return schema_version


def opensips_releases(schema_version: int, *, latest: str | None = None) -> str:
    """The OpenSIPS releases that read ``schema_version``, in words ("3.3 to 3.6", "4.0 and later");
    ``latest`` ends an open range there ("4.0 to 4.1.0-dev": the releases a statement was checked on)."""
    first, last = OPENSIPS_RELEASES[known_schema_version(schema_version)]
    last = last or latest
    return f"{first} to {last}" if last else f"{first} and later"


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


@dataclasses.dataclass(frozen=True)
class Dialect:
    """What differs between SQL backends for the statements tcpmgm issues."""

    name: str
    quote_char: str
    placeholder: str
    id_type: str  # the auto-increment primary key
    text_type: str  # CHAR / VARCHAR, with a {n} for the length
    uint_type: str  # unsigned integers (MySQL) or plain ones
    int_type: str  # signed integers (priority)
    table_suffix: str = ""
    label: str = ""  # the product's name, for messages
    returning: bool = False  # INSERT ... RETURNING gives the new id (cursor.lastrowid does not)

    def quote(self, identifier: str) -> str:
        """``identifier`` quoted for this dialect, after checking it is a plain name."""
        if not isinstance(identifier, str) or not _IDENTIFIER.match(identifier):
            raise SchemaError(
                f"invalid SQL identifier {identifier!r}: use letters, digits and '_' "
                "(not starting with a digit, at most 63 characters)"
            )
        return f"{self.quote_char}{identifier}{self.quote_char}"


DIALECTS: dict[str, Dialect] = {
    "sqlite": Dialect(
        "sqlite",
        '"',
        "?",
        "INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL",
        "CHAR({n})",
        "INTEGER",
        "INTEGER",
        label="SQLite",
    ),
    "postgres": Dialect(
        "postgres",
        '"',
        "%s",
        "SERIAL PRIMARY KEY NOT NULL",
        "VARCHAR({n})",
        "INTEGER",
        "INTEGER",
        label="PostgreSQL",
        returning=True,
    ),
    "mysql": Dialect(
        "mysql",
        "`",
        "%s",
        "INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL",
        "CHAR({n})",
        "INT UNSIGNED",
        "INT",
        " ENGINE=InnoDB",
        label="MySQL/MariaDB",
    ),
}

# The columns OpenSIPS declares without NOT NULL; a NULL anywhere else is a bad row.
NULLABLE_COLUMNS = frozenset({"remote_addr", "local_addr", "attrs"})

_TEXT_LENGTHS = {"proto": 8, "remote_addr": 43, "local_addr": 43, "attrs": 255}


@dataclasses.dataclass(frozen=True)
class TableNames:
    """The table's name and each canonical column's name in the database."""

    table: str = "tcp_mgm"
    columns: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(COLUMNS))
        if unknown:
            raise SchemaError(f"unknown column(s) to rename: {', '.join(unknown)} (columns: {', '.join(COLUMNS)})")
        names = [self.column(c) for c in COLUMNS]
        if len(set(n.lower() for n in names)) != len(names):
            raise SchemaError(f"column renames give two columns the same name: {dict(self.columns)}")
        probe = DIALECTS["sqlite"]
        probe.quote(self.table)
        for name in names:
            probe.quote(name)

    def column(self, canonical: str) -> str:
        return self.columns.get(canonical, canonical)


def _column_ddl(dialect: Dialect, column: str) -> str:
    if column == "id":
        return dialect.id_type
    if column in _TEXT_LENGTHS:
        text = dialect.text_type.format(n=_TEXT_LENGTHS[column])
        return f"{text} DEFAULT NULL" if column in NULLABLE_COLUMNS else f"{text} DEFAULT 'any' NOT NULL"
    if column == "priority":
        return f"{dialect.int_type} DEFAULT 0 NOT NULL"
    if column in ("remote_port", "local_port"):
        return f"{dialect.uint_type} DEFAULT 0 NOT NULL"
    return f"{dialect.uint_type} DEFAULT {int(getattr(OPENSIPS_DEFAULTS, column))} NOT NULL"


def create_table_statements(
    dialect: Dialect,
    names: TableNames,
    schema_version: int = DEFAULT_SCHEMA_VERSION,
) -> tuple[str, ...]:
    """``CREATE TABLE`` statements for the rule table and the ``version`` table."""
    q = dialect.quote
    columns = ",\n    ".join(
        f"{q(names.column(c))} {_column_ddl(dialect, c)}" for c in SCHEMA_VERSIONS[known_schema_version(schema_version)]
    )
    version_table = (
        f"CREATE TABLE IF NOT EXISTS {q(VERSION_TABLE)} (\n"
        f"    {q('table_name')} {dialect.text_type.format(n=32)} NOT NULL,\n"
        f"    {q('table_version')} {dialect.uint_type} DEFAULT 0 NOT NULL,\n"
        f"    CONSTRAINT {q('t_name_idx')} UNIQUE ({q('table_name')})\n)"
        f"{dialect.table_suffix}"
    )
    rules_table = f"CREATE TABLE {q(names.table)} (\n    {columns}\n){dialect.table_suffix}"
    return version_table, rules_table


def expected_version(present_columns: Iterable[str], names: TableNames) -> int:
    """The schema version a table's columns say it has (1 if it has parallel_read)."""
    lowered = {c.lower() for c in present_columns}
    return 1 if names.column("parallel_read").lower() in lowered else 2


def require_columns(present_columns: Iterable[str], names: TableNames) -> None:
    """:class:`SchemaError` naming the columns of schema version 2 that the table lacks."""
    lowered = {c.lower() for c in present_columns}
    missing = [names.column(c) for c in SCHEMA_VERSIONS[2] if names.column(c).lower() not in lowered]
    if missing:
        raise SchemaError(f"table {names.table!r} lacks column(s): {', '.join(missing)}")


def version_check(found: int | None, columns_version: int, wanted: int | None, table: str) -> int:
    """The schema version to read with; :class:`SchemaError` when they disagree."""
    expected = wanted if wanted is not None else columns_version
    if wanted is not None and wanted != columns_version:
        raise SchemaError(
            f"table {table!r}: expected schema version {wanted}, but its columns are those of version {columns_version}"
        )
    if found is not None and found != expected:
        raise SchemaError(f"table {table!r}: version table says {found}, expected {expected}")
    return expected
