"""Where rules come from: a database URL or an open DB-API connection.

A :class:`Source` knows its dialect and hands out a connection for one
reload.  URLs look like OpenSIPS's ``db_url``:

- ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` (standard library);
- ``postgres://user:pass@host:port/db`` or ``postgresql://...`` (psycopg 3,
  extra ``postgres``): the URL goes to libpq unchanged, so every libpq URI
  parameter works (``?connect_timeout=5&options=-csearch_path%3Dopensips``);
- ``mysql://user:pass@host:port/db`` (PyMySQL, extra ``mysql``), query
  parameters ``charset``, ``unix_socket`` and ``connect_timeout``.

SQLite opens the file anew for each use, which is cheap and thread-agnostic.
A server source keeps one connection between reloads, checks it with a ping
before reusing it and reconnects when the server closed it.  A
:class:`ConnectionSource` wraps a caller's connection and never closes,
commits or reconnects it.

Passwords live only in the private connect arguments: ``description``,
``repr`` and every message tcpmgm writes are built without them, and driver
messages are scrubbed of the password before they are quoted.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from typing import Any, Callable, Dict, Iterator, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import DatabaseError, TcpMgmError
from .schema import DIALECTS, Dialect

__all__ = [
    "Source", "SQLiteSource", "ServerSource", "ConnectionSource",
    "open_source", "dialect_of_connection", "streaming_cursor", "one_line", "rollback_quietly",
]

CONNECT_TIMEOUT = 10  # seconds, unless the URL says otherwise


def one_line(exc: BaseException) -> str:
    """A driver's (often multi-line) message as one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def rollback_quietly(conn: Any) -> None:
    """End a failed transaction (PostgreSQL refuses everything after an error
    until then); the connection may be gone, and the caller reports the first error."""
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001 - every driver has its own exception classes
        pass


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


@contextlib.contextmanager
def work(
    source: "Source", failure: str, *, error: type = DatabaseError, commit: bool = False, create: bool = False,
) -> Iterator[Any]:
    """A cursor for one unit of work on ``source``.

    A driver's exception (each driver has classes of its own) is rolled back
    and raised again as one ``error`` reading ``"{failure}: {driver message}"``;
    with ``commit`` the work is committed when the block ends normally.
    """
    with source.connection(create=create) as conn:
        cur = conn.cursor()
        try:
            yield cur
            if commit:
                conn.commit()
        except TcpMgmError:
            rollback_quietly(conn)
            raise
        except Exception as exc:  # noqa: BLE001 - see above
            rollback_quietly(conn)
            raise error(f"{failure}: {one_line(exc)}") from None
        finally:
            cur.close()


class Source:
    """A place to read rules from; ``connection()`` yields a DB-API connection."""

    dialect: Dialect

    def __init__(self, dialect: Dialect, description: str) -> None:
        self.dialect = dialect
        self.description = description  # safe to log: never holds a password

    @contextlib.contextmanager
    def connection(self, *, create: bool = False) -> Iterator[Any]:
        """A connection for one unit of work; ``create`` allows making a new
        database (only an SQLite file can be missing and created)."""
        raise NotImplementedError

    def open(self) -> Any:
        """A new connection of the caller's own (the watcher's), closed by the caller."""
        raise DatabaseError(f"{self.description}: cannot open a second connection")

    def close(self) -> None:
        """Release what the source holds open (nothing for most)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


class SQLiteSource(Source):
    def __init__(self, path: str) -> None:
        super().__init__(DIALECTS["sqlite"], f"sqlite:///{path}")
        self.path = path

    def open(self, create: bool = False) -> sqlite3.Connection:
        # sqlite3 would silently create a missing file: a typo in a URL would
        # leave an empty database behind and report a missing table.
        if not create and self.path != ":memory:" and not os.path.exists(self.path):
            raise DatabaseError(
                f"SQLite database {self.path!r} does not exist (create it with 'tcpmgm db init')"
            )
        try:
            # The watcher polls from its own thread; each connection is used by one thread at a time.
            return sqlite3.connect(self.path, check_same_thread=False)
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open SQLite database {self.path!r}: {exc}") from None

    @contextlib.contextmanager
    def connection(self, *, create: bool = False) -> Iterator[sqlite3.Connection]:
        conn = self.open(create)
        try:
            yield conn
        finally:
            conn.close()


class ServerSource(Source):
    """A PostgreSQL or MySQL/MariaDB server, reached with a driver's ``connect``.

    One connection is kept between uses (behind a lock: one user at a time)
    and pinged before reuse; after a failure it is dropped, so the next use
    connects afresh.
    """

    def __init__(
        self, dialect: Dialect, description: str, server: str,
        connect: Callable[[bool], Any], password: Optional[str],
    ) -> None:
        super().__init__(dialect, description)
        self.server = server            # "host:port", named in connection errors
        self._connect = connect
        self._password = password
        self._conn: Any = None
        self._lock = threading.RLock()

    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def open(self, autocommit: bool = False) -> Any:
        try:
            return self._connect(autocommit)
        except Exception as exc:  # noqa: BLE001 - each driver has its own exception classes
            raise DatabaseError(
                f"cannot connect to {self.dialect.label} server at {self.server} "
                f"({self.description}): {self._scrub(one_line(exc))}"
            ) from None

    def _alive(self, conn: Any) -> bool:
        try:
            cur = conn.cursor()
            try:
                cur.execute("SELECT 1")
                cur.fetchall()
            finally:
                cur.close()
            return True
        except Exception:  # noqa: BLE001 - any failure means: do not reuse
            return False

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def connection(self, *, create: bool = False) -> Iterator[Any]:
        with self._lock:
            if self._conn is not None and not self._alive(self._conn):
                self._discard()     # closed by the server, a restart, a network cut...
            if self._conn is None:
                self._conn = self.open()
            conn = self._conn
            try:
                yield conn
                # End the read transaction: on MySQL a transaction left open
                # would pin the next reload to this snapshot.
                conn.rollback()
            except BaseException:
                self._discard()
                raise

    def close(self) -> None:
        with self._lock:
            self._discard()


class ConnectionSource(Source):
    """An already-open DB-API connection owned by the caller (never closed here)."""

    def __init__(self, conn: Any) -> None:
        super().__init__(dialect_of_connection(conn), f"{type(conn).__module__} connection")
        self.conn = conn

    @contextlib.contextmanager
    def connection(self, *, create: bool = False) -> Iterator[Any]:
        yield self.conn


@contextlib.contextmanager
def streaming_cursor(conn: Any, dialect: Dialect) -> Iterator[Any]:
    """A cursor whose rows stay on the server until fetched.

    PostgreSQL: a named (server-side) cursor, which needs a transaction, so
    an autocommit connection gets a plain cursor.  MySQL with PyMySQL: the
    unbuffered ``SSCursor``.  Either way ``fetchmany`` then holds one batch in
    memory, not the whole result next to the rules built from it.
    """
    module = type(conn).__module__.split(".")[0]
    if dialect.name == "postgres" and module == "psycopg" and not conn.autocommit:
        cur = conn.cursor(name="tcpmgm_rules")
    elif dialect.name == "mysql" and module == "pymysql":
        import pymysql.cursors

        cur = conn.cursor(pymysql.cursors.SSCursor)
    else:
        cur = conn.cursor()
    try:
        yield cur
    finally:
        cur.close()


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


def _driver(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise DatabaseError(
            f"this URL needs the {module} driver: pip install 'tcpmgm[{extra}]'"
        ) from None


def postgres_source(url: str) -> ServerSource:
    """A PostgreSQL source; libpq parses the URL (both ``postgres://`` and ``postgresql://``)."""
    psycopg = _driver("psycopg", "postgres")
    from psycopg.conninfo import conninfo_to_dict

    try:
        params: Dict[str, Any] = conninfo_to_dict(url)
    except Exception as exc:  # noqa: BLE001 - the message may quote the URL: never show it
        password = urlsplit(url).password
        text = one_line(exc).replace(password, "***") if password else one_line(exc)
        raise DatabaseError(f"invalid PostgreSQL URL: {text}") from None
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    host = params.get("host") or "local socket"
    port = params.get("port") or "5432"
    description = (
        f"postgresql://{params.get('user') or ''}{'@' if params.get('user') else ''}"
        f"{params.get('host') or ''}:{port}/{params.get('dbname') or ''}"
    )
    return ServerSource(
        DIALECTS["postgres"], description, f"{host}:{port}",
        lambda autocommit: psycopg.connect(**params, autocommit=autocommit), params.get("password"),
    )


_MYSQL_QUERY = {"charset": str, "unix_socket": str, "connect_timeout": int}


def mysql_source(url: str) -> ServerSource:
    """A MySQL/MariaDB source from ``mysql://user:pass@host:port/db``."""
    pymysql = _driver("pymysql", "mysql")
    parts = urlsplit(url)
    try:
        port = parts.port or 3306
    except ValueError:
        raise DatabaseError(f"invalid port in MySQL URL {parts.hostname or ''}") from None
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise DatabaseError("MySQL URL must name one database: mysql://user:pass@host:port/db")
    password = unquote(parts.password) if parts.password is not None else None
    kwargs: Dict[str, Any] = {
        "host": parts.hostname or "localhost", "port": port,
        "user": unquote(parts.username) if parts.username else "root",
        "password": password or "", "database": database,
        "charset": "utf8mb4", "connect_timeout": CONNECT_TIMEOUT,
    }
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _MYSQL_QUERY:
            raise DatabaseError(
                f"unknown MySQL URL parameter {key!r} (known: {', '.join(sorted(_MYSQL_QUERY))})"
            )
        try:
            kwargs[key] = _MYSQL_QUERY[key](value)
        except ValueError:
            raise DatabaseError(f"MySQL URL parameter {key!r} must be a number, got {value!r}") from None
    server = kwargs.get("unix_socket") or f"{kwargs['host']}:{port}"
    description = f"mysql://{kwargs['user']}@{kwargs['host']}:{port}/{database}"
    return ServerSource(
        DIALECTS["mysql"], description, server,
        lambda autocommit: pymysql.connect(**kwargs, autocommit=autocommit), password,
    )


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
    if scheme in ("postgres", "postgresql"):
        return postgres_source(db)
    if scheme == "mysql":
        return mysql_source(db)
    raise DatabaseError(
        f"unsupported database URL scheme {scheme!r} (supported: sqlite, postgres, postgresql, mysql)"
    )
