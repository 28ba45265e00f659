"""The ``tcpmgm`` command line.

Table commands (``db init``, ``add``, ``rm``, ``list``, ``match``, ``check``, ``compile``)
take ``--db URL`` (default ``$TCPMGM_DB``, else ``sqlite:///tcpmgm.db``, a
file in the current directory), ``--table``, ``--column NAME=COL`` and
``--listener TAG=ADDR``.  Expected failures print one line on stderr: exit
status 2 for a usage mistake, 1 for anything else.  Long work shows a
progress bar when stderr is a terminal and stays quiet when it is not.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Callable, ClassVar

import click

from ..model.errors import ReloadError, RuleError, TcpMgmError
from ..model.rule import COLUMNS
from ..model.text import aligned
from ..opensips.report import check_table
from ..service.manager import DEFAULT_DB_URL, TcpMgm
from ..service.sockets import parse_endpoint
from ..sql.loader import load_rules
from ..sql.schema import DEFAULT_SCHEMA_VERSION, SCHEMA_VERSIONS, opensips_releases
from ..sql.table import count_rows, read_rows, remove_rule
from .lint import lint, rejected_findings

__all__ = ["cli", "main"]

_TEXT_COLUMNS = {"proto", "remote_addr", "local_addr", "attrs"}


class _Commands(click.Group):
    """The commands, with ``bench`` loaded only when it is run or its own help is asked for.

    The benchmark harness lives outside the runtime package (``benchmarks/tcpmgm_bench``,
    installed beside it): no other command, not even the listing of ``tcpmgm --help``,
    pays for importing it.
    """

    # name: (module holding ``command``, the line ``tcpmgm --help`` shows for it)
    lazy: ClassVar[dict[str, tuple[str, str]]] = {
        "bench": ("tcpmgm_bench.harness", "Benchmark the compiled classifier against the baselines."),
    }
    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, short_help = self.lazy[cmd_name]
        if self._listing:
            return click.Command(cmd_name, short_help=short_help)
        command: click.Command = importlib.import_module(module).command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tcpmgm")
@click.option("-v", "--verbose", count=True, help="Log more (-v: info, -vv: debug).")
def cli(verbose: int) -> None:
    """Per-connection TCP policy: OpenSIPS tcp_mgm rules for Python."""
    # Reports already carry what the library logs; show the log only on request.
    level = {0: logging.CRITICAL, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="tcpmgm: %(levelname)s: %(message)s")


@cli.command()
@click.option("--path", default="tcpmgm-demo.db", show_default=True, help="SQLite file to (re)create.")
@click.option("--force", is_flag=True, help="Replace the file even if it is not an earlier demo's database.")
def demo(path: str, force: bool) -> None:
    """Create a demo rule table, load it, and show which rule wins for sample connections.

    An existing file is replaced only when it is an earlier demo's database (or with --force).
    """
    from .demo import run_demo

    run_demo(path, sys.stdout, force=force)


# -- shared options -------------------------------------------------------------------


def _pairs(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise click.BadParameter(f"{value!r} is not {param.metavar}", ctx, param)
        pairs[name.strip()] = target.strip()
    return pairs


_TABLE_OPTIONS = (
    click.option(
        "--db",
        "db_url",
        envvar="TCPMGM_DB",
        default=DEFAULT_DB_URL,
        show_default=True,
        metavar="URL",
        help="Database URL (also $TCPMGM_DB).",
    ),
    click.option("--table", default="tcp_mgm", show_default=True, metavar="NAME", help="Rule table name."),
    click.option(
        "--column",
        "columns",
        multiple=True,
        callback=_pairs,
        metavar="NAME=COL",
        help="Column rename, e.g. connect_timeout=connect_to (repeatable).",
    ),
    click.option(
        "--listener",
        "listeners",
        multiple=True,
        callback=_pairs,
        metavar="TAG=ADDR",
        help="Socket tag a local_addr may name, e.g. internal=10.0.0.1 (repeatable).",
    ),
)


# Where a running service's admin endpoint is: for `tcpmgm mi` and `tcpmgm list --hits`.
_MI_OPTIONS = (
    click.option(
        "--url",
        envvar="TCPMGM_MI_URL",
        default=None,
        help="Endpoint URL (also $TCPMGM_MI_URL; default http://127.0.0.1:8888/mi).",
    ),
    click.option("--token", envvar="TCPMGM_MI_TOKEN", default=None, help="Bearer token (also $TCPMGM_MI_TOKEN)."),
)


def _mi_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_MI_OPTIONS):
        command = option(command)
    return command


def _with_manager(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the table options to ``command`` and pass it a :class:`TcpMgm` as ``mgr``."""

    @functools.wraps(command)
    def wrapper(db_url: str, table: str, columns: dict[str, str], listeners: dict[str, str], **kwargs: Any) -> Any:
        mgr = TcpMgm(db_url, table=table, columns=columns, listeners=listeners)
        return command(mgr=mgr, **kwargs)

    for option in reversed(_TABLE_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


@contextlib.contextmanager
def _progress(label: str, length: Callable[[], int] | None) -> Iterator[Callable[[int], None] | None]:
    """A progress bar's ``update`` on a terminal, ``None`` when stderr is not one.

    ``length`` ``None``: the end is not known beforehand, and the bar counts."""
    if not sys.stderr.isatty():
        yield None
        return
    if length is None:
        # Items without a length hint: click shows a moving bar and the count so far.
        with click.progressbar(_no_items(), label=label, file=sys.stderr, show_pos=True) as counter:
            yield counter.update
        return
    with click.progressbar(length=length(), label=label, file=sys.stderr) as bar:
        yield bar.update


def _no_items() -> Iterator[int]:
    yield from ()


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


# -- db -----------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Manage the rule table itself."""


@db.command("init")
@click.option(
    "--schema-version",
    type=click.IntRange(min(SCHEMA_VERSIONS), max(SCHEMA_VERSIONS)),
    default=DEFAULT_SCHEMA_VERSION,
    show_default=True,
    help="; ".join(
        f"{version}: OpenSIPS {opensips_releases(version)}"
        + (" (with parallel_read)" if "parallel_read" in columns else "")
        for version, columns in SCHEMA_VERSIONS.items()
    )
    + ".",
)
@_with_manager
def db_init(mgr: TcpMgm, schema_version: int) -> None:
    """Create the rule table and its version row."""
    mgr.create_schema(schema_version)
    click.echo(f"created table {mgr.names.table!r} (schema version {schema_version}) in {mgr.source.description}")


# -- add / rm / list ------------------------------------------------------------------


def _column_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for column in reversed(COLUMNS):
        kind = str if column in _TEXT_COLUMNS else int
        # proto is NOT NULL with a default of 'any' in the table; validate what will be stored.
        default = "any" if column == "proto" else None
        command = click.option(
            f"--{column.replace('_', '-')}",
            column,
            type=kind,
            default=default,
            show_default=default is not None,
            help=f"Value of column {column}.",
        )(command)
    return command


@cli.command()
@_column_options
@_with_manager
def add(mgr: TcpMgm, **row: Any) -> None:
    """Add a rule (validated like a loaded row); print its id.

    The values are stored as validation read them (--proto TCP as tcp,
    --no-new-conn 5 as 1, 10.1.2.3/8 as 10.0.0.0/8).  Unset columns take the
    table's defaults; without --id the database picks one.
    """
    try:
        rule_id = mgr.add_rule(row)
    except RuleError as exc:
        if row.get("id") is not None:
            raise
        # Validation numbered the id-less row 1; that number means nothing to the operator.
        raise TcpMgmError(f"rule not added: column {exc.column!r}, value {exc.value!r}: {exc.reason}") from None
    click.echo(rule_id)


@cli.command()
@click.argument("rule_id", metavar="ID", type=int)
@_with_manager
def rm(mgr: TcpMgm, rule_id: int) -> None:
    """Remove the rule with id ID."""
    if not remove_rule(mgr.source, mgr.names, rule_id):
        raise TcpMgmError(f"no rule with id {rule_id} in table {mgr.names.table!r}")
    click.echo(f"removed rule {rule_id}")


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--hits",
    is_flag=True,
    help="Add how many lookups each rule won since the service's last reload, from its admin endpoint (--url).",
)
@_mi_options
@_with_manager
def list_rules(mgr: TcpMgm, as_json: bool, hits: bool, url: str | None, token: str | None) -> None:
    """Print the table's rows as stored (invalid ones too), by id.

    With --hits, each row also shows the lookups its rule won in the running
    service since its last reload ("-": not in service, e.g. rejected or added
    since), and the default profile's count follows the rows.
    """
    rows = read_rows(mgr.source, mgr.names)
    if hits:
        _list_with_hits(rows, url, token, as_json)
    elif as_json:
        _echo_json(rows)
    elif not rows:
        click.echo(f"table {mgr.names.table!r} is empty")
    else:
        header = list(rows[0])
        click.echo(aligned([header] + [[row[c] for c in header] for row in rows]))


def _list_with_hits(rows: list[dict[str, Any]], url: str | None, token: str | None, as_json: bool) -> None:
    from ..service import mi  # the HTTP machinery, only for the commands that need it

    where = url or mi.DEFAULT_URL
    stats = mi.stats_all(where, token=token)
    if not stats.get("counting"):
        raise TcpMgmError(f"the service at {where} does not count hits (its matchers are built with count_hits=False)")
    won = {entry["id"]: entry["hits"] for entry in stats["hits"]}
    listed = [{**row, "hits": won.get(row["id"])} for row in rows]
    in_table = {row["id"] for row in rows}
    gone = [{"id": rule_id, "hits": count} for rule_id, count in won.items() if rule_id not in in_table]
    since = datetime.datetime.fromtimestamp(stats["since"], datetime.timezone.utc)
    if as_json:
        _echo_json({"rows": listed, "default": stats["default"], "since": since.isoformat(), "not_in_table": gone})
        return
    if listed:
        # A rule not in service (rejected, or added since the reload) has no count: "-".
        cells = [[*(row[c] for c in rows[0]), "-" if row["hits"] is None else row["hits"]] for row in listed]
        click.echo(aligned([list(listed[0]), *cells]))
    click.echo(f"default profile: {stats['default']} lookup(s)")
    click.echo(f"counted since {since:%Y-%m-%d %H:%M:%S} UTC, the service's last reload")
    if gone:
        shown = ", ".join(f"{entry['id']} ({entry['hits']})" for entry in gone)
        click.echo(f"in service but no longer in the table: {shown}")


# -- match ----------------------------------------------------------------------------


def _endpoint(
    text: str | None,
    name: str,
    listeners: Mapping[str, Any] | None = None,
) -> tuple[str | None, int]:
    """The ``(ip, port)`` of a command-line endpoint; 'any' or '-' (or nothing) is unknown.

    With ``listeners`` the address may be a socket tag (only our own side has them).
    """
    if text is None or text.lower() in ("any", "-"):
        return None, 0
    try:
        return parse_endpoint(text, listeners=listeners)
    except ValueError as exc:
        raise click.UsageError(f"{name}: {exc}") from None


def _shown(ip: str | None, port: int) -> str:
    if ip is None:
        return "any"
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _reload_for_query(mgr: TcpMgm) -> None:
    report = mgr.reload()
    if report.rejected:
        click.echo(
            f"tcpmgm: note: {len(report.rejected)} row(s) rejected and ignored (`tcpmgm check` lists them)", err=True
        )


@cli.command()
@click.argument("proto")
@click.argument("remote", metavar="REMOTE_IP[:PORT]")
@click.argument("local", metavar="[LOCAL[:PORT]]", required=False)
@click.option(
    "--explain", is_flag=True, help="Show every matching rule and why it lost, and OpenSIPS's pick when it differs."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_with_manager
def match(mgr: TcpMgm, proto: str, remote: str, local: str | None, explain: bool, as_json: bool) -> None:
    """Which rule wins for a connection, and its profile.

    Addresses as IP:PORT, [IPV6]:PORT or a bare IP or [IPV6] (port 0); LOCAL
    may also be a socket tag (--listener TAG=ADDR), be omitted or be 'any'
    (unknown).  The first line shows the connection as it was understood.
    """
    from ..service.mi import profile_dict

    remote_ip, remote_port = _endpoint(remote, "REMOTE")
    local_ip, local_port = _endpoint(local, "LOCAL", mgr.listeners)
    _reload_for_query(mgr)
    try:
        found = mgr.explain(proto, remote_ip, remote_port, local_ip, local_port)
        opensips = mgr.opensips_order.lookup(proto, remote_ip, remote_port, local_ip, local_port).id if explain else 0
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    tag = _endpoint(local, "LOCAL")[0] if local_ip is not None else None  # as typed: a tag, or the ip
    if as_json:
        connection = {
            "proto": proto.lower(),
            "remote_ip": remote_ip,
            "remote_port": remote_port,
            "local_ip": local_ip,
            "local_port": local_port,
        }
        if tag != local_ip:
            connection["local_tag"] = tag
        result: dict[str, Any] = {
            "connection": connection,
            "rule": found.profile.id,
            "profile": profile_dict(found.profile),
        }
        if explain:
            result["matches"] = [{"rule": r.id, "filters": r.describe(), "reason": why} for r, why in found.matches]
            result["opensips_rule"] = opensips
        _echo_json(result)
        return
    shown_local = _shown(local_ip, local_port) + (f" (socket tag {tag!r})" if tag != local_ip else "")
    click.echo(f"connection: {proto.lower()} remote {_shown(remote_ip, remote_port)}, local {shown_local}")
    click.echo(str(found) if explain else found.summary())
    if explain and opensips != found.profile.id:
        click.echo(f"OpenSIPS would pick {f'rule {opensips}' if opensips else 'no rule'}")


# -- check ----------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--opensips",
    is_flag=True,
    help="Instead: where real OpenSIPS would pick another rule than documented, and its pitfalls on this table.",
)
@_with_manager
def check(mgr: TcpMgm, as_json: bool, opensips: bool) -> None:
    """Load the table and lint it: rejected rows, shadowed rules, duplicates, host bits.

    Exit status 1 when there is any error (warnings alone: 0).  With
    --opensips, report what real OpenSIPS would do with the table instead
    (docs/opensips.md): exit status 1 when it would pick another rule than
    the documented order anywhere.
    """
    if opensips:
        _check_opensips(mgr, as_json)
        return
    started = time.perf_counter()
    with _progress("loading", lambda: count_rows(mgr.source, mgr.names)) as update, mgr.source.connection() as conn:
        loaded = load_rules(
            conn, mgr.source.dialect, mgr.names, listeners=mgr.listeners, defaults=mgr.default, progress=update
        )
    seconds = time.perf_counter() - started
    with _progress("linting", lambda: len(loaded.records)) as update:
        # Every loader warning is a finding, so that one count (the findings') is shown everywhere.
        findings = rejected_findings(loaded.rejected) + lint(loaded.rules, progress=update, warnings=loaded.warnings)
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    if as_json:
        _echo_json(
            {
                "loaded": len(loaded.records),
                "rejected": len(loaded.rejected),
                "schema_version": loaded.schema_version,
                "seconds": round(seconds, 3),
                "errors": errors,
                "warnings": warnings,
                "findings": [f.to_dict() for f in findings],
            }
        )
    else:
        click.echo(
            f"loaded {len(loaded.records)} rule(s), rejected {len(loaded.rejected)}, "
            f"schema version {loaded.schema_version}, {seconds * 1000:.1f} ms"
        )
        for finding in findings:
            click.echo(str(finding))
        click.echo(f"{errors} error(s), {warnings} warning(s)")
    if errors:
        click.get_current_context().exit(1)


def _check_opensips(mgr: TcpMgm, as_json: bool) -> None:
    with _progress("comparing with OpenSIPS (connections)", None) as update:  # as many as the rules' boundaries make
        report = check_table(mgr, progress=update)
    if as_json:
        _echo_json(report.to_json())
    else:
        for line in report.lines():
            click.echo(line)
    if report.differs:
        click.get_current_context().exit(1)


# -- compile --------------------------------------------------------------------------


@cli.command("compile")
@click.option(
    "--out",
    required=True,
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="The image file to write: replaced by an atomic rename, never rewritten in place.",
)
@click.option("--strict", is_flag=True, help="Write nothing when the table has a row it rejects (exit 1).")
@_with_manager
def compile_image(mgr: TcpMgm, out: str, strict: bool) -> None:
    """Compile the table into a rule image, which worker processes serve (TcpMgm.from_image).

    The image is written beside FILE and renamed onto it, so a worker
    following FILE finds the old image or the new one, whole.  Rows the table
    rejects are left out, with a note on stderr (`tcpmgm check` lists them);
    with --strict nothing is written and the exit status is 1.
    """
    mgr.strict = strict
    report = mgr.compile(out)
    version = "unknown" if report.schema_version is None else report.schema_version
    click.echo(
        f"compiled {report.loaded} rule(s) into {out} (schema version {version}, {report.seconds * 1000:.1f} ms)"
    )
    if report.rejected:
        click.echo(
            f"tcpmgm: note: {len(report.rejected)} row(s) rejected and left out (`tcpmgm check` lists them)", err=True
        )


# -- mi -------------------------------------------------------------------------------


def _mi_params(values: Sequence[str]) -> Any:
    """``name=value`` words to an object, bare words to an array; values are JSON when they parse."""

    def value_of(text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            return text

    if not values:
        return None
    named = ["=" in v for v in values]
    if all(named):
        return {k: value_of(v) for k, _, v in (value.partition("=") for value in values)}
    if not any(named):
        return [value_of(v) for v in values]
    raise click.UsageError("give params either all as NAME=VALUE or all positional")


@cli.command("mi")
@click.argument("method")
@click.argument("params", nargs=-1)
@_mi_options
def mi_command(method: str, params: Sequence[str], url: str | None, token: str | None) -> None:
    """Call METHOD on a running service's admin endpoint and print the result as JSON.

    PARAMS are NAME=VALUE pairs or positional values, e.g.
    `tcpmgm mi tcp_match proto=tcp remote=10.0.0.1:5060`.
    """
    from ..service import mi  # the HTTP machinery, only for the commands that need it

    _echo_json(mi.call(url or mi.DEFAULT_URL, method, _mi_params(params), token=token))


# click >= 8.2 reports a bare group invocation as this usage error; show the help instead.
_NO_ARGS_IS_HELP: type[click.exceptions.NoArgsIsHelpError] | tuple[()] = getattr(
    click.exceptions, "NoArgsIsHelpError", ()
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; expected failures print one line on stderr (exit 2: usage, 1: failure)."""
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="tcpmgm", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except _NO_ARGS_IS_HELP as exc:
        click.echo(exc.ctx.get_help())
        return exc.exit_code
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "tcpmgm"
        click.echo(f"{command}: error: {exc.format_message()} (see '{command} --help')", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"tcpmgm: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except ReloadError as exc:
        # From the command line there are no "old rules in service": show the cause.
        click.echo(f"tcpmgm: error: {exc.__cause__ or exc}", err=True)
        return 1
    except TcpMgmError as exc:
        click.echo(f"tcpmgm: error: {exc}", err=True)
        return 1
    return code if isinstance(code, int) else 0
