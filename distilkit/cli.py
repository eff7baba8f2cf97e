"""The `distilkit` command line: one typer app; each command lives in `distilkit.commands.<name>`.

Command modules import torch and friends inside the command body so `distilkit --help` stays fast.
User errors (`DistilkitError`) and file-system errors (`OSError`: disk full, permission denied, read-only
folder, ...) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from distilkit import __version__
from distilkit.errors import DistilkitError, os_error_message

app = typer.Typer(
    name="distilkit",
    help="Shrink vision transformers by distillation and pruning (MixFormerV2 route, PMDP, exact FLOPs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"distilkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """distilkit: distillation and pruning for vision transformers."""


from distilkit.commands.prune import prune as _prune  # noqa: E402

app.command("prune")(_prune)

from distilkit.commands.recipes import recipes as _recipes  # noqa: E402

app.command("recipes")(_recipes)

from distilkit.commands.flops import flops as _flops  # noqa: E402

app.command("flops")(_flops)

from distilkit.commands.eval import eval_command as _eval  # noqa: E402

app.command("eval")(_eval)

from distilkit.commands.export import export as _export  # noqa: E402

app.command("export")(_export)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point: run the app, turning user and file-system errors into one line and exit code 2."""
    try:
        app(args=argv, prog_name="distilkit")
    except DistilkitError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except OSError as err:
        typer.secho(f"error: {os_error_message(err)}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True, fg=typer.colors.RED)
        sys.exit(130)
