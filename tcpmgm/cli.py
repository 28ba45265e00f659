"""The ``tcpmgm`` command line."""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

import click

from .errors import TcpMgmError

__all__ = ["main", "cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tcpmgm")
@click.option("-v", "--verbose", count=True, help="Log more (-v: info, -vv: debug).")
def cli(verbose: int) -> None:
    """Per-connection TCP policy: OpenSIPS tcp_mgm rules for Python."""
    # Reports already carry what the library logs; show the log only on request.
    level = {0: logging.CRITICAL, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="tcpmgm: %(levelname)s: %(message)s")


@cli.command()
@click.option("--path", default="tcpmgm-demo.db", show_default=True, help="SQLite file to (re)create.")
def demo(path: str) -> None:
    """Create a demo rule table, load it, and show which rule wins for sample connections."""
    from .demo import run_demo

    run_demo(path, sys.stdout)


from .bench import command as _bench_command  # noqa: E402  (defined beside the benchmark code)

cli.add_command(_bench_command)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; expected failures print one line on stderr and exit 1."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="tcpmgm", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except TcpMgmError as exc:
        click.echo(f"tcpmgm: error: {exc}", err=True)
        return 1
    return 0
