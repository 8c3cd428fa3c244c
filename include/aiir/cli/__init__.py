"""The ``aiir`` command: every playbook step, usable when Airflow itself is down.

Each area registers its own sub-commands from ``aiir/cli/<area>.py``; this module only assembles them.
Errors raised as :class:`aiir.errors.AiirError` become one line on stderr and the error's exit code.
"""

from __future__ import annotations

import importlib
import sys

import typer

from aiir.errors import AiirError

app = typer.Typer(
    name="aiir",
    help="AI incident response: integrity checks, containment, evidence, forensics, recovery.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that add commands to `app` when imported (each defines `register(app)`).
AREAS = ("aiir.cli.core", "aiir.cli.check", "aiir.cli.gateway", "aiir.cli.evidence", "aiir.cli.playbook",
         "aiir.cli.targets", "aiir.cli.evasion", "aiir.cli.audit")

for _mod in AREAS:
    try:
        importlib.import_module(_mod).register(app)
    except ModuleNotFoundError as exc:  # an area not built yet
        if exc.name != _mod:
            raise


def main() -> None:
    try:
        app()
    except AiirError as exc:
        typer.echo(f"aiir: error: {exc}", err=True)
        sys.exit(exc.exit_code)
