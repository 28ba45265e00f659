"""What real OpenSIPS does with a ``tcp_mgm`` table beyond the order it applies (docs/opensips.md#opensips-pitfalls).

Each fact here is read from OpenSIPS's source (4.1.0-dev, and 3.3 to 3.6 for
schema version 1; the citations are in docs/opensips.md#opensips-pitfalls):
the rows ``tcp_store_path`` and ``db_row_decode`` refuse, the slot in its rule
array that such a row leaves unwritten, the batches of ``tcp_reload_paths`` of
which only the last survives, the ``*_col`` parameters that rename the column
after the one they name, the keepalive flag that any keepalive timer turns back
on.  :func:`pitfalls` reads a table's rows as stored (not as tcpmgm validates
them: OpenSIPS reads them differently) and says which of these the table
triggers; :func:`modparam_lines` writes the configuration that gives OpenSIPS a
deployment's column names.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from ..model.errors import ArgumentError, SchemaError
from ..model.profile import known_attrs, parse_integer
from ..sql.schema import (
    DEFAULT_SCHEMA_VERSION,
    NULLABLE_COLUMNS,
    SCHEMA_VERSIONS,
    TableNames,
    known_schema_version,
    opensips_releases,
)

__all__ = [
    "OPENSIPS_ATTRS",
    "OPENSIPS_SOURCE",
    "OPENSIPS_VERSIONS",
    "PKG_MEMORY",
    "Pitfall",
    "batch_rows",
    "modparam_lines",
    "not_loaded",
    "pitfalls",
    "version_pitfalls",
]

# The newest OpenSIPS source these facts were read from.
OPENSIPS_SOURCE = "4.1.0-dev"
# The OpenSIPS releases each schema version's report speaks for: those that read it
# (sql.schema.OPENSIPS_RELEASES), up to the source read.
OPENSIPS_VERSIONS: dict[int, str] = {v: opensips_releases(v, latest=OPENSIPS_SOURCE) for v in SCHEMA_VERSIONS}

# tcp_db.c, tcp_mgm_cols[]: the columns OpenSIPS selects, in the order of its array.
_OPENSIPS_COLUMNS: dict[int, tuple[str, ...]] = {
    2: (
        "id",
        "proto",
        "remote_addr",
        "remote_port",
        "local_addr",
        "local_port",
        "priority",
        "attrs",
        "connect_timeout",
        "con_lifetime",
        "msg_read_timeout",
        "send_threshold",
        "no_new_conn",
        "alias_mode",
        "keepalive",
        "keepcount",
        "keepidle",
        "keepinterval",
    ),
}
_OPENSIPS_COLUMNS[1] = (*_OPENSIPS_COLUMNS[2][:14], "parallel_read", *_OPENSIPS_COLUMNS[2][14:])
assert all(set(_OPENSIPS_COLUMNS[v]) == set(SCHEMA_VERSIONS[v]) for v in SCHEMA_VERSIONS)

# tcp_mgm.c, params[]: each column parameter and the entry of tcp_mgm_cols[] it writes.  The list
# names a "direction" column that the table does not have, so from direction_col on each
# parameter writes the column after the one it names; version 2 gave no_new_conn_col's entry
# to alias_mode_col as well and realigned the rest.  (Version 1's keepinterval_col writes the
# array's terminator: never set it.)
_NAMED = (*_OPENSIPS_COLUMNS[2][:6], "direction", *_OPENSIPS_COLUMNS[2][6:13])
_RENAME_PARAMETERS: dict[int, tuple[tuple[str, int], ...]] = {
    2: (
        *((f"{name}_col", i) for i, name in enumerate(_NAMED)),
        *((f"{name}_col", i) for i, name in enumerate(_OPENSIPS_COLUMNS[2][13:], 13)),
    ),
    1: tuple((f"{name}_col", i) for i, name in enumerate((*_NAMED, "parallel_read", *_OPENSIPS_COLUMNS[2][13:]))),
}

# net/tcp_conn_profile.c, tcp_con_attr[]: the only attrs name OpenSIPS knows.
OPENSIPS_ATTRS = frozenset({"max_msg_chunks"})
# socket_info.h, parse_proto(), less the three tcp_store_path refuses (UDP, SCTP, HEP over UDP).
_OPENSIPS_PROTOCOLS = frozenset(
    {"tcp", "tls", "ws", "wss", "bin", "bins", "ipsec", "hep_tcp", "hep_tls", "smpp", "msrp", "msrps", "bond"}
)
_NOT_TCP = frozenset({"udp", "sctp", "hep_udp"})
_ALIAS_MODE_MAX = 2  # TCP_ALIAS_ALWAYS
_PARALLEL_READ_MAX = 2  # schema version 1
_TIMERS = ("keepcount", "keepidle", "keepinterval")
# The pitfalls whose rows OpenSIPS does not load: all of the rows before the batch it keeps, and
# the rows of that batch it rejects (every rejected row of that batch leaves one such entry).
_NOT_LOADED = ("batch-loss", "uninitialised-entry")
# The two unknown-attr refusals: a name tcpmgm has registered (register_attr), or one that both refuse.
_TCPMGM_ONLY = "tcpmgm-only"
_UNKNOWN_TO_BOTH = "unknown to both"
_TEXT_COLUMNS = frozenset({"proto", "remote_addr", "local_addr", "attrs"})  # DB_STR in tcp_mgm_cols[]

# Private ("pkg") memory of an OpenSIPS process: 16 MB in a default build (config.h,
# PKG_MEM_SIZE with HP_MALLOC; the -M option changes it).
PKG_MEMORY = 16 * 1024 * 1024
_COLUMN_OVERHEAD = 256  # db/db.c
# The database modules tcpmgm's backends correspond to; each has fetch_result, so all fetch in batches.
_DB_MODULES = {"sqlite": "db_sqlite", "postgres": "db_postgres", "mysql": "db_mysql"}


@dataclasses.dataclass(frozen=True)
class Pitfall:
    """One way OpenSIPS treats a table otherwise than its documentation (and tcpmgm) say.

    ``kind`` is a stable identifier (see docs/opensips.md#opensips-pitfalls),
    ``rule_ids`` the rows it concerns (their ids as stored, in database order;
    empty when it concerns the configuration), ``message`` what OpenSIPS will do.
    """

    kind: str
    rule_ids: tuple[int, ...]
    message: str


def batch_rows(schema_version: int = DEFAULT_SCHEMA_VERSION, pkg_memory: int = PKG_MEMORY) -> int:
    """The most rows OpenSIPS fetches at a time: ``estimate_available_rows`` of tcp_db.c with
    all of ``pkg_memory`` free (a process has less free, so its batches are at most this)."""
    columns = _OPENSIPS_COLUMNS[known_schema_version(schema_version)]
    ints = len(columns) - len(_TEXT_COLUMNS)  # NO_INT_VALS
    per_row = 8 + 42 + 42 + 3 + 4 * ints + len(columns) * _COLUMN_OVERHEAD
    return pkg_memory // per_row or 5


def modparam_lines(
    columns: Mapping[str, str],
    *,
    schema_version: int = DEFAULT_SCHEMA_VERSION,
    table: str | None = None,
) -> list[str]:
    """The ``modparam("tcp_mgm", ...)`` lines that make OpenSIPS read the table under these names.

    ``columns`` maps canonical column names to the names in the database (as
    :class:`~tcpmgm.sql.schema.TableNames` takes them); ``table``, when not
    ``tcp_mgm``, adds the ``db_table`` line.  Each column gets the parameter
    that really writes it on the OpenSIPS of ``schema_version``, which from
    ``priority`` on is the parameter named after the column before it.
    """
    names = TableNames(table or "tcp_mgm", dict(columns))  # the same checks as the table's own renames
    lines = [] if names.table == "tcp_mgm" else [_modparam("db_table", names.table)]
    for column in _OPENSIPS_COLUMNS[known_schema_version(schema_version)]:
        if names.column(column) != column:
            lines.append(_modparam(_parameter_for(column, schema_version), names.column(column)))
    return lines


def pitfalls(
    rows: Sequence[Mapping[str, Any]],
    *,
    backend: str,
    columns: Mapping[str, str] | None = None,
    listeners: Mapping[str, Any] | None = None,
    schema_version: int = DEFAULT_SCHEMA_VERSION,
    batch: int | None = None,
) -> list[Pitfall]:
    """The pitfalls of OpenSIPS that a table triggers, each with the rows it concerns.

    ``rows``: the table's rows as stored (canonical column name -> value as the
    driver gives it), in the order the database returns them to a plain
    ``SELECT``, which is the order OpenSIPS reads them in.  ``backend``: the
    dialect name (``sqlite``, ``postgres``, ``mysql``).  ``columns``: the
    deployment's column renames.  ``listeners``: the socket tags tcpmgm knows
    (tag -> address), which stand for OpenSIPS's listeners.  ``batch``: the rows
    OpenSIPS fetches at a time (default :func:`batch_rows`, its upper bound).
    """
    version = known_schema_version(schema_version)
    module = _DB_MODULES.get(backend)
    if module is None:
        raise SchemaError(f"unknown backend {backend!r} (known: {', '.join(sorted(_DB_MODULES))})")
    size = batch if batch is not None else batch_rows(version)
    if size < 1:
        raise ArgumentError(f"a batch is at least one row, got {size!r}")
    refusals = [_refusals(row, listeners or {}, version) for row in rows]
    loaded = [row for row, refused in zip(rows, refusals) if not refused]
    kept = _kept_from(len(rows), size)
    found: list[Pitfall] = []
    found += _batch_loss(rows, module, size, kept)
    found += _rejections(rows, refusals, kept)
    found += _keepalive_overrides(loaded)
    found += _repeated_ids(loaded)
    if version == 1:
        found.append(_parallel_read(rows))
    found += _renames(columns or {}, version)
    return found


def not_loaded(found: Iterable[Pitfall]) -> tuple[int, ...]:
    """The ids of the rows OpenSIPS does not load, as ``found`` (what :func:`pitfalls` gave) says:
    those lost to batch fetches and those of the batch it keeps that it rejects (each of which
    leaves an uninitialised entry), in database order."""
    # batch-loss comes first, and its rows all precede the batch kept: the order is the database's.
    return tuple(dict.fromkeys(i for pitfall in found if pitfall.kind in _NOT_LOADED for i in pitfall.rule_ids))


def version_pitfalls(found: int | None, *, table: str, schema_version: int = DEFAULT_SCHEMA_VERSION) -> list[Pitfall]:
    """The ``version`` row OpenSIPS needs: db_check_table_version refuses the table unless its row
    says the schema version that OpenSIPS reads (``found``: the row's value, None for no row)."""
    version = known_schema_version(schema_version)
    if found == version:
        return []
    if found is None:
        problem = "The version table has no row for this table (or there is no version table)"
    else:
        problem = f"The version row says {found}, but the columns are those of schema version {version}"
    return [
        Pitfall(
            "version-row",
            (),
            f"{problem}: OpenSIPS {OPENSIPS_VERSIONS[version]} refuses to load the table (at startup it does not "
            f"start); tcpmgm loads it all the same. The row it needs: table_name {table!r}, table_version {version}.",
        )
    ]


# -- what each row is to OpenSIPS ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Refusal:
    """Why OpenSIPS refuses a row: the pitfall's kind, and for a plain ``rejected-row`` the reason;
    ``detail`` is what of the row shows it (an attrs name, a local_addr form)."""

    kind: str
    reason: str = ""
    detail: str = ""


def _refusals(row: Mapping[str, Any], listeners: Mapping[str, Any], version: int) -> list[_Refusal]:
    """Every reason for which OpenSIPS refuses ``row`` (``db_row_decode``, then ``tcp_store_path``)."""
    found: list[_Refusal] = []
    for column in _OPENSIPS_COLUMNS[version]:
        if row.get(column) is None and column not in NULLABLE_COLUMNS:
            found.append(_Refusal("rejected-row", f"{column} is NULL, which its schema does not allow"))
        elif column not in _TEXT_COLUMNS and row.get(column) is not None and _integer(row[column]) is None:
            found.append(_Refusal("rejected-row", f"{column} is not an integer"))
    if found:
        return found  # db_row_decode refused the row before tcp_store_path saw it

    proto = _text(row.get("proto"))
    if proto is not None and proto.lower() != "any":
        name = proto.lower()
        if name in _NOT_TCP:
            found.append(_Refusal("rejected-row", f"proto {name!r} is not TCP-based"))
        elif name not in _OPENSIPS_PROTOCOLS:
            found.append(_Refusal("unknown-proto", detail=proto))
    remote = _remote_family(_text(row.get("remote_addr")))
    if remote == 0:
        found.append(_Refusal("rejected-row", "remote_addr is not an address in ip[/len] form, NULL or 'any'"))
    local, form = _local_family(_text(row.get("local_addr")), _integer(row.get("local_port")) or 0, listeners)
    if form:
        found.append(_Refusal("local-addr-form", detail=form))
    if remote and local and remote != local:
        found.append(_Refusal("rejected-row", "its remote and local addresses are of different IP families"))
    found += _attrs_refusals(row.get("attrs"))
    if (_integer(row.get("alias_mode")) or 0) > _ALIAS_MODE_MAX:
        found.append(_Refusal("rejected-row", f"alias_mode is above {_ALIAS_MODE_MAX}"))
    if version == 1 and (_integer(row.get("parallel_read")) or 0) > _PARALLEL_READ_MAX:
        found.append(_Refusal("rejected-row", f"parallel_read is above {_PARALLEL_READ_MAX}"))
    return found


def _attrs_refusals(value: Any) -> list[_Refusal]:
    """tcp_store_path's attrs loop: items split at ';' and trimmed; each item, value and all, is looked up as a name."""
    text = _text(value)
    if text is None:
        return []
    found = []
    registered = known_attrs()
    for item in (part.strip() for part in text.strip().split(";")):
        name, equals, _ = item.partition("=")
        if equals:
            found.append(_Refusal("attrs-value", detail=item))
        if not name.strip():
            found.append(_Refusal("attrs-empty-item"))
        elif name.strip() not in OPENSIPS_ATTRS:
            known = _TCPMGM_ONLY if name.strip() in registered else _UNKNOWN_TO_BOTH
            found.append(_Refusal("unknown-attr", known, detail=name.strip()))
    return found


def _remote_family(text: str | None) -> int | None:
    """4 or 6 for an address OpenSIPS parses (``mk_net_cidr``), None for any, 0 for one it refuses."""
    if text is None or text.lower() == "any":
        return None
    address, slash, length = text.partition("/")
    ip = _ip(address) if "%" not in address else None  # str2ip6 takes no zone
    if ip is None:
        return 0
    if slash and length and not (length.isdigit() and int(length) <= ip.max_prefixlen):
        return 0
    return ip.version


def _local_family(text: str | None, local_port: int, listeners: Mapping[str, Any]) -> tuple[int | None, str]:
    """(4 or 6 or None for any, the form OpenSIPS cannot match or ""): ``grep_internal_sock_info``."""
    if text is None or text.lower() == "any":
        return None, ""
    if text == "":
        return None, "'' (empty)"
    if "/" in text:
        return None, f"{text!r} (an ip/len network)"
    ip = _ip(text)
    if ip is not None:
        addresses = {a for a in map(_listener_ip, listeners.values()) if a is not None}
        if addresses and ip not in addresses:
            return None, f"{text!r} (no listener tcpmgm knows has this address)"
        return ip.version, ""
    if text in listeners:
        if local_port:
            return None, f"{text!r} with local_port {local_port} (a tag only with local_port 0)"
        address = _listener_ip(listeners[text])
        return (address.version if address is not None else None), ""
    return None, ""  # a listener name tcpmgm does not know: OpenSIPS may have it


def _listener_ip(address: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return _ip(str(address).partition("%")[0])


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    """A text column as OpenSIPS gets it: not stripped (it strips only attrs items)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _integer(value: Any) -> int | None:
    """An integer column's value, or None when it is none."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() else None
    text = _text(value)
    if text is None:
        return None
    try:
        return parse_integer(text.strip())
    except ValueError:
        return None


def _row_id(row: Mapping[str, Any]) -> int | None:
    return _integer(row.get("id"))


# -- the pitfalls ----------------------------------------------------------------------------


def _kept_from(count: int, batch: int) -> int:
    """The position of the first row OpenSIPS keeps: tcp_reload_paths restarts its row count
    and its array index with every batch, so only the last batch stays."""
    return 0 if count <= batch else count - (count % batch or batch)


def _batch_loss(rows: Sequence[Mapping[str, Any]], module: str, batch: int, kept: int) -> list[Pitfall]:
    if not kept:
        return []
    last = len(rows) - kept
    lost = rows[:kept]
    return [
        Pitfall(
            "batch-loss",
            _ids(lost),
            f"OpenSIPS's {module} fetches at most {batch} rows at a time and tcp_mgm keeps only the last batch: "
            f"of these {len(rows)} rows it loads the last {last} in database order and loses the first "
            f"{len(lost)} (a smaller batch, with less free private memory, loses more).",
        )
    ]


def _rejections(rows: Sequence[Mapping[str, Any]], refusals: Sequence[list[_Refusal]], kept: int) -> list[Pitfall]:
    """One pitfall per kind (and reason) of refusal, and one for the entries that the refused rows
    of the batch OpenSIPS keeps (from position ``kept`` on) leave in its array."""
    by_kind: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    details: dict[tuple[str, str], list[str]] = {}
    refused: list[Mapping[str, Any]] = []
    for position, (row, reasons) in enumerate(zip(rows, refusals)):
        if reasons and position >= kept:
            refused.append(row)
        for refusal in reasons:
            key = (refusal.kind, refusal.reason)
            group = by_kind.setdefault(key, [])
            if not group or group[-1] is not row:
                group.append(row)
            if refusal.detail and refusal.detail not in details.setdefault(key, []):
                details[key].append(refusal.detail)
    found = [
        Pitfall(kind, _ids(group), _refusal_message(kind, reason, details.get((kind, reason), [])))
        for (kind, reason), group in by_kind.items()
    ]
    if refused:
        found.append(
            Pitfall(
                "uninitialised-entry",
                _ids(refused),
                f"OpenSIPS skips the {len(refused)} row(s) it rejects but still counts them: its rule array keeps "
                f"as many entries never written for them (left-over memory: uninitialised, or a row of an "
                f"earlier batch), sorted among the real rules, which can match connections with any profile.",
            )
        )
    return found


def _refusal_message(kind: str, reason: str, details: list[str]) -> str:
    shown = ", ".join(details[:3]) + (f" and {len(details) - 3} more" if len(details) > 3 else "")
    if kind == "attrs-value":
        return (
            f"OpenSIPS looks each attrs item up as a name, value included ({shown}), finds no such attribute "
            f"and rejects these rows; it takes only a bare name, which sets the attribute to 0."
        )
    if kind == "unknown-attr" and reason == _TCPMGM_ONLY:
        return (
            f"OpenSIPS knows no attrs name but {', '.join(sorted(OPENSIPS_ATTRS))}; these rows name {shown}, "
            f"which tcpmgm has registered and OpenSIPS does not know, so OpenSIPS rejects them."
        )
    if kind == "unknown-attr":
        return (
            f"These rows name {shown} in attrs, which neither OpenSIPS nor tcpmgm knows: both reject them "
            f"(tcpmgm, as a bad row, when it reloads)."
        )
    if kind == "attrs-empty-item":
        return (
            "An empty attrs item (an empty column, or a ';' with nothing before or after it) is an unknown "
            "attribute to OpenSIPS, which rejects these rows; tcpmgm skips it."
        )
    if kind == "local-addr-form":
        return (
            f"OpenSIPS's local_addr must name one of its listeners (its IP, name, advertised name, or tag, a tag "
            f"only with local_port 0) and is stored as a /32 or /128; it cannot match {shown}, so it rejects "
            f"these rows."
        )
    if kind == "unknown-proto":
        return f"OpenSIPS has no protocol {shown}, so it rejects these rows."
    return f"OpenSIPS rejects these rows: {reason}."


def _keepalive_overrides(loaded: Sequence[Mapping[str, Any]]) -> list[Pitfall]:
    """net_tcp.c, init_sock_keepalive: any non-zero timer forces SO_KEEPALIVE on (rows OpenSIPS loads)."""
    overridden = [
        row
        for row in loaded
        if _integer(row.get("keepalive")) == 0 and any(_integer(row.get(timer)) for timer in _TIMERS)
    ]
    if not overridden:
        return []
    return [
        Pitfall(
            "keepalive-override",
            _ids(overridden),
            "These rows say keepalive 0 but set a keepalive timer (keepcount, keepidle or keepinterval; the "
            "table's defaults 9, 7200 and 75 all are): OpenSIPS then turns keepalive on anyway, where tcpmgm "
            "turns it off; set the three timers to 0 too.",
        )
    ]


def _repeated_ids(loaded: Sequence[Mapping[str, Any]]) -> list[Pitfall]:
    """OpenSIPS never compares ids: it loads every row of an id, where a reload keeps only the first."""
    seen: set[int] = set()
    repeated = []
    for row in loaded:
        rule_id = _row_id(row)
        if rule_id in seen:
            repeated.append(row)
        elif rule_id is not None:
            seen.add(rule_id)
    if not repeated:
        return []
    return [
        Pitfall(
            "duplicate-id",
            _ids(repeated),
            "These ids are on more than one row: OpenSIPS loads every one of them, where tcpmgm keeps only the "
            "first in database order, so the later rows can win connections in OpenSIPS (and are not compared).",
        )
    ]


def _parallel_read(rows: Sequence[Mapping[str, Any]]) -> Pitfall:
    using = [row for row in rows if _integer(row.get("parallel_read"))]
    return Pitfall(
        "parallel-read",
        _ids(using),
        f"The table has parallel_read (schema version 1, OpenSIPS {OPENSIPS_VERSIONS[1]}), which OpenSIPS "
        f"dropped in 2026 (schema version 2, OpenSIPS {OPENSIPS_VERSIONS[2]}): those refuse a table whose "
        f"version row says 1, and after the migration the rows listed lose their parallel_read setting.",
    )


def _renames(columns: Mapping[str, str], version: int) -> list[Pitfall]:
    """A column renamed where the parameter named after it renames another column."""
    writes = dict(_RENAME_PARAMETERS[version])
    found = []
    for column in _OPENSIPS_COLUMNS[version]:
        if columns.get(column, column) == column:
            continue
        named = f"{column}_col"
        written = _OPENSIPS_COLUMNS[version][writes[named]] if named in writes else None
        if written != column:
            found.append(
                Pitfall(
                    "column-rename",
                    (),
                    f"OpenSIPS's {named} parameter renames {written or 'the end of its column list'}, not "
                    f"{column}: to read {column} from {columns[column]!r} it needs "
                    f"{_parameter_for(column, version)}, as the modparam lines say.",
                )
            )
    return found


def _parameter_for(column: str, schema_version: int) -> str:
    """The parameter that writes ``column``'s name (the one named after it, when that one does)."""
    index = _OPENSIPS_COLUMNS[schema_version].index(column)
    candidates = [name for name, i in _RENAME_PARAMETERS[schema_version] if i == index]
    return f"{column}_col" if f"{column}_col" in candidates else candidates[0]


def _modparam(parameter: str, value: str) -> str:
    return f'modparam("tcp_mgm", "{parameter}", "{value}")'


def _ids(rows: Iterable[Mapping[str, Any]]) -> tuple[int, ...]:
    return tuple(i for i in map(_row_id, rows) if i is not None)
