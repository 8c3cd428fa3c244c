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


# ---------------------------------------------------------------------------------------- acting by hand
# Any kind, the same verbs: what a responder types when Airflow itself is down. Each prints the ServingState
# read back from the platform (settled or not); `aiir targets wait` waits until it settles.
OptionArg = Annotated[list[str] | None, typer.Option("--option", "-o", help="key=value, repeatable.")]
KindArg = Annotated[str, typer.Argument(help="Target kind (aiir targets list).")]
NameArg = Annotated[str, typer.Argument(help="Target name.")]
ReasonOpt = Annotated[str, typer.Option(help="Why (recorded on the platform).")]


def _act(kind: str, name: str, option: list[str] | None, fn) -> None:
    from aiir.targets import get_target

    target = get_target(kind, name, **parse_options(option))
    try:
        emit_json(fn(target).to_dict())
    finally:
        target.close()


@targets_app.command("isolate")
@guarded
def targets_isolate(kind: KindArg, name: NameArg, option: OptionArg = None,
                    fallback_version: Annotated[str | None, typer.Option(help="Version to route to.")] = None,
                    quarantine: Annotated[bool, typer.Option(help="Refuse all traffic instead.")] = False,
                    reason: ReasonOpt = ""):
    """All traffic to the fallback (last-known-good), or with --quarantine none at all."""
    _act(kind, name, option, lambda t: t.isolate(fallback_version=fallback_version, quarantine=quarantine,
                                                 reason=reason))


@targets_app.command("restore")
@guarded
def targets_restore(kind: KindArg, name: NameArg, option: OptionArg = None, reason: ReasonOpt = ""):
    """Lift isolation, quarantine and blocks."""
    _act(kind, name, option, lambda t: t.restore(reason=reason))


@targets_app.command("rollback")
@guarded
def targets_rollback(kind: KindArg, name: NameArg,
                     version: Annotated[str, typer.Argument(help="Version (kubernetes: also revision:N or a digest).")],
                     option: OptionArg = None, reason: ReasonOpt = ""):
    """Serve VERSION as the primary (`aiir targets wait` until the platform settled)."""
    _act(kind, name, option, lambda t: t.rollback(version, reason=reason))


@targets_app.command("canary")
@guarded
def targets_canary(kind: KindArg, name: NameArg, version: Annotated[str, typer.Argument()],
                   share: Annotated[float, typer.Argument(help="0..1 of the traffic.")], option: OptionArg = None,
                   reason: ReasonOpt = ""):
    """Send SHARE of the traffic to VERSION."""
    _act(kind, name, option, lambda t: t.canary(version, share, reason=reason))


@targets_app.command("block")
@guarded
def targets_block(kind: KindArg, name: NameArg,
                  clients: Annotated[str, typer.Argument(help="Comma-separated client ids.")],
                  option: OptionArg = None, reason: ReasonOpt = ""):
    """Refuse the named clients (where the platform can)."""
    ids = [c.strip() for c in clients.split(",") if c.strip()]
    _act(kind, name, option, lambda t: t.block_clients(ids, reason=reason))


@targets_app.command("wait")
@guarded
def targets_wait(kind: KindArg, name: NameArg, option: OptionArg = None,
                 timeout: Annotated[float, typer.Option(help="Seconds.")] = 900.0,
                 poll: Annotated[float, typer.Option(help="Seconds between reads.")] = 2.0):
    """Wait until the last change has settled (a rollout complete, an endpoint in service)."""
    from aiir.cli._util import progress

    _act(kind, name, option, lambda t: t.wait_settled(timeout=timeout, poll=poll,
                                                      progress=lambda s: progress(s.pending or "settling")))


@targets_app.command("snapshot")
@guarded
def targets_snapshot(kind: KindArg, name: NameArg,
                     dest: Annotated[str, typer.Argument(help="Folder to write the files into.")],
                     option: OptionArg = None):
    """Write the target's own state (configuration, routing, history, logs) into DEST; print the files."""
    from pathlib import Path

    from aiir.targets import get_target

    target = get_target(kind, name, **parse_options(option))
    try:
        emit_json([str(p) for p in target.snapshot(Path(dest))])
    finally:
        target.close()
