"""Reload when the rule table changes: how a fleet of proxies shares one table.

A :class:`Watcher` runs one background thread per watched table and calls a
reload function when the table changes (:meth:`TcpMgm.watch` passes its own
``reload``; the watcher knows the table only by its :class:`~tcpmgm.sql.db.Source`
and :class:`~tcpmgm.sql.schema.TableNames`, so it depends on no service).  It
learns of changes in one of two ways:

- **notify** (PostgreSQL): a statement-level trigger, installed by
  :meth:`TcpMgm.install_change_trigger`, calls ``pg_notify`` after every
  INSERT, UPDATE, DELETE or TRUNCATE of the table; the watcher LISTENs on its
  own connection, so a change reaches every proxy at once and idle costs
  nothing.
- **poll** (MySQL/MariaDB, SQLite, or PostgreSQL without the trigger): every
  ``interval`` seconds it asks for a cheap fingerprint of the table and
  reloads when the fingerprint moves.  The fingerprint must change on any
  edit, including an UPDATE that keeps the row count: MySQL/MariaDB
  ``CHECKSUM TABLE`` (computed in the server, nothing crosses the wire);
  PostgreSQL the row count and the sum of a hash of each row's text; SQLite
  ``PRAGMA data_version`` on the watcher's own connection, which moves on
  every commit by any other connection (for a caller's own connection also
  its ``total_changes``, since its own commits do not move data_version).

A manager built on a caller's open connection is polled through that
connection (no second one can be opened from it); it should be in autocommit
mode, or a MySQL snapshot would hide other clients' commits.

Bursts (a script inserting a hundred rows) are debounced: after a change the
watcher waits until ``debounce`` seconds pass without another (at most
``max_delay``), then reloads once.  Whenever the watch connection is
(re)established it reloads too, since changes made while it was not watching
would otherwise be missed.  A failed reload keeps the old rules (as always)
and is reported through logging and ``on_error``; a lost watch connection is
reported the same way and retried.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Hashable
from typing import Any, Callable, Generic, TypeVar

from ..model.errors import DatabaseError, ReloadError, TcpMgmError
from .db import ConnectionSource, ServerSource, Source, one_line, work, work_on
from .schema import TableNames

__all__ = ["TRIGGER_NAME", "Watcher", "install_trigger", "notify_channel"]

log = logging.getLogger(__name__)

TRIGGER_NAME = "tcpmgm_notify"
_STOP_CHECK = 0.25  # seconds: how long a LISTEN wait may delay stop()

Report = TypeVar("Report")  # what the reload function returns, handed to on_reload


def notify_channel(table: str) -> str:
    """The NOTIFY channel for ``table`` (PostgreSQL limits channel names to 63 bytes)."""
    return f"tcpmgm_{table}"[:63]


def install_trigger(source: Source, names: TableNames) -> None:
    """Create (or replace) the notify function and the table's trigger (PostgreSQL only)."""
    dialect = source.dialect
    if dialect.name != "postgres":
        raise DatabaseError(f"change notification needs PostgreSQL; {dialect.label} is watched by polling")
    q = dialect.quote
    table = q(names.table)
    statements = (
        # TG_ARGV carries the channel, so one function serves every table.
        f"CREATE OR REPLACE FUNCTION {q(TRIGGER_NAME)}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n    PERFORM pg_notify(TG_ARGV[0], TG_TABLE_NAME);\n    RETURN NULL;\nEND\n$$",
        f"DROP TRIGGER IF EXISTS {q(TRIGGER_NAME)} ON {table}",
        # The channel is built from a validated identifier ([A-Za-z0-9_] only), so it
        # cannot break out of the string literal.
        f"CREATE TRIGGER {q(TRIGGER_NAME)} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {q(TRIGGER_NAME)}('{notify_channel(names.table)}')",
    )
    with work(source, f"cannot install the change trigger on {names.table!r}", commit=True) as cur:
        for statement in statements:
            cur.execute(statement)


def has_trigger(cur: Any, source: Source, names: TableNames) -> bool:
    """Whether the table has the notify trigger (asked on ``cur``, a PostgreSQL cursor)."""
    cur.execute(
        "SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND tgname = %s",
        (source.dialect.quote(names.table), TRIGGER_NAME),
    )
    return cur.fetchone() is not None


def _lost(source: Source) -> str:
    """What a failure of the watch connection is reported as (with the driver's message)."""
    return f"watch connection to {source.description} lost"


class _Detector:
    """Tells whether the table changed; owns the watcher's connection."""

    method = ""

    def changed(self, wait: float, stop: threading.Event) -> bool:
        """Wait up to ``wait`` seconds; True when a change was seen since the last call."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Notify(_Detector):
    """Waits for the NOTIFY of a connection that LISTENs on the table's channel."""

    method = "notify"

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def changed(self, wait: float, stop: threading.Event) -> bool:
        deadline = time.monotonic() + wait
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for _ in self.conn.notifies(timeout=min(left, _STOP_CHECK), stop_after=1):
                return True
        return False

    def close(self) -> None:
        self.conn.close()


class _Poll(_Detector):
    """Compares ``fingerprint(failure)`` between waits; ``failure`` says what a failing query means."""

    method = "poll"

    def __init__(
        self, fingerprint: Callable[[str], Hashable], close: Callable[[], None], first: str, lost: str
    ) -> None:
        self._fingerprint = fingerprint
        self._close = close
        self._lost = lost
        self._last = fingerprint(first)  # failing here, the watch could not begin

    def changed(self, wait: float, stop: threading.Event) -> bool:
        if stop.wait(wait):
            return False
        now = self._fingerprint(self._lost)
        moved, self._last = now != self._last, now
        return moved

    def close(self) -> None:
        self._close()


def _fingerprint_sql(source: Source, names: TableNames) -> str:
    q = source.dialect.quote
    if source.dialect.name == "mysql":
        return f"CHECKSUM TABLE {q(names.table)}"
    if source.dialect.name == "postgres":
        return f"SELECT count(*), coalesce(sum(hashtext(t::text)), 0) FROM {q(names.table)} AS t"
    return "PRAGMA data_version"


def _open_detector(source: Source, names: TableNames, method: str) -> _Detector:
    cannot = f"cannot watch {names.table!r} on {source.description}"
    sql = _fingerprint_sql(source, names)
    if isinstance(source, ConnectionSource):
        # A caller's connection: poll through it, between the reloads that also use it.
        def shared(failure: str) -> Hashable:
            with source.connection() as conn, work_on(conn, failure) as cur:
                cur.execute(sql)
                extra = (conn.total_changes,) if source.dialect.name == "sqlite" else ()
                return tuple(cur.fetchone() or ()) + extra

        return _Poll(shared, lambda: None, cannot, _lost(source))
    # Autocommit: each poll sees the latest commit, and LISTEN takes effect at once.
    conn = source.open(autocommit=True) if isinstance(source, ServerSource) else source.open()
    try:
        if method != "poll" and source.dialect.name == "postgres":
            with work_on(conn, cannot) as cur:
                if has_trigger(cur, source, names):
                    cur.execute(f"LISTEN {source.dialect.quote(notify_channel(names.table))}")
                    return _Notify(conn)
            log.warning(
                "no change trigger on %r (TcpMgm.install_change_trigger() installs it): polling",
                names.table,
            )
        elif method == "notify":
            raise DatabaseError(f"change notification needs PostgreSQL, not {source.dialect.label}")

        def own(failure: str) -> Hashable:
            with work_on(conn, failure) as cur:
                cur.execute(sql)
                return tuple(cur.fetchone() or ())

        return _Poll(own, conn.close, cannot, _lost(source))
    except BaseException:
        conn.close()
        raise


class Watcher(Generic[Report]):
    """Call ``reload`` whenever the table ``names`` of ``source`` changes, from a background thread.

    ``reload()`` returns a report (handed to ``on_reload``) or raises
    :class:`ReloadError` when it failed and kept the old rules.

    ``method``: ``"auto"`` (notify on PostgreSQL when the trigger is
    installed, else poll), ``"notify"`` or ``"poll"``.  ``interval``: seconds
    between polls.  ``debounce``: quiet time that ends a burst of changes;
    ``max_delay`` caps how long a steady stream of changes can defer the
    reload.  ``on_reload(report)`` and ``on_error(exc)`` are called from the
    watcher's thread.
    """

    def __init__(
        self,
        reload: Callable[[], Report],
        source: Source,
        names: TableNames,
        *,
        method: str = "auto",
        interval: float = 1.0,
        debounce: float = 0.2,
        max_delay: float = 2.0,
        retry: float = 2.0,
        on_reload: Callable[[Report], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if method not in ("auto", "notify", "poll"):
            raise ValueError(f"method must be 'auto', 'notify' or 'poll', not {method!r}")
        self._reload_rules = reload
        self.source = source
        self.names = names
        self.method = method
        self.interval = interval
        self.debounce = debounce
        self.max_delay = max_delay
        self.retry = retry
        self.on_reload = on_reload
        self.on_error = on_error
        self.active_method: str | None = None  # what is in use: "notify" or "poll"
        self.reloads = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Watcher {self.source.description} {self.active_method or self.method} {state}>"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Watcher[Report]:
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run,
            name=f"tcpmgm-watch-{self.names.table}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and close its connection; waits up to ``timeout`` seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Watcher[Report]:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # -- the thread ----------------------------------------------------------
    def _report(self, exc: BaseException) -> None:
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                log.exception("watcher on_error callback failed")

    def _reload(self) -> None:
        try:
            report = self._reload_rules()
        except ReloadError as exc:  # the reload logged it; the old rules stay
            self._report(exc)
            return
        self.reloads += 1
        if self.on_reload is not None:
            try:
                self.on_reload(report)
            except Exception:
                log.exception("watcher on_reload callback failed")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                detector = _open_detector(self.source, self.names, self.method)
            except Exception as exc:
                log.error("watching %s failed, retrying in %.1f s: %s", self.names.table, self.retry, exc)
                self._report(exc)
                self._stop.wait(self.retry)
                continue
            self.active_method = detector.method
            log.info("watching %r on %s (%s)", self.names.table, self.source.description, detector.method)
            try:
                self._reload()  # whatever changed before we were watching
                while not self._stop.is_set():
                    if not detector.changed(self.interval, self._stop):
                        continue
                    deadline = time.monotonic() + self.max_delay
                    while time.monotonic() < deadline and detector.changed(self.debounce, self._stop):
                        pass
                    if not self._stop.is_set():
                        self._reload()
            except Exception as exc:
                # A poll fails as a DatabaseError already; waiting for a NOTIFY, as the driver's exception.
                error = exc if isinstance(exc, TcpMgmError) else DatabaseError(f"{_lost(self.source)}: {one_line(exc)}")
                log.error("%s; retrying in %.1f s", error, self.retry)
                self._report(error)
                self._stop.wait(self.retry)
            finally:
                with contextlib.suppress(Exception):
                    detector.close()
