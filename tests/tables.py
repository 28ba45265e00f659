"""Hand-made SQLite rule tables for tests: no constraints, any column names.

``TcpMgm.create_schema`` makes the table the way tcpmgm (and OpenSIPS) would;
these helpers make the tables an operator might have instead (no primary key,
columns in another order, renamed, NULLs where our DDL forbids them), so the
loader is tested on what it did not create itself.
"""

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from tcpmgm.model.profile import OPENSIPS_DEFAULTS
from tcpmgm.sql.schema import NULLABLE_COLUMNS, SCHEMA_VERSIONS

TEXT_COLUMNS = {"proto", "remote_addr", "local_addr", "attrs"}


def create_plain_table(
    conn: sqlite3.Connection,
    *,
    table: str = "tcp_mgm",
    schema_version: int = 2,
    rename: Optional[Mapping[str, str]] = None,
    columns: Optional[Iterable[str]] = None,
) -> None:
    """A rule table without any constraint (duplicate ids and NULLs allowed).

    Columns left out of an INSERT take OpenSIPS's defaults, as in its own
    table; a test that wants a NULL inserts one.
    """
    rename = rename or {}
    names = list(columns) if columns is not None else list(SCHEMA_VERSIONS[schema_version])
    ddl = ", ".join(f'"{rename.get(c, c)}" {"TEXT" if c in TEXT_COLUMNS else "INTEGER"}{_default(c)}' for c in names)
    conn.execute(f'CREATE TABLE "{table}" ({ddl})')
    conn.commit()


def insert(
    conn: sqlite3.Connection,
    row: Mapping[str, Any],
    *,
    table: str = "tcp_mgm",
    rename: Optional[Mapping[str, str]] = None,
) -> None:
    rename = rename or {}
    cols = ", ".join(f'"{rename.get(c, c)}"' for c in row)
    conn.execute(f'INSERT INTO "{table}" ({cols}) VALUES ({", ".join("?" * len(row))})', list(row.values()))
    conn.commit()


def _default(column: str) -> str:
    if column == "id" or column in NULLABLE_COLUMNS:
        return ""
    if column == "proto":
        return " DEFAULT 'any'"
    if column in ("remote_port", "local_port", "priority"):
        return " DEFAULT 0"
    return f" DEFAULT {int(getattr(OPENSIPS_DEFAULTS, column))}"
