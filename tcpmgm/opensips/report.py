"""One report of what real OpenSIPS makes of a table: the order's differences, the pitfalls, the renames.

:func:`check_table` reads the table once, as OpenSIPS does (a plain ``SELECT``
without ``ORDER BY``, the rows in the database's order), makes the rules of it
with the reload's own row reader (:meth:`~tcpmgm.Rule.from_row`, the one
validation) in that order, and gathers :func:`~tcpmgm.opensips.pitfalls.pitfalls`
on the raw rows, :func:`~tcpmgm.opensips.comparison.compare` on the rules (on
OpenSIPS's side without the rows the pitfalls say it does not load:
:func:`~tcpmgm.opensips.pitfalls.not_loaded`) and
:func:`~tcpmgm.opensips.pitfalls.modparam_lines` for the table's names into a
:class:`Report` (docs/opensips.md#opensips-pitfalls), which the CLI and the
admin endpoint print.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..matching.records import RuleRecords
from ..model.errors import ArgumentError, RuleError, RuleWarning
from ..model.profile import Profile
from ..model.rule import Rule
from ..sql.db import Source
from ..sql.loader import version_row
from ..sql.rows import row_reader
from ..sql.schema import DEFAULT_SCHEMA_VERSION, TableNames
from ..sql.table import read_rows
from .comparison import Connection, Difference, compare
from .pitfalls import OPENSIPS_VERSIONS, Pitfall, modparam_lines, not_loaded, pitfalls, version_pitfalls

__all__ = ["Report", "RuleTable", "check_table"]

_IDS_SHOWN = 20  # a pitfall's rows on a terminal; the JSON has them all


class RuleTable(Protocol):
    """What :func:`check_table` reads of a table's owner (a :class:`~tcpmgm.TcpMgm` is one)."""

    @property
    def source(self) -> Source: ...
    @property
    def names(self) -> TableNames: ...
    @property
    def listeners(self) -> Mapping[str, Any]: ...
    @property
    def default(self) -> Profile: ...
    @property
    def schema_version(self) -> int | None: ...


@dataclasses.dataclass(frozen=True)
class Report:
    """What the OpenSIPS of ``opensips_version`` makes of one table.

    ``exhaustive`` and ``candidates`` are the comparison's
    (:class:`~tcpmgm.opensips.comparison.Comparison`): whether it asked every
    candidate connection, and how many it asked.  ``not_loaded``: the rows
    OpenSIPS does not load (the pitfalls say why), left out of its side of
    the comparison.
    """

    differences: list[Difference]
    pitfalls: list[Pitfall]
    modparams: list[str]
    opensips_version: str
    exhaustive: bool = True
    candidates: int = 0
    not_loaded: tuple[int, ...] = ()

    @property
    def differs(self) -> bool:
        """OpenSIPS would pick another rule than documented for some connection."""
        return bool(self.differences)

    def to_json(self, *, offset: int = 0, limit: int | None = None) -> dict[str, Any]:
        """The report as JSON-ready values, with the differences from ``offset`` on, at most
        ``limit`` of them (None: all); ``next_offset`` is where the next page starts (None: none)."""
        if offset < 0 or (limit is not None and limit < 1):
            raise ArgumentError(f"a page starts at an offset of 0 or more and holds 1 or more, not {offset}, {limit}")
        total = len(self.differences)
        end = total if limit is None else min(total, offset + limit)
        return {
            "opensips_version": self.opensips_version,
            "differs": self.differs,
            "exhaustive": self.exhaustive,
            "candidates": self.candidates,
            "not_loaded": list(self.not_loaded),
            "differences_total": total,
            "offset": offset,
            "next_offset": end if end < total else None,
            "differences": [
                {
                    "connection": list(difference.connection),
                    "opensips_id": difference.opensips_id,
                    "documented_id": difference.documented_id,
                    "reason": difference.reason,
                }
                for difference in self.differences[offset:end]
            ],
            "pitfalls": [
                {"kind": pitfall.kind, "rule_ids": list(pitfall.rule_ids), "message": pitfall.message}
                for pitfall in self.pitfalls
            ],
            "modparams": list(self.modparams),
        }

    def lines(self) -> list[str]:
        """The report as text for a terminal."""
        out = [f"OpenSIPS {self.opensips_version}:"]
        if self.not_loaded:
            out.append(
                f"  compared without the {len(self.not_loaded)} row(s) it does not load (it rejects them or loses "
                f"them to batch fetches: see the pitfalls):"
            )
            out.append(f"      rows: {_ids(self.not_loaded)}")
        if self.differences:
            out.append(f"  picks another rule than documented ({len(self.differences)} case(s)):")
            for difference in self.differences:
                out.append(
                    f"    {_connection(difference.connection)}: OpenSIPS picks {_rule(difference.opensips_id)}, "
                    f"documented {_rule(difference.documented_id)}: {difference.reason}"
                )
        elif self.exhaustive:
            out.append("  picks the documented rule for every connection checked")
        else:
            out.append(f"  picks the documented rule for each of the {self.candidates} connection(s) checked")
        if not self.exhaustive:
            out.append(
                f"  the comparison was cut: {self.candidates} candidate connection(s) asked, not all of them, so "
                f"a case where OpenSIPS picks another rule may be missing"
            )
        if self.pitfalls:
            out.append(f"  pitfalls ({len(self.pitfalls)}):")
            for pitfall in self.pitfalls:
                out.append(f"    [{pitfall.kind}] {pitfall.message}")
                if pitfall.rule_ids:
                    out.append(f"      rows: {_ids(pitfall.rule_ids)}")
        else:
            out.append("  no pitfalls")
        if self.modparams:
            out.append("  the modparam lines for this table's names:")
            out += [f"    {line}" for line in self.modparams]
        return out


def check_table(
    table: RuleTable,
    *,
    progress: Callable[[int], None] | None = None,
    batch: int | None = None,
) -> Report:
    """Read ``table``'s rows once, in database order, and report what OpenSIPS makes of them.

    ``progress`` is passed to :func:`~tcpmgm.opensips.comparison.compare`;
    ``batch``, the rows OpenSIPS fetches at a time, to
    :func:`~tcpmgm.opensips.pitfalls.pitfalls` (default: its upper bound).
    """
    rows = read_rows(table.source, table.names, by_id=False)
    with table.source.connection() as conn:
        recorded = version_row(conn, table.source.dialect, table.names.table)
    version = _schema_version(rows, table.schema_version)
    rules = _rules(rows, table)
    found = version_pitfalls(recorded, table=table.names.table, schema_version=version)
    found += pitfalls(
        rows,
        backend=table.source.dialect.name,
        columns=table.names.columns,
        listeners=table.listeners,
        schema_version=version,
        batch=batch,
    )
    unloaded = not_loaded(found)
    left_out = set(unloaded)
    comparison = compare(
        rules,
        opensips_rules=[rule for rule in rules if rule.id not in left_out],
        default=table.default,
        progress=progress,
    )
    return Report(
        differences=comparison.differences,
        pitfalls=found,
        modparams=modparam_lines(table.names.columns, schema_version=version, table=table.names.table),
        opensips_version=OPENSIPS_VERSIONS[version],
        exhaustive=comparison.exhaustive,
        candidates=comparison.candidates,
        not_loaded=unloaded,
    )


def _schema_version(rows: Sequence[Mapping[str, Any]], configured: int | None) -> int:
    """The table's version as its columns say (read_rows gives parallel_read only when the table has it)."""
    if rows:
        return 1 if "parallel_read" in rows[0] else 2
    return configured if configured is not None else DEFAULT_SCHEMA_VERSION


def _rules(rows: Sequence[Mapping[str, Any]], table: RuleTable) -> list[Rule]:
    """The rules of ``rows`` in their order, as a reload makes them (bad rows and repeated ids left out)."""
    if not rows:
        return []
    columns = tuple(rows[0])
    reader = row_reader(columns, listeners=table.listeners, defaults=table.default)
    records = RuleRecords()
    rejected: list[RuleError] = []
    warnings: list[RuleWarning] = []
    reader.read_batch([tuple(row[c] for c in columns) for row in rows], records, rejected, warnings)
    return list(records.rules())


def _connection(connection: Connection) -> str:
    proto, remote_ip, remote_port, local_ip, local_port = connection
    return f"{proto or 'any'} {remote_ip}:{remote_port} <- {local_ip if local_ip is not None else '*'}:{local_port}"


def _rule(rule_id: int) -> str:
    return f"rule {rule_id}" if rule_id else "no rule"


def _ids(ids: Sequence[int]) -> str:
    shown = ", ".join(map(str, ids[:_IDS_SHOWN]))
    return shown if len(ids) <= _IDS_SHOWN else f"{shown}, ... ({len(ids)} in all)"
