"""``TcpMgm``: rules from SQL, served by a matcher that reloads swap atomically.

A reload builds a complete new matcher beside the one in service and then
replaces it with one reference assignment, so a lookup always sees either the
old rules or the new ones, never a mix, and never waits for a reload.  A
reload that fails (database down, table missing, wrong version, strict mode
with bad rows) raises and leaves the old matcher in service.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..matching.explanation import Explanation
from ..matching.matcher import Matcher
from ..model.errors import ReloadError, RuleError, RuleWarning, SchemaError, TcpMgmError
from ..model.profile import Profile, default_profile
from ..model.rule import Rule
from ..opensips.order import OpenSIPSOrder
from ..sql.db import Source, one_line, open_source, work
from ..sql.loader import gc_paused, load_rules
from ..sql.schema import DEFAULT_SCHEMA_VERSION, TableNames, create_table_statements, known_schema_version
from ..sql.watch import Watcher, install_trigger

__all__ = ["DEFAULT_DB_URL", "InService", "ReloadReport", "TcpMgm"]

log = logging.getLogger(__name__)

DEFAULT_DB_URL = "sqlite:///tcpmgm.db"


@dataclasses.dataclass(frozen=True)
class ReloadReport:
    """What a reload did."""

    loaded: int
    rejected: tuple[RuleError, ...]
    warnings: tuple[RuleWarning, ...]
    seconds: float
    schema_version: int

    def __str__(self) -> str:
        lines = [
            f"loaded {self.loaded} rule(s), rejected {len(self.rejected)}, "
            f"{len(self.warnings)} warning(s), schema version {self.schema_version}, "
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
    """The rules of one reload in the order the database returned them, and OpenSIPS's order of
    them, built at its first use: most services never ask, and a lookup never does."""

    def __init__(self, rules: tuple[Rule, ...], default: Profile) -> None:
        self.rules = rules
        self._default = default
        self._order: OpenSIPSOrder | None = None
        self._lock = threading.Lock()

    def opensips_order(self) -> OpenSIPSOrder:
        with self._lock:  # built once, however many threads ask at once
            if self._order is None:
                self._order = OpenSIPSOrder(self.rules, default=self._default)
            return self._order


class TcpMgm:
    """Rules from the ``tcp_mgm`` table of ``db`` (a URL or an open DB-API connection).

    ``count_hits=False`` builds every matcher without hit counts (:meth:`hits` is then ``{}``).
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
        self.names = TableNames(table, dict(columns or {}))
        self.source: Source = open_source(db)
        self.listeners = dict(listeners or {})
        self.strict = strict
        self.schema_version = schema_version
        self.default = (default if default is not None else default_profile()).replace(id=0)
        self.count_hits = count_hits
        self._put_in_service(Matcher([], default=self.default, count_hits=count_hits))
        self._as_read = _AsRead((), self.default)
        self._reload_lock = threading.Lock()
        self.last_report: ReloadReport | None = None  # of the last successful reload
        # Reloads since the manager was made, by outcome (read by monitoring: docs/operations.md#metrics).
        self.reloads = 0
        self.failed_reloads = 0

    def __repr__(self) -> str:
        return f"<TcpMgm {self.source.description} table={self.names.table!r} rules={len(self._matcher)}>"

    @property
    def matcher(self) -> Matcher:
        """The matcher in service (replaced as a whole by each successful reload)."""
        return self._matcher

    @property
    def rules_as_read(self) -> tuple[Rule, ...]:
        """The rules in service in the order the last reload read them (a plain ``SELECT``, as
        OpenSIPS reads them; the rows it rejected left out)."""
        return self._as_read.rules

    @property
    def opensips_order(self) -> OpenSIPSOrder:
        """The order OpenSIPS would give the rules in service (docs/opensips.md): built from
        :attr:`rules_as_read` once per reload, at its first use."""
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
        # the matcher alone for the lookups, which then need no tuple to look into.
        self._service = InService(matcher, time.time())
        self._matcher = matcher

    # -- reload --------------------------------------------------------------
    def reload(self) -> ReloadReport:
        """Read the table into a new matcher and put it in service.

        Raises :class:`ReloadError` (wrapping the cause) and keeps the old
        rules when anything goes wrong.
        """
        with self._reload_lock:
            started = time.perf_counter()
            try:
                with self.source.connection() as conn:
                    result = load_rules(
                        conn,
                        self.source.dialect,
                        self.names,
                        listeners=self.listeners,
                        defaults=self.default,
                        schema_version=self.schema_version,
                    )
                report = ReloadReport(
                    loaded=len(result.rules),
                    rejected=result.rejected,
                    warnings=result.warnings,
                    seconds=0.0,
                    schema_version=result.schema_version,
                )
                if self.strict and result.rejected:
                    log.error("strict reload refused: %d bad row(s)", len(result.rejected))
                    raise ReloadError(
                        f"strict mode: {len(result.rejected)} row(s) rejected, old rules stay in service; "
                        f"first: {result.rejected[0]}",
                        report,
                    )
                with gc_paused():
                    matcher = Matcher(result.rules, default=self.default, count_hits=self.count_hits)
            except ReloadError:
                self.failed_reloads += 1
                raise  # strict mode's refusal, already logged
            except Exception as exc:
                self.failed_reloads += 1
                # An exception outside tcpmgm's hierarchy is a bug somewhere: keep its traceback.
                unexpected = not isinstance(exc, TcpMgmError)
                reason = f"{type(exc).__name__}: {one_line(exc)}" if unexpected else str(exc)
                message = f"reload from {self.source.description} failed, old rules stay in service: {reason}"
                log.error("%s", message, exc_info=unexpected)
                raise ReloadError(message) from exc
            self._put_in_service(matcher)  # the swap: one reference assignment for each kind of reader
            self._as_read = _AsRead(result.rules, self.default)  # and its order as read, for tcpmgm.opensips
            report = dataclasses.replace(report, seconds=time.perf_counter() - started)
            self.last_report = report
            self.reloads += 1
            for err in result.rejected:
                log.warning("rejected: %s", err)
            log.info("reloaded %d rule(s) from %s in %.3f s", report.loaded, self.source.description, report.seconds)
            return report

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
        dialect = self.source.dialect
        q = dialect.quote
        ph = dialect.placeholder
        statements = create_table_statements(dialect, self.names, schema_version)
        failure = f"cannot create table {self.names.table!r}"
        with work(self.source, failure, error=SchemaError, commit=True, create=True) as cur:
            for statement in statements:
                cur.execute(statement)
            cur.execute(f"DELETE FROM {q('version')} WHERE {q('table_name')} = {ph}", (self.names.table,))
            cur.execute(
                f"INSERT INTO {q('version')} ({q('table_name')}, {q('table_version')}) VALUES ({ph}, {ph})",
                (self.names.table, schema_version),
            )

    def add_rule(self, row: Mapping[str, Any]) -> int:
        """Validate ``row`` (canonical column names) and insert it; return its id.

        Without an ``id`` the database assigns one.  Nothing is written when
        the row is invalid (:class:`RuleError`).  The given columns are stored
        as validation read them (``TCP`` as ``tcp``, a flag of 5 as 1,
        ``10.1.2.3/8`` as ``10.0.0.0/8``), so the table holds what is loaded.
        """
        given = [k for k, v in row.items() if v is not None]
        rule = Rule.from_row({"id": 1, **{k: row[k] for k in given}}, listeners=self.listeners, defaults=self.default)
        stored = rule.to_row()
        # A column from_row does not know is passed on as given: the database names it.
        row = {k: stored[k] if k in stored else row[k] for k in given}
        dialect = self.source.dialect
        q = dialect.quote
        columns = list(row)
        sql = (
            f"INSERT INTO {q(self.names.table)} ({', '.join(q(self.names.column(c)) for c in columns)}) "
            f"VALUES ({', '.join([dialect.placeholder] * len(columns))})"
        )
        if dialect.returning:  # PostgreSQL has no lastrowid for a SERIAL column
            sql += f" RETURNING {q(self.names.column('id'))}"
        with work(self.source, f"cannot insert into {self.names.table!r}", commit=True) as cur:
            cur.execute(sql, [row[c] for c in columns])
            new_id = cur.fetchone()[0] if dialect.returning else row.get("id", cur.lastrowid)
            if dialect.name == "postgres" and "id" in row:
                # An explicit id leaves the SERIAL sequence behind (MySQL and SQLite
                # move theirs): without this the next automatic id could collide.
                id_column, table = q(self.names.column("id")), q(self.names.table)
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence(%s, %s), (SELECT max({id_column}) FROM {table}))",
                    (table, self.names.column("id")),
                )
        return int(new_id)

    def install_change_trigger(self) -> None:
        """Install the PostgreSQL trigger that makes every change of the table
        notify watchers (LISTEN/NOTIFY); see :mod:`tcpmgm.sql.watch`."""
        install_trigger(self.source, self.names)

    def watch(self, **options: Any) -> Watcher[ReloadReport]:
        """A started :class:`~tcpmgm.sql.watch.Watcher` that reloads when the table changes
        (``options``: those of the watcher, from ``method`` to ``on_error``)."""
        return Watcher(self.reload, self.source, self.names, **options).start()

    def close(self) -> None:
        """Close the database connection kept between reloads (rules stay in service)."""
        self.source.close()
