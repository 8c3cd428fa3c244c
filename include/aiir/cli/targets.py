"""`aiir targets list` and `aiir targets describe`: which deployment targets are installed, what they take,
and what a target serves right now (read back from the platform)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from aiir.cli._util import emit_json, guarded

targets_app = typer.Typer(help="Deployment targets: installed kinds, their options, a target's serving state.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(targets_app, name="targets")


def parse_options(pairs: list[str] | None) -> dict:
    """``key=value`` pairs; a value that parses as JSON (numbers, true/false, objects) is taken as such."""
    from aiir.errors import BadInput

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput("--option", f"expected key=value, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


@targets_app.command("list")
def targets_list():
    """Every known kind (built-in and from the aiir.targets entry-point group): available here or why not,
    capabilities, options, default Airflow connection."""
    from aiir.targets import list_targets

    emit_json(list_targets())


@targets_app.command("describe")
@guarded
def targets_describe(
    kind: Annotated[str, typer.Argument(help="Target kind (aiir targets list).")],
    name: Annotated[str, typer.Argument(help="Target name (the model's serving name).")],
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="key=value, repeatable.")] = None,
):
    """The serving state of one target: mode, routes, fallback, whether the last change has settled."""
    from aiir.targets import get_target

    target = get_target(kind, name, **parse_options(option))
    try:
        emit_json(target.describe().to_dict())
    finally:
        target.close()
