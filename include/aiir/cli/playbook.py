"""`aiir incident …` and `aiir retrain …`: every playbook step, for when Airflow itself is down."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from aiir.cli._util import emit_json, guarded, progress

incident_app = typer.Typer(help="Run the data-poisoning playbook step by step (same code as the DAG).",
                           no_args_is_help=True)
retrain_app = typer.Typer(help="Post-incident retraining from clean data, with a gated promotion.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(incident_app, name="incident")
    app.add_typer(retrain_app, name="retrain")


def _record(incident_id: str):
    from aiir.incident import load

    return load(incident_id)


@incident_app.command("open")
@guarded
def open_(
    model: Annotated[str, typer.Option(help="Registered model under attack.")] = "fraud-detector",
    target_kind: str = "local",
    target_name: Annotated[str | None, typer.Option(help="Default: the model name.")] = None,
    severity: str = "high",
    containment: Annotated[str, typer.Option(help="fallback or quarantine")] = "fallback",
    conf: Annotated[Path | None, typer.Option(help="A JSON conf file (the DAG's Params) instead.")] = None,
    dry_run: bool = False,
):
    """Open an incident (validate the conf, pin suspect and last-known-good versions)."""
    from aiir import playbook
    from aiir.errors import BadInput
    from aiir.incident import validate_conf

    if conf:
        try:
            body = json.loads(conf.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BadInput(str(conf), f"cannot read JSON conf ({exc})") from None
    else:
        body = {"model_name": model, "target_kind": target_kind, "target_name": target_name or model,
                "severity": severity, "containment": containment, "dry_run": dry_run, "opened_by": "cli"}
    record = validate_conf(body)
    pinned = playbook.open_incident(record)
    emit_json({"incident_id": record.incident_id, **pinned, "workdir": str(record.workdir)})


def _step(name: str):
    @guarded
    def run(incident_id: Annotated[str, typer.Argument(help="Incident id (see `aiir incident open`).")]):
        from aiir import playbook

        progress(f"{name} for {incident_id}")
        emit_json(getattr(playbook, name)(_record(incident_id)))

    run.__doc__ = {
        "contain": "Isolate the endpoint: all traffic to last-known-good (or quarantine).",
        "triage": "Confirm the signal: suspect vs last-known-good on labelled feedback.",
        "preserve": "Seal evidence into a signed, write-once bundle.",
        "forensics": "Localise the poison and compute the blast radius.",
        "eradicate": "Fix the quarantine list and the retrain conf.",
        "report": "Render the incident report (HTML, JSON, Markdown).",
    }[name]
    return run


for _name in ("contain", "triage", "preserve", "forensics", "eradicate", "report"):
    incident_app.command(_name)(_step(_name))


@incident_app.command("run")
@guarded
def run_all(incident_id: Annotated[str, typer.Argument(help="Incident id.")],
            retrain: Annotated[bool, typer.Option(help="Also retrain, gate and promote.")] = True):
    """Run the whole playbook in order without Airflow."""
    from aiir import playbook, recovery

    rec = _record(incident_id)
    out = {}
    for step in ("contain", "preserve", "triage", "forensics", "eradicate"):
        progress(step)
        out[step] = getattr(playbook, step)(rec)
    if retrain:
        conf = recovery.validate_conf(out["eradicate"]["retrain_conf"])
        for step in ("build_clean_set", "validate_clean_set", "train_candidate", "gate"):
            progress(step)
            out[step] = getattr(recovery, step)(conf)
        from aiir.targets import get_target

        progress("promote")
        target = None if conf["dry_run"] else get_target(conf["target_kind"], conf["target_name"])
        out["promote"] = recovery.promote(conf, target=target)
    progress("report")
    out["report"] = playbook.report(rec)
    emit_json({"incident_id": incident_id, "report": out["report"]})


@retrain_app.command("run")
@guarded
def retrain_run(conf_file: Annotated[Path, typer.Argument(help="JSON conf (eradicate's retrain_conf).")],
                promote: bool = True):
    """Build the clean set, validate, train with the same recipe, gate, and (optionally) promote."""
    from aiir import recovery
    from aiir.errors import BadInput

    try:
        conf = recovery.validate_conf(json.loads(conf_file.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(str(conf_file), f"cannot read JSON conf ({exc})") from None
    out = {}
    for step in ("build_clean_set", "validate_clean_set", "train_candidate", "gate"):
        progress(step)
        out[step] = getattr(recovery, step)(conf)
    if promote:
        from aiir.targets import get_target

        out["promote"] = recovery.promote(conf, target=None if conf["dry_run"] else
                                          get_target(conf["target_kind"], conf["target_name"]))
    emit_json(out)
