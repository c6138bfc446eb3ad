"""The `pag` command line: one installed CLI that Snakemake rules and DVC stages call."""

from __future__ import annotations

import sys

import click

from pag import __version__, logs
from pag.cli_data import data_group
from pag.cli_evaluate import evaluate
from pag.cli_models import flops
from pag.cli_pipeline import (
    classical,
    dvc_yaml,
    plan,
    report,
    summarize,
    trivial,
    weights_group,
)
from pag.cli_train import train
from pag.errors import PagError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pag")
@click.option("-v", "--verbose", count=True, help="More diagnostics on stderr (-v: debug).")
@click.option(
    "-q", "--quiet", count=True, help="Fewer diagnostics on stderr (-q: no notes; -qq: errors)."
)
def cli(verbose: int, quiet: int) -> None:
    """Pixel-wise Attentional Gating: data, training, evaluation and paper figures.

    Results go to stdout; notes, warnings and debug lines to stderr."""
    logs.configure(verbose - quiet)


cli.add_command(data_group)
cli.add_command(evaluate)
cli.add_command(flops)
cli.add_command(train)
for command in (plan, summarize, trivial, classical, report, dvc_yaml, weights_group):
    cli.add_command(command)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except PagError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # disk full, permission denied, a file where a folder should be
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(1)
