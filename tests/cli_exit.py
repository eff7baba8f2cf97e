"""The `distilkit` command run in the test process, as an exit code (0 when it returns normally)."""

from __future__ import annotations

from distilkit.cli import main


def cli_exit_code(argv: list[str]) -> int:
    """Exit code of `distilkit ARGV` run in this process (typer ends with SystemExit)."""
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
