"""`aiir incident …`, `aiir retrain …`, `aiir playbooks …`: every playbook step, for when
Airflow itself is down. The steps and their order come from the playbook definitions (aiir.playbooks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from aiir.cli._util import emit_json, guarded, progress

incident_app = typer.Typer(help="Run an incident playbook step by step (the same definition the DAG runs).",
                           no_args_is_help=True)
retrain_app = typer.Typer(help="Post-incident retraining from clean data, with a gated promotion.",
                          no_args_is_help=True)
playbooks_app = typer.Typer(help="The installed playbooks and their steps.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(incident_app, name="incident")
    app.add_typer(retrain_app, name="retrain")
    app.add_typer(playbooks_app, name="playbooks")


def _record(incident_id: str):
    from aiir.incident import load

    return load(incident_id)


def _ctx(record, *, approve: bool | None = None, reason: str = "") -> dict:
    """The context every step of one CLI run shares: one target (aiir's defaults for the record's kind)."""
    from aiir.targets import get_target

    ctx: dict = {"approve": approve, "reason": reason or None}
    ctx["target"] = get_target(record.target_kind, record.target_name)
    return ctx


def _read_conf(conf: Path):
    from aiir.errors import BadInput

    try:
        return json.loads(conf.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(str(conf), f"cannot read JSON conf ({exc})") from None


@incident_app.command("open")
@guarded
def open_(
    model: Annotated[str, typer.Option(help="Registered model under attack.")] = "fraud-detector",
    target_kind: str = "local",
    target_name: Annotated[str | None, typer.Option(help="Default: the model name.")] = None,
    severity: str = "high",
    containment: Annotated[str, typer.Option(help="fallback or quarantine")] = "fallback",
    playbook: Annotated[str, typer.Option(help="Playbook kind (see `aiir playbooks list`).")] = "data_poisoning",
    conf: Annotated[Path | None, typer.Option(help="A JSON conf file (the DAG's Params) instead.")] = None,
    dry_run: bool = False,
):
    """Open an incident (validate the conf, run the playbook's open step: pin the versions in play)."""
    from aiir.incident import validate_conf
    from aiir.playbooks import get_playbook
    from aiir.playbooks.runner import run_step

    if conf:
        body = _read_conf(conf)
    else:
        body = {"model_name": model, "target_kind": target_kind, "target_name": target_name or model,
                "severity": severity, "containment": containment, "dry_run": dry_run, "opened_by": "cli"}
    record = validate_conf(body, kind=playbook)
    pb = get_playbook(playbook)
    opener = next((s for s in pb.steps if s.role == "open"), None)
    pinned = run_step(pb, opener.name, record) if opener else {}
    if opener is None:
        from aiir.incident import save

        save(record)
    emit_json({"incident_id": record.incident_id, "playbook": pb.kind, **(pinned or {}),
               "workdir": str(record.workdir)})


@incident_app.command("step")
@guarded
def step(incident_id: Annotated[str, typer.Argument(help="Incident id (see `aiir incident open`).")],
         name: Annotated[str, typer.Argument(help="Step name (see `aiir playbooks show KIND`).")],
         approve: Annotated[bool | None, typer.Option("--approve/--reject", help="Answer an approval step.")] = None,
         reason: Annotated[str, typer.Option(help="Why (with --reject).")] = ""):
    """Run one step of the incident's playbook."""
    from aiir.playbooks.runner import run_step

    rec = _record(incident_id)
    pb = rec.playbook
    alias = {s.alias: s.name for s in pb.steps if s.alias}
    emit_json(run_step(pb, alias.get(name, name), rec, progress=progress, **_ctx(rec, approve=approve,
                                                                                  reason=reason)))


def _alias_command(alias: str, doc: str):
    @guarded
    def run(incident_id: Annotated[str, typer.Argument(help="Incident id (see `aiir incident open`).")]):
        from aiir.playbooks.runner import run_step

        rec = _record(incident_id)
        pb = rec.playbook
        names = {s.alias or s.name: s.name for s in pb.steps}
        progress(f"{alias} for {incident_id}")
        emit_json(run_step(pb, names.get(alias, alias), rec, **_ctx(rec)))

    run.__doc__ = doc
    return run


# Short names of the poisoning playbook's steps, kept from round 1 (`aiir incident step NAME` runs any step).
for _alias, _doc in (("contain", "Contain: isolate the endpoint (all traffic to last-known-good, or quarantine)."),
                     ("triage", "Confirm the signal: suspect vs last-known-good on labelled feedback."),
                     ("preserve", "Seal evidence into a signed, write-once bundle."),
                     ("forensics", "Localise the poison and compute the blast radius."),
                     ("eradicate", "Fix the quarantine list and the retrain conf."),
                     ("report", "Render the incident report (HTML, JSON, Markdown).")):
    incident_app.command(_alias)(_alias_command(_alias, _doc))


@incident_app.command("run")
@guarded
def run_all(incident_id: Annotated[str, typer.Argument(help="Incident id.")],
            retrain: Annotated[bool, typer.Option(help="Also run the child playbooks (retrain, gate, promote).")]
            = True,
            approve: Annotated[bool | None, typer.Option("--approve/--reject",
                                                         help="Answer the promotion approval up front.")] = None,
            reason: Annotated[str, typer.Option(help="Why (with --reject).")] = ""):
    """Run the incident's whole playbook in order without Airflow (the report runs even if a step fails)."""
    from aiir.playbooks.runner import run_all as run

    rec = _record(incident_id)
    pb = rec.playbook
    skip = tuple(s.name for s in pb.steps if s.role == "child") if not retrain else ()
    out = run(pb, rec, progress=progress, skip=skip, **_ctx(rec, approve=approve, reason=reason))
    report = next((out[s.name] for s in pb.steps if s.role == "report" and s.name in out), None)
    emit_json({"incident_id": incident_id, "playbook": pb.kind, "steps": list(out), "report": report})


@retrain_app.command("run")
@guarded
def retrain_run(conf_file: Annotated[Path, typer.Argument(help="JSON conf (eradicate's retrain_conf).")],
                promote: bool = True,
                approve: Annotated[bool | None, typer.Option("--approve/--reject",
                                                             help="Answer the promotion approval.")] = None,
                reason: Annotated[str, typer.Option(help="Why (with --reject).")] = ""):
    """Build the clean set, validate, train with the same recipe, gate, and (optionally) promote."""
    from aiir import recovery
    from aiir.playbooks import get_playbook
    from aiir.playbooks.runner import run_all as run
    from aiir.targets import get_target

    conf = recovery.validate_conf(_read_conf(conf_file))
    pb = get_playbook("retrain_from_clean_data")
    skip = () if promote else tuple(s.name for s in pb.steps if s.role == "approval" or s.name == "promote")
    target = None if conf["dry_run"] else get_target(conf["target_kind"], conf["target_name"])
    emit_json(run(pb, conf, progress=progress, skip=skip, target=target, approve=approve,
                  reason=reason or None))


@playbooks_app.command("list")
@guarded
def playbooks_list():
    """Every installed playbook (built in, or added by a package through the aiir.playbooks entry points)."""
    from aiir.playbooks import get_playbook, kinds

    emit_json([{k: v for k, v in get_playbook(k).describe().items() if k != "steps"} | {
        "steps": list(get_playbook(k).step_names)} for k in kinds()])


@playbooks_app.command("show")
@guarded
def playbooks_show(kind: Annotated[str, typer.Argument(help="Playbook kind.")]):
    """One playbook's definition: steps, NIST phases, order, outputs."""
    from aiir.playbooks import get_playbook

    emit_json(get_playbook(kind).describe())



@incident_app.command("list")
@guarded
def incident_list(state: Annotated[str | None, typer.Option(help="Only this state.")] = None,
                  model: Annotated[str | None, typer.Option(help="Only this model.")] = None):
    """Every incident with its lifecycle state (open, contained, eradicated, recovered, closed,
    false_positive), newest first."""
    from aiir import lifecycle
    from aiir.errors import BadInput

    if state and state not in lifecycle.STATES:
        raise BadInput("--state", f"expected one of {', '.join(lifecycle.STATES)}, got {state!r}")
    emit_json(lifecycle.list_incidents(state=state, model=model))


@incident_app.command("show")
@guarded
def incident_show(incident_id: Annotated[str, typer.Argument(help="Incident id.")]):
    """One incident: record, state and its history, timeline, and the outputs its steps wrote."""
    from aiir import incident, lifecycle

    rec = _record(incident_id)
    outputs = sorted(p.name for p in rec.workdir.iterdir()) if rec.workdir.is_dir() else []
    emit_json({"record": rec.to_dict(), "state": lifecycle.read_state(incident_id),
               "timeline": incident.timeline(rec), "outputs": outputs, "workdir": str(rec.workdir)})


@incident_app.command("close")
@guarded
def incident_close(incident_id: Annotated[str, typer.Argument(help="Incident id.")],
                   as_: Annotated[str, typer.Option("--as", help="resolved or false-positive")],
                   reason: Annotated[str, typer.Option(help="Why it is closed (recorded).")],
                   approve: Annotated[bool, typer.Option(help="Confirm restoring the target (false positive).")]
                   = False):
    """Close an incident. As a false positive, the target is restored (every containment lifted) — that
    needs --approve (or a yes on a terminal)."""
    import getpass

    from aiir import lifecycle

    rec = _record(incident_id)
    emit_json(lifecycle.close(incident_id, as_=as_, reason=reason, actor=f"cli:{getpass.getuser()}",
                              approve=approve or None, target=None if rec.dry_run else _ctx(rec)["target"]))
