"""Where rules come from: a database URL or an open DB-API connection.

A :class:`Source` knows its dialect and hands out a connection for one
reload.  URLs look like OpenSIPS's ``db_url``:

- ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` (standard library);
- ``postgres://user:pass@host:port/db`` or ``postgresql://...`` (psycopg 3,
  extra ``postgres``): libpq parses the URL, so every libpq URI parameter
  works (``?connect_timeout=5&options=-csearch_path%3Dopensips``), plus
  tcpmgm's own ``read_timeout``;
- ``mysql://user:pass@host:port/db`` (PyMySQL, extra ``mysql``), query
  parameters ``charset``, ``unix_socket``, ``connect_timeout`` and ``read_timeout``.

No server can stall tcpmgm: connecting gives up after ``connect_timeout``
seconds (:data:`CONNECT_TIMEOUT` unless the URL says otherwise), and each
round trip of a connection in use after ``read_timeout`` seconds
(:data:`READ_TIMEOUT`).  PyMySQL's reads and writes take socket timeouts;
psycopg has no client-side read timeout (and TCP keepalive cannot tell a
stalled server from an idle one: its kernel still acknowledges), so a
watchdog shuts the socket down when a wait outlives the timeout, which
libpq then reports as a lost connection.

SQLite opens the file anew for each use, which is cheap and thread-agnostic.
A server source keeps one connection between reloads, checks it with a ping
before reusing it and reconnects when the server closed it.  A
:class:`ConnectionSource` wraps a caller's connection and never closes,
commits or reconnects it.

Every exchange with a database runs as one unit of work in :func:`work_on`
(on a connection the caller holds: a reload's, the watcher's) or :func:`work`
(on a connection of a source): a cursor, the commit when asked, and on any
failure a rollback and one tcpmgm exception whose message names what failed.

Passwords live only in the private connect arguments: ``description``,
``repr`` and every message tcpmgm writes are built without them.  A driver is
handed the password as a connect argument of its own, never inside a string
it parses (libpq gets the URL with the password taken out of the userinfo),
so no driver message can quote it; messages are therefore shown as they are,
never "scrubbed" by replacing the password's text, which would garble every
word that happens to contain it and so reveal the password.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from ..model.errors import DatabaseError, TcpMgmError
from .schema import DIALECTS, Dialect

__all__ = [
    "ConnectionSource",
    "SQLiteSource",
    "ServerSource",
    "Source",
    "dialect_of_connection",
    "extra_requirement",
    "one_line",
    "open_source",
    "work",
    "work_on",
]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10  # seconds to establish a connection, unless the URL says otherwise (whole: libpq reads an integer)
READ_TIMEOUT = 30  # seconds one round trip to the server may take, unless the URL says otherwise


def one_line(exc: BaseException) -> str:
    """A driver's (often multi-line) message as one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _rollback_quietly(conn: Any) -> None:
    """End a failed transaction (PostgreSQL refuses everything after an error
    until then); the connection may be gone, and the caller reports the first error."""
    with contextlib.suppress(Exception):
        conn.rollback()


def driver_module(conn: Any) -> str:
    """The top-level module of the driver behind ``conn`` (``"psycopg"``, ``"pymysql"``...);
    tcpmgm's own connection subclasses count as their driver's."""
    for cls in type(conn).__mro__:
        module = cls.__module__.split(".")[0]
        if module != "tcpmgm":
            return module
    return type(conn).__module__.split(".")[0]


def dialect_of_connection(conn: Any) -> Dialect:
    """Guess the dialect of an open DB-API connection from its driver module."""
    module = driver_module(conn)
    if module == "sqlite3":
        return DIALECTS["sqlite"]
    if module in ("psycopg", "psycopg2"):
        return DIALECTS["postgres"]
    if module in ("pymysql", "MySQLdb", "mysql"):
        return DIALECTS["mysql"]
    raise DatabaseError(f"cannot tell the SQL dialect of a {type(conn).__module__} connection")


@contextlib.contextmanager
def work_on(
    conn: Any,
    failure: str,
    *,
    error: type[TcpMgmError] = DatabaseError,
    commit: bool = False,
    stream: Dialect | None = None,
) -> Iterator[Any]:
    """A cursor on ``conn`` for one unit of work: the one way tcpmgm talks to a database.

    A driver's exception (each driver has classes of its own), from making the
    cursor to closing it, rolls the work back and is raised again as one
    ``error`` reading ``"{failure}: {driver message}"``; tcpmgm's own exceptions
    roll it back and pass unchanged.  With ``commit`` the work is committed when
    the block ends normally.  With ``stream`` (the connection's dialect) the
    rows stay on the server until fetched (:func:`_streaming_cursor`).
    """
    try:
        cur = conn.cursor() if stream is None else _streaming_cursor(conn, stream)
        try:
            yield cur
            if commit:
                conn.commit()
        finally:
            cur.close()
    except TcpMgmError:
        _rollback_quietly(conn)
        raise
    except Exception as exc:
        _rollback_quietly(conn)
        raise error(f"{failure}: {one_line(exc)}") from None


@contextlib.contextmanager
def work(
    source: Source,
    failure: str,
    *,
    error: type[TcpMgmError] = DatabaseError,
    commit: bool = False,
    create: bool = False,
) -> Iterator[Any]:
    """:func:`work_on` a connection of ``source`` (``create``: see :meth:`Source.connection`)."""
    with source.connection(create=create) as conn, work_on(conn, failure, error=error, commit=commit) as cur:
        yield cur


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
        if self.path != ":memory:" and not os.path.exists(self.path):
            folder = os.path.dirname(self.path)
            # sqlite3 would only say "unable to open database file".
            no_folder = bool(folder) and not os.path.isdir(folder)
            # sqlite3 would silently create a missing file: a typo in a URL would
            # leave an empty database behind and report a missing table.
            if not create:
                raise DatabaseError(
                    f"SQLite database {self.path!r} does not exist"
                    + (
                        f": the folder {folder!r} does not exist either"
                        if no_folder
                        else " (create it with 'tcpmgm db init')"
                    )
                )
            if no_folder:
                raise DatabaseError(
                    f"cannot open SQLite database {self.path!r} to create it: the folder {folder!r} does not exist"
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
        self,
        dialect: Dialect,
        description: str,
        server: str,
        connect: Callable[[bool], Any],
    ) -> None:
        super().__init__(dialect, description)
        self.server = server  # "host:port", named in connection errors
        self._connect = connect  # holds the password: never shown
        self._conn: Any = None
        self._lock = threading.RLock()

    def open(self, autocommit: bool = False) -> Any:
        try:
            return self._connect(autocommit)
        except Exception as exc:
            raise DatabaseError(
                f"cannot connect to {self.dialect.label} server at {self.server} ({self.description}): {one_line(exc)}"
            ) from None

    def _alive(self, conn: Any) -> bool:
        try:
            with work_on(conn, "ping") as cur:
                cur.execute("SELECT 1")
                cur.fetchall()
        except DatabaseError:
            return False
        return True

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def connection(self, *, create: bool = False) -> Iterator[Any]:
        with self._lock:
            if self._conn is not None and not self._alive(self._conn):
                self._discard()  # closed by the server, a restart, a network cut...
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


def _streaming_cursor(conn: Any, dialect: Dialect) -> Any:
    """A cursor whose rows stay on the server until fetched.

    PostgreSQL: a named (server-side) cursor, which needs a transaction, so
    an autocommit connection gets a plain cursor.  MySQL with PyMySQL: the
    unbuffered ``SSCursor``.  Either way ``fetchmany`` then holds one batch in
    memory, not the whole result next to the rules built from it.
    """
    module = driver_module(conn)
    if dialect.name == "postgres" and module == "psycopg" and not conn.autocommit:
        return conn.cursor(name="tcpmgm_rules")
    if dialect.name == "mysql" and module == "pymysql":
        import pymysql.cursors

        return conn.cursor(pymysql.cursors.SSCursor)
    return conn.cursor()


def split_url(url: str) -> SplitResult:
    """``url`` split into its parts; a malformed one is a :class:`DatabaseError`.

    urllib's own messages can quote the whole network location, password
    included, so each is replaced by a sentence of ours.
    """
    try:
        return urlsplit(url)
    except ValueError as exc:
        text = str(exc)
        if "IPv6" in text:
            reason = "an IPv6 address must be enclosed in a matching pair of '[' and ']'"
        elif "NFKC" in text:
            reason = "its host part holds characters that are not allowed there"
        else:
            reason = "what is between '[' and ']' is not an IPv6 address"
        raise DatabaseError(f"malformed database URL: {reason}") from None


def split_server_url(url: str) -> SplitResult:
    """:func:`split_url` for a database server's URL, which has a userinfo.

    An ``@`` after the network location means a password (or user) holding an
    unescaped ``/``, ``?`` or ``#``: urllib would read part of the secret as the
    host or the path, and a message would show it.  Refused without the URL.
    """
    parts = split_url(url)
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        raise DatabaseError(
            "malformed database URL: an '@' after the host; percent-encode '@', ':', '/', '?' "
            "and '#' in the user and password (%40, %3A, %2F, %3F, %23)"
        )
    return parts


def show(value: str, limit: int = 40) -> str:
    """A piece of a URL for a message: quoted, on one line, cut past ``limit`` characters."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def url_password(parts: SplitResult) -> str | None:
    """The password in the userinfo of ``parts``, percent-decoded; ``None`` when there is none."""
    return unquote(parts.password) if parts.password is not None else None


def without_password(parts: SplitResult) -> SplitResult:
    """``parts`` with the password taken out of the userinfo, and nothing else changed.

    urllib reads the userinfo as what precedes the last ``@`` of the network
    location and the password as what follows its first ``:``: cut exactly that.
    """
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return parts
    return parts._replace(netloc=f"{userinfo.partition(':')[0]}@{hostport}")


def url_port(parts: SplitResult, default: int, label: str) -> int:
    """The port of ``parts`` (``default`` when none is given), or a message that shows the text."""
    hostport = parts.netloc.rpartition("@")[2]
    if hostport.startswith("["):
        after = hostport.partition("]")[2]
        text = after[1:] if after.startswith(":") else ""
    else:
        text = hostport.partition(":")[2]
    return port_number(text, label) if text else default


def port_number(text: str, label: str) -> int:
    """The port ``text`` of a ``label`` URL names, or a message that shows the text."""
    if not (text.isascii() and text.isdigit()):
        raise DatabaseError(f"the port in the {label} URL is not a number: {show(text)}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise DatabaseError(f"the port in the {label} URL is out of range 1-65535: {show(text)}")
    return port


def seconds(key: str, value: str, label: str) -> float:
    """A timeout from a URL parameter: a positive number of seconds."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise DatabaseError(f"{label} URL parameter {key!r} must be a number of seconds above 0, got {show(value)}")
    return number


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:`` URL (``sqlite:///rel``, ``sqlite:////abs``, ``sqlite:///:memory:``)."""
    parts = split_url(url)
    if parts.netloc not in ("", "localhost"):
        # Shown without a possible password: the rest of the URL tells which one is meant.
        shown = without_password(parts).geturl()
        raise DatabaseError(f"sqlite URL must not name a host: {show(shown)} (use sqlite:///path)")
    path = unquote(parts.path)
    path = path[1:] if path.startswith("/") else path
    if not path:
        raise DatabaseError("sqlite URL names no file (use sqlite:///path)")
    return path


@functools.cache
def extra_requirement(extra: str) -> str:
    """What the ``extra`` of tcpmgm installs, quoted for pip (from the installed metadata: one definition,
    pyproject's); empty when the metadata is not there."""
    from importlib import metadata

    try:
        requires = metadata.requires("tcpmgm") or []
    except metadata.PackageNotFoundError:
        requires = []
    marker = f'extra == "{extra}"'
    found = [r.split(";")[0].strip() for r in requires if marker in r]
    return " ".join(f"'{r}'" for r in found)


def _driver(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # the driver is there, one of its own imports is not
            raise DatabaseError(f"the {module} driver failed to import: {one_line(exc)}") from exc
        requirement = extra_requirement(extra) or module
        raise DatabaseError(
            f"this URL needs the {module} driver: pip install {requirement} "
            f"(or, from a tcpmgm checkout, pip install '.[{extra}]')"
        ) from None
    except ImportError as exc:  # installed but broken (a C part that does not load, ...)
        raise DatabaseError(f"the {module} driver failed to import: {one_line(exc)}") from exc


@contextlib.contextmanager
def watchdog(fileno: int, limit: float, what: str) -> Iterator[Callable[[], bool]]:
    """Shut the socket ``fileno`` down if the block is still running after ``limit`` seconds.

    A blocked read then sees the connection end, so the driver raises
    instead of waiting for a server that may never answer.  Yields a
    function telling whether the watchdog fired (then the driver's "server
    closed the connection" is really a timeout).
    """
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def expire() -> None:
        with lock:
            if state["done"]:
                return  # the block ended just in time: leave the connection alone
            state["fired"] = True
        log.warning("%s: no answer in time, dropping the connection", what)
        with contextlib.suppress(OSError):
            # shutdown() acts on the socket, not on the descriptor: a duplicate reaches
            # it and leaves the driver's own descriptor for the driver to close.
            dup = socket.socket(fileno=os.dup(fileno))
            try:
                dup.shutdown(socket.SHUT_RDWR)
            finally:
                dup.close()

    timer = threading.Timer(limit, expire)
    timer.daemon = True
    timer.start()
    try:
        yield lambda: state["fired"]
    finally:
        with lock:
            state["done"] = True
        timer.cancel()


@functools.cache
def _postgres_connection_class(psycopg: Any) -> type[Any]:
    """psycopg's ``Connection`` with a read timeout.

    Every exchange with the server (a query, a fetch, a ping) runs through
    ``Connection.wait``, so a watchdog around it bounds each round trip.
    """

    class TimedConnection(psycopg.Connection):  # type: ignore[misc]  # the module is passed in, as Any
        read_timeout: float | None = None
        server = ""

        def wait(self, *args: Any, **kwargs: Any) -> Any:
            limit = self.read_timeout
            timeout = kwargs.get("timeout")
            if limit is None or (timeout is not None and timeout <= limit):
                return super().wait(*args, **kwargs)  # already bounded (a notifies() wait)
            what = f"PostgreSQL server at {self.server}"
            with watchdog(self.pgconn.socket, limit, what) as fired:
                try:
                    return super().wait(*args, **kwargs)
                except psycopg.Error:
                    if fired():
                        raise psycopg.OperationalError(
                            f"no answer from the server within the read timeout ({limit:g} s)"
                        ) from None
                    raise

    return TimedConnection


def _strip_query(query: str, key: str) -> tuple[str, list[str]]:
    """``query`` without its ``key=...`` parameters, byte for byte otherwise, and their values."""
    kept, values = [], []
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        if unquote(name) == key:
            values.append(unquote(value))
        else:
            kept.append(item)
    return "&".join(kept), values


def postgres_source(url: str) -> ServerSource:
    """A PostgreSQL source; libpq parses the URL (both ``postgres://`` and ``postgresql://``).

    libpq gets the URL without the password (passed as a parameter of its own,
    so no libpq message can quote it) and without ``read_timeout`` (tcpmgm's,
    unknown to libpq).
    """
    psycopg = _driver("psycopg", "postgres")
    from psycopg.conninfo import conninfo_to_dict

    parts = split_server_url(url)
    password = url_password(parts)
    query, values = _strip_query(parts.query, "read_timeout")
    read_timeout = seconds("read_timeout", values[-1], "PostgreSQL") if values else READ_TIMEOUT
    if password is not None or values:
        # Rebuilt from the parts (urlunsplit would drop the "//" of a URL without a host).
        rest = without_password(parts)._replace(query=query).geturl()[len(parts.scheme) + 1 :]
        url = f"{parts.scheme}:{rest if rest.startswith('//') else '//' + rest}"
    try:
        params: dict[str, Any] = conninfo_to_dict(url)
    except Exception as exc:
        raise DatabaseError(f"invalid PostgreSQL URL: {one_line(exc)}") from None
    # libpq would take a bad port here and refuse it only at the first connect;
    # a URL may list several hosts, so it may list several ports.
    for text in str(params.get("port") or "").split(","):
        if text:
            port_number(text, "PostgreSQL")
    if password is not None:
        params["password"] = password
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    host = params.get("host") or "local socket"
    port = params.get("port") or "5432"
    description = (
        f"postgresql://{params.get('user') or ''}{'@' if params.get('user') else ''}"
        f"{params.get('host') or ''}:{port}/{params.get('dbname') or ''}"
    )
    server = f"{host}:{port}"
    timed = _postgres_connection_class(psycopg)

    def connect(autocommit: bool) -> Any:
        conn = timed.connect(**params, autocommit=autocommit)
        conn.read_timeout, conn.server = read_timeout, server
        return conn

    return ServerSource(DIALECTS["postgres"], description, server, connect)


_MYSQL_QUERY: dict[str, Callable[[str, str], Any]] = {
    "charset": lambda key, value: value,
    "unix_socket": lambda key, value: value,
    "connect_timeout": lambda key, value: seconds(key, value, "MySQL"),
    "read_timeout": lambda key, value: seconds(key, value, "MySQL"),
}


def mysql_source(url: str) -> ServerSource:
    """A MySQL/MariaDB source from ``mysql://user:pass@host:port/db``."""
    pymysql = _driver("pymysql", "mysql")
    parts = split_server_url(url)
    port = url_port(parts, 3306, "MySQL")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise DatabaseError("MySQL URL must name one database: mysql://user:pass@host:port/db")
    settings: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _MYSQL_QUERY:
            raise DatabaseError(f"unknown MySQL URL parameter {show(key)} (known: {', '.join(sorted(_MYSQL_QUERY))})")
        settings[key] = _MYSQL_QUERY[key](key, value)
    kwargs: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": port,
        "user": unquote(parts.username) if parts.username else "root",
        "password": url_password(parts) or "",
        "database": database,
        "charset": "utf8mb4",
        **settings,
    }
    # PyMySQL's connect_timeout covers only the TCP connect: the handshake reads
    # run under read_timeout.  A deadline over the whole connect keeps a server
    # that accepts and never answers within connect_timeout.
    kwargs["write_timeout"] = kwargs["read_timeout"]
    connect_timeout = kwargs.pop("connect_timeout")
    unix_socket = kwargs.pop("unix_socket", None)
    server = unix_socket or f"{kwargs['host']}:{port}"
    description = f"mysql://{kwargs['user']}@{kwargs['host']}:{port}/{database}"

    def connect(autocommit: bool) -> Any:
        started = time.monotonic()
        if unix_socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(connect_timeout)
            try:
                sock.connect(unix_socket)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((kwargs["host"], port), connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = pymysql.connect(**kwargs, autocommit=autocommit, defer_connect=True)
        left = max(connect_timeout - (time.monotonic() - started), 0.001)
        with watchdog(sock.fileno(), left, f"MySQL server at {server}") as fired:
            try:
                conn.connect(sock)  # PyMySQL closes the socket when this fails
            except pymysql.Error:
                if fired():
                    raise pymysql.OperationalError(
                        f"no answer from the server within the connect timeout ({connect_timeout:g} s)"
                    ) from None
                raise
        return conn

    return ServerSource(DIALECTS["mysql"], description, server, connect)


_SCHEMES = "sqlite, postgres, postgresql, mysql"


def open_source(db: Any) -> Source:
    """A :class:`Source` for a URL string, a path-like to an SQLite file, or a DB-API connection."""
    if isinstance(db, Source):
        return db
    if isinstance(db, os.PathLike):
        return SQLiteSource(os.fspath(db))
    if not isinstance(db, str):
        return ConnectionSource(db)
    parts = split_url(db)
    scheme = parts.scheme.lower()
    if scheme in ("sqlite", "sqlite3"):
        return SQLiteSource(sqlite_path(db))
    if scheme in ("postgres", "postgresql"):
        return postgres_source(db)
    if scheme == "mysql":
        return mysql_source(db)
    if not scheme and "@" not in db:
        # No "@", so no userinfo and no password in it: safe to show.
        raise DatabaseError(
            f"{show(db)} is not a database URL: an SQLite file is sqlite:///PATH "
            f"(here {show('sqlite:///' + db, 50)}); supported schemes: {_SCHEMES}"
        )
    raise DatabaseError(f"unsupported database URL scheme {show(scheme)} (supported: {_SCHEMES})")
