"""One report of what real OpenSIPS makes of a table: the order's differences, the pitfalls, the renames.

:func:`check_table` reads the table once, as OpenSIPS does (a plain ``SELECT``
without ``ORDER BY``, the rows in the database's order), makes the rules of it
with the reload's own row reader (:meth:`~tcpmgm.Rule.from_row`, the one
validation) in that order, and gathers :func:`~tcpmgm.opensips.comparison.compare`
on them, :func:`~tcpmgm.opensips.pitfalls.pitfalls` on the raw rows and
:func:`~tcpmgm.opensips.pitfalls.modparam_lines` for the table's names into a
:class:`Report` (docs/opensips.md#opensips-pitfalls), which the CLI and the
admin endpoint print.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..model.errors import RuleError, RuleWarning
from ..model.profile import Profile
from ..model.rule import Rule
from ..sql.db import Source
from ..sql.loader import version_row
from ..sql.rows import RowReader
from ..sql.schema import DEFAULT_SCHEMA_VERSION, NULLABLE_COLUMNS, TableNames
from ..sql.table import read_rows
from .comparison import Connection, Difference, compare
from .pitfalls import OPENSIPS_VERSIONS, Pitfall, modparam_lines, pitfalls, version_pitfalls

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
    """What the OpenSIPS of ``opensips_version`` makes of one table."""

    differences: list[Difference]
    pitfalls: list[Pitfall]
    modparams: list[str]
    opensips_version: str

    @property
    def differs(self) -> bool:
        """OpenSIPS would pick another rule than documented for some connection."""
        return bool(self.differences)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "opensips_version": self.opensips_version,
            "differs": self.differs,
            "differences": [
                {
                    "connection": list(difference.connection),
                    "opensips_id": difference.opensips_id,
                    "documented_id": difference.documented_id,
                    "reason": difference.reason,
                }
                for difference in self.differences
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
        if self.differences:
            out.append(f"  picks another rule than documented ({len(self.differences)} case(s)):")
            for difference in self.differences:
                out.append(
                    f"    {_connection(difference.connection)}: OpenSIPS picks {_rule(difference.opensips_id)}, "
                    f"documented {_rule(difference.documented_id)}: {difference.reason}"
                )
        else:
            out.append("  picks the documented rule for every connection checked")
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
    return Report(
        differences=compare(rules, default=table.default, progress=progress).differences,
        pitfalls=found,
        modparams=modparam_lines(table.names.columns, schema_version=version, table=table.names.table),
        opensips_version=OPENSIPS_VERSIONS[version],
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
    reader = RowReader(
        columns,
        listeners=table.listeners,
        defaults=table.default,
        not_null=[c for c in columns if c not in NULLABLE_COLUMNS],
    )
    rules: list[Rule] = []
    rejected: list[RuleError] = []
    warnings: list[RuleWarning] = []
    reader.read_batch([tuple(row[c] for c in columns) for row in rows], rules, rejected, warnings, set())
    return rules


def _connection(connection: Connection) -> str:
    proto, remote_ip, remote_port, local_ip, local_port = connection
    return f"{proto or 'any'} {remote_ip}:{remote_port} <- {local_ip if local_ip is not None else '*'}:{local_port}"


def _rule(rule_id: int) -> str:
    return f"rule {rule_id}" if rule_id else "no rule"


def _ids(ids: Sequence[int]) -> str:
    shown = ", ".join(map(str, ids[:_IDS_SHOWN]))
    return shown if len(ids) <= _IDS_SHOWN else f"{shown}, ... ({len(ids)} in all)"
