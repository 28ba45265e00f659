"""Scratch namespaces on the real database servers, for the SQL, reload and watch tests.

Each test gets its own PostgreSQL schema or MariaDB database (dropped
afterwards) or SQLite file, so tests never see each other's tables, not even
the shared ``version`` table.  The servers themselves are never stopped or
reconfigured: outages are simulated with wrong ports, a :class:`Forwarder`
the test can cut, or by killing tcpmgm's own server session.

Outside CI a test skips (with the reason) when its server is unreachable;
with ``CI=true`` that is a failure.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"
MY_HOST, MY_PORT, MY_DB = "127.0.0.1", 3306, "test"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the server must be there)")
    pytest.skip(reason)


@functools.cache
def _pg_user() -> Any:
    """The first of postgres/root the server lets in, or the error text."""
    import psycopg

    errors = []
    for user in ("postgres", "root"):
        try:
            psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=user, connect_timeout=5).close()
            return user
        except psycopg.Error as exc:
            errors.append(f"{user}: {' '.join(str(exc).split())}")
    return RuntimeError("; ".join(errors))


def wait_until(predicate: Any, deadline: float = 5.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``deadline`` seconds pass; its last answer."""
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            return bool(predicate())
        time.sleep(step)
    return True


def free_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scratch:
    """One test's namespace: ``url`` for tcpmgm, ``execute`` for the test's own SQL."""

    backend = ""
    url = ""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement on a separate connection of the test's own (autocommitted)."""
        cur = self.admin.cursor()
        try:
            cur.execute(self._adapt(sql), tuple(params))
            return list(cur.fetchall()) if cur.description else []
        finally:
            cur.close()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        cur = self.admin.cursor()
        try:
            cur.executemany(self._adapt(sql), [tuple(r) for r in rows])
        finally:
            cur.close()

    def _adapt(self, sql: str) -> str:
        return sql

    def connect(self) -> Any:
        """A new DB-API connection into the namespace (caller closes it)."""
        raise NotImplementedError

    def kill_tcpmgm_sessions(self) -> int:
        """Terminate the server sessions of the connections tcpmgm opened in this test.

        Each is named by its own backend id (PostgreSQL pid, MySQL thread id),
        read from the connection object tcpmgm holds, never found by a scan of
        the server's session list: nothing that is not this test's is touched.
        Returns how many of them the server still had.
        """
        alive = self.live_backends()
        for backend in alive:
            with contextlib.suppress(Exception):
                self._terminate(backend)
        return len(alive)

    def live_backends(self) -> list[int]:
        """The backend ids of tcpmgm's connections that the server still serves."""
        ids = sorted(set(tcpmgm_backends))
        return self._live(ids) if ids else []

    def _live(self, ids: list[int]) -> list[int]:
        raise NotImplementedError

    def _terminate(self, backend: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# The backend id (PostgreSQL pid, MySQL thread id) of every server connection tcpmgm
# opened during the current test (ServerSource.open, wrapped by the autouse fixture
# below), read when it opened: the sessions a test may terminate.
tcpmgm_backends: list[int] = []


def _backend_id(conn: Any) -> int:
    info = getattr(conn, "info", None)  # psycopg
    return int(info.backend_pid) if info is not None else int(conn.thread_id())


@pytest.fixture(autouse=True)
def _track_tcpmgm_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from tcpmgm.sql.db import ServerSource

    real_open = ServerSource.open

    def open_and_track(self: Any, *args: Any, **kwargs: Any) -> Any:
        conn = real_open(self, *args, **kwargs)
        tcpmgm_backends.append(_backend_id(conn))
        return conn

    monkeypatch.setattr(ServerSource, "open", open_and_track)
    yield
    tcpmgm_backends.clear()


class SQLiteScratch(Scratch):
    backend = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.admin = self.connect()

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    def _adapt(self, sql: str) -> str:
        return sql.replace("%s", "?")

    def close(self) -> None:
        self.admin.close()


class PostgresScratch(Scratch):
    backend = "postgres"

    def __init__(self) -> None:
        import psycopg

        user = _pg_user()
        if isinstance(user, Exception):
            unavailable(f"PostgreSQL at {PG_HOST}:{PG_PORT} unreachable: {user}")
        self.user = user
        self.schema = f"tcpmgm_{uuid.uuid4().hex[:12]}"
        self._base = dict(host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=user)
        with psycopg.connect(**self._base, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        self.url = self.url_for(PG_HOST, PG_PORT)
        self.admin = self.connect()

    def url_for(self, host: str, port: int, password: str = "") -> str:
        auth = f"{self.user}:{password}" if password else self.user
        return (
            f"postgresql://{auth}@{host}:{port}/{PG_DB}"
            f"?options=-csearch_path%3D{self.schema}&application_name={self.schema}"
        )

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(
            **self._base,
            autocommit=True,
            options=f"-csearch_path={self.schema}",
            application_name=f"{self.schema}-test",
        )

    def _live(self, ids: list[int]) -> list[int]:
        # A pid is reused once its session ends: only ours if it also carries our schema's name.
        rows = self.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s) AND application_name = %s",
            (ids, self.schema),
        )
        return [pid for (pid,) in rows]

    def _terminate(self, backend: int) -> None:
        self.execute("SELECT pg_terminate_backend(%s)", (backend,))

    def close(self) -> None:
        self.admin.close()
        import psycopg

        with psycopg.connect(**self._base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


class MySQLScratch(Scratch):
    backend = "mysql"

    def __init__(self) -> None:
        import pymysql

        self.database = f"tcpmgm_{uuid.uuid4().hex[:12]}"
        try:
            root = pymysql.connect(
                host=MY_HOST, port=MY_PORT, user="root", password="", database=MY_DB, autocommit=True, connect_timeout=5
            )
        except pymysql.Error as exc:
            unavailable(f"MariaDB at {MY_HOST}:{MY_PORT} unreachable: {exc}")
        with root, root.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{self.database}`")
        self.url = self.url_for(MY_HOST, MY_PORT)
        self.admin = self.connect()

    def url_for(self, host: str, port: int, password: str = "") -> str:
        auth = f"root:{password}" if password else "root"
        return f"mysql://{auth}@{host}:{port}/{self.database}"

    def connect(self) -> Any:
        import pymysql

        return pymysql.connect(
            host=MY_HOST, port=MY_PORT, user="root", password="", database=self.database, autocommit=True
        )

    def _live(self, ids: list[int]) -> list[int]:
        marks = ", ".join(["%s"] * len(ids))
        return [
            int(i) for (i,) in self.execute(f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({marks})", ids)
        ]

    def _terminate(self, backend: int) -> None:
        self.execute(f"KILL {int(backend)}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
        self.admin.close()


def make_scratch(backend: str, tmp_path: Any) -> Scratch:
    if backend == "sqlite":
        return SQLiteScratch(str(tmp_path / "rules.db"))
    if backend == "postgres":
        return PostgresScratch()
    return MySQLScratch()


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def scratch(request, tmp_path) -> Iterator[Scratch]:
    """A scratch namespace on each backend in turn."""
    s = make_scratch(request.param, tmp_path)
    yield s
    s.close()


@pytest.fixture(params=["postgres", "mysql"])
def server_scratch(request, tmp_path) -> Iterator[Scratch]:
    """A scratch namespace on each server backend in turn."""
    s = make_scratch(request.param, tmp_path)
    yield s
    s.close()


@pytest.fixture
def pg_scratch(tmp_path) -> Iterator[PostgresScratch]:
    s = PostgresScratch()
    yield s
    s.close()


@pytest.fixture
def my_scratch(tmp_path) -> Iterator[MySQLScratch]:
    s = MySQLScratch()
    yield s
    s.close()


class Forwarder:
    """A loopback TCP relay to a server that a test can cut and restore.

    Cutting closes the listening socket and every relayed connection, which
    to the client is exactly a server that went away; the real server is
    untouched.
    """

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target = (host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()  # cleared: bytes are held, connections stay up
        self._flowing.set()

    def start(self) -> Forwarder:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def freeze(self) -> None:
        """The server stalls: every connection stays open (the kernel still
        acknowledges), but nothing is relayed in either direction."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """The server is gone: refuse new connections and drop the open ones."""
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not (Linux).
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        self._flowing.set()  # a frozen relay's pumps wake up and find their sockets closed
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def __enter__(self) -> Forwarder:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.cut()


class SilentServer:
    """A loopback listener that accepts every connection and never says a word:
    a server that is up but stalled (tcpmgm must give up, not wait for ever)."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            self._held.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in self._held:
            conn.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# -- tables made the way OpenSIPS's own scripts make them -------------------

_OPENSIPS_TYPES = {
    "mysql": dict(
        id="INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL",
        text="CHAR({n})",
        uint="INT(11) UNSIGNED",
        int="INT(11)",
        suffix=" ENGINE=InnoDB",
    ),
    "postgres": dict(id="SERIAL PRIMARY KEY NOT NULL", text="VARCHAR({n})", uint="INTEGER", int="INTEGER", suffix=""),
    "sqlite": dict(
        id="INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL", text="CHAR({n})", uint="INTEGER", int="INTEGER", suffix=""
    ),
}

_PROFILE_DEFAULTS = [
    ("connect_timeout", 100),
    ("con_lifetime", 120),
    ("msg_read_timeout", 4),
    ("send_threshold", 0),
    ("no_new_conn", 0),
    ("alias_mode", 0),
    ("parallel_read", 0),
    ("keepalive", 1),
    ("keepcount", 9),
    ("keepidle", 7200),
    ("keepinterval", 75),
]


def opensips_ddl(
    backend: str, *, version: int = 2, table: str = "tcp_mgm", rename: dict | None = None, not_null: bool = True
) -> list[str]:
    """The CREATE statements of OpenSIPS's ``tcp_mgm`` script for ``backend`` (plus its version table).

    ``rename`` maps canonical column names to the table's; ``not_null=False``
    leaves the constraints out, so that NULLs can get in.
    """
    t = _OPENSIPS_TYPES[backend]
    rename = rename or {}
    nn = " NOT NULL" if not_null else ""
    text = t["text"]
    cols = [
        (
            "id",
            t["id"]
            if not_null
            else t["id"]
            .replace(" NOT NULL", "")
            .replace(" PRIMARY KEY", "")
            .replace(" AUTO_INCREMENT", "")
            .replace(" AUTOINCREMENT", "")
            .replace("SERIAL", "INTEGER"),
        ),
        ("proto", f"{text.format(n=8)} DEFAULT 'any'{nn}"),
        ("remote_addr", f"{text.format(n=43)} DEFAULT NULL"),
        ("remote_port", f"{t['uint']} DEFAULT 0{nn}"),
        ("local_addr", f"{text.format(n=43)} DEFAULT NULL"),
        ("local_port", f"{t['uint']} DEFAULT 0{nn}"),
        ("priority", f"{t['int']} DEFAULT 0{nn}"),
        ("attrs", f"{text.format(n=255)} DEFAULT NULL"),
    ] + [
        (name, f"{t['uint']} DEFAULT {default}{nn}")
        for name, default in _PROFILE_DEFAULTS
        if version == 1 or name != "parallel_read"
    ]
    q = "`" if backend == "mysql" else '"'
    body = ",\n  ".join(f"{q}{rename.get(c, c)}{q} {ddl}" for c, ddl in cols)
    return [
        f"CREATE TABLE IF NOT EXISTS version (table_name {text.format(n=32)} NOT NULL, "
        f"table_version {t['uint']} DEFAULT 0 NOT NULL, CONSTRAINT t_name_idx UNIQUE (table_name)){t['suffix']}",
        f"CREATE TABLE {q}{table}{q} (\n  {body}\n){t['suffix']}",
    ]
