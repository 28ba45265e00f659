"""Where rules come from: a database URL or an open DB-API connection.

A :class:`Source` knows its dialect and hands out a connection for one
reload.  For SQLite (the embedded default) each reload opens the file anew,
which is cheap and keeps the source usable from any thread.  URLs look like
OpenSIPS's ``db_url``: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Any, Iterator, Optional
from urllib.parse import unquote, urlsplit

from .errors import DatabaseError
from .schema import DIALECTS, Dialect

__all__ = ["Source", "open_source", "dialect_of_connection"]


def dialect_of_connection(conn: Any) -> Dialect:
    """Guess the dialect of an open DB-API connection from its driver module."""
    module = type(conn).__module__.split(".")[0]
    if module == "sqlite3":
        return DIALECTS["sqlite"]
    if module in ("psycopg", "psycopg2"):
        return DIALECTS["postgres"]
    if module in ("pymysql", "MySQLdb", "mysql"):
        return DIALECTS["mysql"]
    raise DatabaseError(f"cannot tell the SQL dialect of a {type(conn).__module__} connection")


class Source:
    """A place to read rules from; ``connection()`` yields a DB-API connection."""

    dialect: Dialect

    def __init__(self, dialect: Dialect, description: str) -> None:
        self.dialect = dialect
        self.description = description  # safe to log: never holds a password

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds open (nothing for most)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


class SQLiteSource(Source):
    def __init__(self, path: str) -> None:
        super().__init__(DIALECTS["sqlite"], f"sqlite:///{path}")
        self.path = path

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path)
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open SQLite database {self.path!r}: {exc}") from None
        try:
            yield conn
        finally:
            conn.close()


class ConnectionSource(Source):
    """An already-open DB-API connection owned by the caller (never closed here)."""

    def __init__(self, conn: Any) -> None:
        super().__init__(dialect_of_connection(conn), f"{type(conn).__module__} connection")
        self.conn = conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        yield self.conn


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:`` URL (``sqlite:///rel``, ``sqlite:////abs``, ``sqlite:///:memory:``)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise DatabaseError(f"sqlite URL must not name a host: {url!r} (use sqlite:///path)")
    path = unquote(parts.path)
    path = path[1:] if path.startswith("/") else path
    if not path:
        raise DatabaseError(f"sqlite URL names no file: {url!r} (use sqlite:///path)")
    return path


def open_source(db: Any) -> Source:
    """A :class:`Source` for a URL string, a path-like to an SQLite file, or a DB-API connection."""
    if isinstance(db, Source):
        return db
    if isinstance(db, os.PathLike):
        return SQLiteSource(os.fspath(db))
    if not isinstance(db, str):
        return ConnectionSource(db)
    scheme = urlsplit(db).scheme.lower()
    if scheme in ("sqlite", "sqlite3"):
        return SQLiteSource(sqlite_path(db))
    raise DatabaseError(f"unsupported database URL scheme {scheme!r} (supported: sqlite)")
