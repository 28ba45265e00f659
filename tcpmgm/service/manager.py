"""``TcpMgm``: rules from SQL or from a rule image, served by a matcher that reloads swap atomically.

A reload builds a complete new matcher beside the one in service and then
replaces it with one reference assignment, so a lookup always sees either the
old rules or the new ones, never a mix, and never waits for a reload.  A
reload that fails (database down, table missing, wrong version, strict mode
with bad rows, an image refused) raises and leaves the old matcher in service.

A manager holds no ``Rule`` object per rule: the matcher keeps its rules as C
records and makes ``Rule`` objects on demand (``rules_as_read``, the OpenSIPS
order at its first use).  :meth:`TcpMgm.compile` writes the rules of the table
as an image file; :meth:`TcpMgm.from_image` serves one, following the file as
it is replaced (docs/operations.md#serving-many-workers-from-one-image).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from ..matching.explanation import Explanation
from ..matching.matcher import Matcher
from ..model.errors import ReloadError, RuleError, RuleWarning, SchemaError, TcpMgmError
from ..model.profile import Profile, default_profile
from ..model.rule import Rule
from ..opensips.order import OpenSIPSOrder
from ..sql.db import Source, one_line, open_source, work
from ..sql.loader import LoadResult, gc_paused, load_rules
from ..sql.schema import DEFAULT_SCHEMA_VERSION, TableNames, create_table_statements, known_schema_version
from ..sql.watch import Watcher, install_trigger
from .filewatch import FileWatcher, file_identity

__all__ = ["DEFAULT_DB_URL", "InService", "ReloadReport", "TcpMgm"]

log = logging.getLogger(__name__)

DEFAULT_DB_URL = "sqlite:///tcpmgm.db"


@dataclasses.dataclass(frozen=True)
class ReloadReport:
    """What a reload (or a compile) did.

    From an image: ``loaded`` is the rules of the image, ``rejected`` and
    ``warnings`` are empty (they belong to the compile that wrote it, whose
    report has them), and ``schema_version`` is the one the compile read, or
    ``None`` for an image that does not say.
    """

    loaded: int
    rejected: tuple[RuleError, ...]
    warnings: tuple[RuleWarning, ...]
    seconds: float
    schema_version: int | None

    def __str__(self) -> str:
        version = "unknown" if self.schema_version is None else self.schema_version
        lines = [
            f"loaded {self.loaded} rule(s), rejected {len(self.rejected)}, "
            f"{len(self.warnings)} warning(s), schema version {version}, "
            f"{self.seconds * 1000:.1f} ms"
        ]
        lines += [f"  rejected: {err}" for err in self.rejected]
        lines += [f"  warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


class InService(NamedTuple):
    """The matcher in service and when it went into service (``time.time()``): the start of its hit counts."""

    matcher: Matcher
    since: float


class _AsRead:
    """The rules of one matcher in the order its build was given them (a reload: the order the
    database returned them), and OpenSIPS's order of them, built at its first use: most services
    never ask, and a lookup never does.  Both are made from the matcher's records on demand."""

    def __init__(self, matcher: Matcher) -> None:
        self._matcher = matcher
        self._order: OpenSIPSOrder | None = None
        self._lock = threading.Lock()

    def rules(self) -> tuple[Rule, ...]:
        return tuple(self._matcher.as_given())

    def opensips_order(self) -> OpenSIPSOrder:
        with self._lock:  # built once, however many threads ask at once
            if self._order is None:
                self._order = OpenSIPSOrder(self._matcher.as_given(), default=self._matcher.default)
            return self._order


class _Table(NamedTuple):
    """Where a manager made on a database reads its rules."""

    source: Source
    names: TableNames


class TcpMgm:
    """Rules from the ``tcp_mgm`` table of ``db`` (a URL or an open DB-API connection).

    ``count_hits=False`` builds every matcher without hit counts (:meth:`hits` is then ``{}``).
    :meth:`from_image` makes a manager that serves a rule image instead.
    """

    def __init__(
        self,
        db: Any = DEFAULT_DB_URL,
        *,
        table: str = "tcp_mgm",
        columns: Mapping[str, str] | None = None,
        listeners: Mapping[str, Any] | None = None,
        strict: bool = False,
        schema_version: int | None = None,
        default: Profile | None = None,
        count_hits: bool = True,
    ) -> None:
        if schema_version is not None:
            known_schema_version(schema_version)
        self._table: _Table | None = _Table(open_source(db), TableNames(table, dict(columns or {})))
        self.image_path: str | None = None  # set by from_image: the file served
        self.listeners = dict(listeners or {})
        self.strict = strict
        self.schema_version = schema_version
        self.default = (default if default is not None else default_profile()).replace(id=0)
        self._begin(Matcher([], default=self.default, count_hits=count_hits), count_hits)

    def _begin(self, matcher: Matcher, count_hits: bool) -> None:
        """The state of a manager in service, whatever its rules come from."""
        self.count_hits = count_hits
        self._put_in_service(matcher)
        self._reload_lock = threading.Lock()
        self._pid = os.getpid()  # the process whose threads may hold the locks (_in_own_process)
        self.image_watcher: FileWatcher | None = None  # following the image file (watch_image)
        self._image_identity: tuple[int, int, int, int] | None = None  # the file the image in service was opened from
        self.last_report: ReloadReport | None = None  # of the last successful reload
        # Reloads since the manager was made, by outcome (read by monitoring: docs/operations.md#metrics).
        self.reloads = 0
        self.failed_reloads = 0
        # Images written by compile(), by outcome.
        self.compiles = 0
        self.failed_compiles = 0

    @classmethod
    def from_image(
        cls,
        path: str | os.PathLike[str],
        *,
        count_hits: bool = True,
        watch: bool = True,
        method: str = "auto",
        poll_interval: float = 1.0,
    ) -> TcpMgm:
        """A manager serving the rule image at ``path`` (written by :meth:`compile` or
        ``Matcher.save``), opened with ``Matcher.open`` (a read-only shared mapping: every
        process serving the file shares its pages).

        With ``watch`` (the default) a new file at ``path`` is put in service as soon as it is
        noticed (:meth:`watch_image`: ``method`` ``"auto"``, ``"inotify"`` or ``"poll"``,
        ``poll_interval`` seconds between two polls).  The image is refused as ``Matcher.open``
        refuses it (:class:`ImageError`: a file that cannot be read, or is no whole image this
        tcpmgm reads); a later image that is refused keeps the one in service (:meth:`reload`).

        After ``os.fork()`` a child must follow the image itself: call :meth:`from_image` in the
        child, or :meth:`watch_image` on the manager it inherited (the watcher's thread stays in
        the parent).
        """
        image = os.path.abspath(os.fspath(path))
        identity = file_identity(image)  # before the open: a file published after it differs
        matcher = Matcher.open(image, count_hits=count_hits)
        mgr = cls.__new__(cls)
        mgr._table = None
        mgr.image_path = image
        # Images carry no listeners and no table options: nothing here reads a row.
        mgr.listeners = {}
        mgr.strict = False
        mgr.schema_version = None
        mgr.default = matcher.default
        mgr._begin(matcher, count_hits)
        mgr._image_identity = identity
        log.info("serving %d rule(s) from the image %s", len(matcher), image)
        if watch:
            mgr.watch_image(method=method, poll_interval=poll_interval)
        return mgr

    def __repr__(self) -> str:
        if self._table is None:
            return f"<TcpMgm image={self.image_path!r} rules={len(self._matcher)}>"
        return f"<TcpMgm {self.source.description} table={self.names.table!r} rules={len(self._matcher)}>"

    def _database(self, what: str) -> _Table:
        """The table, for ``what`` (a method that needs it); a manager on an image has none."""
        if self._table is None:
            raise TcpMgmError(
                f"TcpMgm.{what} needs the rule table, and this manager serves the image {self.image_path}: "
                "make a TcpMgm on the database for it"
            )
        return self._table

    @property
    def source(self) -> Source:
        """Where the table is (a manager on an image has none: :class:`TcpMgmError`)."""
        return self._database("source").source

    @property
    def names(self) -> TableNames:
        """The table's name and column names (a manager on an image has none: :class:`TcpMgmError`)."""
        return self._database("names").names

    @property
    def matcher(self) -> Matcher:
        """The matcher in service (replaced as a whole by each successful reload)."""
        return self._matcher

    @property
    def rules_as_read(self) -> tuple[Rule, ...]:
        """The rules in service in the order the last reload read them (a plain ``SELECT``, as
        OpenSIPS reads them; the rows it rejected left out), made from the matcher's records at
        each call (the manager keeps no ``Rule`` objects)."""
        return self._as_read.rules()

    @property
    def opensips_order(self) -> OpenSIPSOrder:
        """The order OpenSIPS would give the rules in service (docs/opensips.md): built from
        :attr:`rules_as_read` once per matcher in service, at its first use."""
        return self._as_read.opensips_order()

    @property
    def service(self) -> InService:
        """The matcher in service with the time it went in, read as one pair (a reload swaps both at once)."""
        return self._service

    def hits(self, start: int | None = 0, stop: int | None = None) -> dict[int, int]:
        """Lookups each rule in service won since the last reload: rule id -> count, key 0 for the
        default profile, then every rule (zeros included) or those of ``list(self.matcher)[start:stop]``;
        ``{}`` with ``count_hits=False`` (:meth:`Matcher.hits`)."""
        return self._matcher.hits(start, stop)

    def top_hits(self, n: int) -> list[tuple[int, int]]:
        """The at most ``n`` rules in service that won the most lookups since the last reload, as
        ``(rule id, count)``, most first (:meth:`Matcher.top_hits`)."""
        return self._matcher.top_hits(n)

    def _put_in_service(self, matcher: Matcher) -> None:
        # The pair for the readers of counts and their start (tcp_stats), one reference; then
        # the matcher alone for the lookups, which then need no tuple to look into; then the
        # rules as given, for tcpmgm.opensips.
        #
        # The matcher replaced here is freed (and an opened image unmapped) by reference
        # counting alone, when its last reference goes: a lookup holds one for its whole
        # duration (the bound method it calls keeps its matcher alive, the GIL released or
        # not), and so does every reader of `matcher` or `service`; so no lookup ever reads
        # a page that is gone, and nothing waits for the lookups in flight.
        self._service = InService(matcher, time.time())
        self._matcher = matcher
        self._as_read = _AsRead(matcher)

    def _in_own_process(self) -> None:
        """After ``os.fork()``, in the child: locks of its own.  A lock held by a thread of the
        parent at the fork (a watcher in the middle of a reload, say) would stay held forever in
        the child, where that thread does not exist; what they guard is consistent all the same
        (every swap is a reference assignment)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._reload_lock = threading.Lock()
            self._as_read = _AsRead(self._matcher)

    @contextlib.contextmanager
    def _failing(self, doing: str, keeps: str) -> Iterator[None]:
        """Any failure inside as one logged :class:`ReloadError`: ``{doing} failed, {keeps}: why``."""
        try:
            yield
        except ReloadError:
            raise  # strict mode's refusal, already logged
        except Exception as exc:
            # An exception outside tcpmgm's hierarchy is a bug somewhere: keep its traceback (an
            # image that cannot be read is the file system's failure, as a DatabaseError is the server's).
            unexpected = not isinstance(exc, (TcpMgmError, OSError))
            reason = f"{type(exc).__name__}: {one_line(exc)}" if unexpected else str(exc)
            message = f"{doing} failed, {keeps}: {reason}"
            log.error("%s", message, exc_info=unexpected)
            raise ReloadError(message) from exc

    def _read_table(self, table: _Table, keeps: str) -> tuple[LoadResult, ReloadReport]:
        """Read and validate the table: the first half of a reload and of a compile.  Strict mode
        refuses a table with bad rows (a :class:`ReloadError` saying that ``keeps``)."""
        with table.source.connection() as conn:
            result = load_rules(
                conn,
                table.source.dialect,
                table.names,
                listeners=self.listeners,
                defaults=self.default,
                schema_version=self.schema_version,
            )
        report = ReloadReport(
            loaded=len(result.records),
            rejected=result.rejected,
            warnings=result.warnings,
            seconds=0.0,
            schema_version=result.schema_version,
        )
        if self.strict and result.rejected:
            log.error("strict mode refused the table: %d bad row(s)", len(result.rejected))
            raise ReloadError(
                f"strict mode: {len(result.rejected)} row(s) rejected, {keeps}; first: {result.rejected[0]}",
                report,
            )
        return result, report

    def _build(self, result: LoadResult, count_hits: bool) -> Matcher:
        with gc_paused():
            return Matcher.from_records(
                result.records, default=self.default, count_hits=count_hits, schema_version=result.schema_version
            )

    # -- reload --------------------------------------------------------------
    def reload(self) -> ReloadReport:
        """Read the table (or re-open the image) into a new matcher and put it in service.

        Raises :class:`ReloadError` (wrapping the cause) and keeps the old
        rules when anything goes wrong.
        """
        self._in_own_process()
        keeps = "old rules stay in service"
        with self._reload_lock:
            started = time.perf_counter()
            try:
                if self._table is None:
                    assert self.image_path is not None
                    with self._failing(f"reload of the image {self.image_path}", keeps):
                        identity = file_identity(self.image_path)
                        matcher = Matcher.open(self.image_path, count_hits=self.count_hits)
                    report = ReloadReport(len(matcher), (), (), 0.0, matcher.schema_version)
                    self._image_identity = identity
                    self.default = matcher.default  # the image's own, for whoever reads it here
                else:
                    table = self._table
                    with self._failing(f"reload from {table.source.description}", keeps):
                        result, report = self._read_table(table, keeps)
                        matcher = self._build(result, self.count_hits)
            except ReloadError:
                self.failed_reloads += 1
                raise
            self._put_in_service(matcher)  # the swap: one reference assignment for each kind of reader
            report = dataclasses.replace(report, seconds=time.perf_counter() - started)
            self.last_report = report
            self.reloads += 1
            for err in report.rejected:
                log.warning("rejected: %s", err)
            log.info("reloaded %d rule(s) from %s in %.3f s", report.loaded, self._origin(), report.seconds)
            return report

    def _origin(self) -> str:
        return f"the image {self.image_path}" if self._table is None else self._table.source.description

    # -- images --------------------------------------------------------------
    def compile(self, path: str | os.PathLike[str]) -> ReloadReport:
        """Read the table as :meth:`reload` does and publish its rules as an image at ``path``.

        The matcher is built without hit counts (an image holds none: each process that opens
        it counts its own) and written by ``Matcher.save``: a temporary file in the same
        directory, then an atomic rename, so a reader of ``path`` finds the old image or the
        new one, whole.  The rules in service do not change.  Raises :class:`ReloadError`
        (wrapping the cause) and leaves the file at ``path`` as it was when anything goes
        wrong; strict mode refuses a table with bad rows, as a reload does.
        """
        self._in_own_process()
        target = os.fspath(path)
        table = self._database("compile")
        keeps = f"the image {target} stays as it was"
        with self._reload_lock:  # one read of the table at a time, whether to reload or to compile
            started = time.perf_counter()
            try:
                with self._failing(f"compile from {table.source.description} into {target}", keeps):
                    result, report = self._read_table(table, keeps)
                    matcher = self._build(result, count_hits=False)
                    try:
                        matcher.save(target)
                    except OSError as exc:
                        raise TcpMgmError(f"cannot write the image {target}: {one_line(exc)}") from exc
            except ReloadError:
                self.failed_compiles += 1
                raise
            report = dataclasses.replace(report, seconds=time.perf_counter() - started)
            self.compiles += 1
            for err in report.rejected:
                log.warning("rejected: %s", err)
            log.info(
                "compiled %d rule(s) from %s into %s in %.3f s",
                report.loaded,
                table.source.description,
                target,
                report.seconds,
            )
            return report

    def watch_image(self, *, method: str = "auto", poll_interval: float = 1.0) -> FileWatcher:
        """Follow the image file: each new file at :attr:`image_path` is opened and put in
        service (a :meth:`reload`; one that is refused keeps the image in service, logged and
        counted in :attr:`failed_reloads`).  ``method``: ``"auto"`` (inotify where it works,
        else a stat poll), ``"inotify"`` or ``"poll"``; ``poll_interval``: seconds between two
        polls.  Returns the running :class:`~tcpmgm.service.filewatch.FileWatcher`
        (:attr:`image_watcher`), which :meth:`close` stops.

        In a process forked from the one that started the watcher, this starts the child's own
        (the parent's thread did not come along) and re-opens the image if it was replaced since
        the image in service was opened.
        """
        if self._table is not None:
            raise TcpMgmError(f"{self!r} reads a database, not an image: watch() follows its table")
        assert self.image_path is not None
        self._in_own_process()
        watcher = self.image_watcher
        if watcher is not None and watcher.running:
            return watcher
        if watcher is not None:
            watcher.stop()  # in a forked child: forgets the parent's watcher, signals nothing
        watcher = FileWatcher(self.image_path, self._follow_image, method=method, interval=poll_interval)
        self.image_watcher = watcher.start()
        # Armed: a file published from now on is noticed; one published before, since the image
        # in service was opened, is opened here.
        if file_identity(self.image_path) != self._image_identity:
            self._follow_image()
        return watcher

    def _follow_image(self) -> None:
        with contextlib.suppress(ReloadError):  # logged and counted by reload(); the old image stays
            self.reload()

    # -- lookups -------------------------------------------------------------
    def lookup(
        self,
        proto: str | None,
        remote_ip: Any,
        remote_port: int = 0,
        local_ip: Any = None,
        local_port: int = 0,
    ) -> Profile:
        return self._matcher.lookup(proto, remote_ip, remote_port, local_ip, local_port)

    def explain(
        self,
        proto: str | None,
        remote_ip: Any,
        remote_port: int = 0,
        local_ip: Any = None,
        local_port: int = 0,
    ) -> Explanation:
        return self._matcher.explain(proto, remote_ip, remote_port, local_ip, local_port)

    # -- table management ----------------------------------------------------
    def create_schema(self, schema_version: int = DEFAULT_SCHEMA_VERSION) -> None:
        """Create the rule table and record its version in the ``version`` table."""
        source, names = self._database("create_schema")
        dialect = source.dialect
        q = dialect.quote
        ph = dialect.placeholder
        statements = create_table_statements(dialect, names, schema_version)
        failure = f"cannot create table {names.table!r}"
        with work(source, failure, error=SchemaError, commit=True, create=True) as cur:
            for statement in statements:
                cur.execute(statement)
            cur.execute(f"DELETE FROM {q('version')} WHERE {q('table_name')} = {ph}", (names.table,))
            cur.execute(
                f"INSERT INTO {q('version')} ({q('table_name')}, {q('table_version')}) VALUES ({ph}, {ph})",
                (names.table, schema_version),
            )

    def add_rule(self, row: Mapping[str, Any]) -> int:
        """Validate ``row`` (canonical column names) and insert it; return its id.

        Without an ``id`` the database assigns one.  Nothing is written when
        the row is invalid (:class:`RuleError`).  The given columns are stored
        as validation read them (``TCP`` as ``tcp``, a flag of 5 as 1,
        ``10.1.2.3/8`` as ``10.0.0.0/8``), so the table holds what is loaded.
        """
        source, names = self._database("add_rule")
        given = [k for k, v in row.items() if v is not None]
        rule = Rule.from_row({"id": 1, **{k: row[k] for k in given}}, listeners=self.listeners, defaults=self.default)
        stored = rule.to_row()
        # A column from_row does not know is passed on as given: the database names it.
        row = {k: stored[k] if k in stored else row[k] for k in given}
        dialect = source.dialect
        q = dialect.quote
        columns = list(row)
        sql = (
            f"INSERT INTO {q(names.table)} ({', '.join(q(names.column(c)) for c in columns)}) "
            f"VALUES ({', '.join([dialect.placeholder] * len(columns))})"
        )
        if dialect.returning:  # PostgreSQL has no lastrowid for a SERIAL column
            sql += f" RETURNING {q(names.column('id'))}"
        with work(source, f"cannot insert into {names.table!r}", commit=True) as cur:
            cur.execute(sql, [row[c] for c in columns])
            new_id = cur.fetchone()[0] if dialect.returning else row.get("id", cur.lastrowid)
            if dialect.name == "postgres" and "id" in row:
                # An explicit id leaves the SERIAL sequence behind (MySQL and SQLite
                # move theirs): without this the next automatic id could collide.
                id_column, table = q(names.column("id")), q(names.table)
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence(%s, %s), (SELECT max({id_column}) FROM {table}))",
                    (table, names.column("id")),
                )
        return int(new_id)

    def install_change_trigger(self) -> None:
        """Install the PostgreSQL trigger that makes every change of the table
        notify watchers (LISTEN/NOTIFY); see :mod:`tcpmgm.sql.watch`."""
        install_trigger(*self._database("install_change_trigger"))

    def watch(self, *, compile_to: str | os.PathLike[str] | None = None, **options: Any) -> Watcher[ReloadReport]:
        """A started :class:`~tcpmgm.sql.watch.Watcher` that reloads when the table changes
        (``options``: those of the watcher, from ``method`` to ``on_error``).

        With ``compile_to`` it compiles the table into that image file instead of reloading
        (:meth:`compile`): one watching process per host publishes, the workers serving the
        image (:meth:`from_image`) follow the file, and a change of the table costs one read of
        it per host.  ``on_reload`` then gets each compile's report.
        """
        source, names = self._database("watch")
        action = self.reload if compile_to is None else functools.partial(self.compile, compile_to)
        return Watcher(action, source, names, **options).start()

    def close(self) -> None:
        """Stop following the image and close the database connection kept between reloads
        (the rules in service stay)."""
        self._in_own_process()
        if self.image_watcher is not None:
            self.image_watcher.stop()
        if self._table is not None:
            self._table.source.close()
