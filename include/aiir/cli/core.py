"""`aiir bootstrap`, `aiir paths`, `aiir check-batch`, `aiir registry …` and the demo helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from aiir.cli._util import emit_json, guarded, progress

demo_app = typer.Typer(help="Demo story helpers: arriving batches and the compromised nightly retrain.",
                       no_args_is_help=True)
registry_app = typer.Typer(help="Model registry: alias history (hash-chained) and its verification.",
                           no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("bootstrap")(bootstrap)
    app.command("paths")(paths)
    app.command("check-batch")(check_batch)
    app.add_typer(demo_app, name="demo")
    app.add_typer(registry_app, name="registry")


@guarded
def bootstrap(force: Annotated[bool, typer.Option(help="Rebuild data and models even if present.")] = False):
    """Generate demo data, train and register baseline models (alias champion + last-known-good)."""
    from aiir.bootstrap import bootstrap as run

    emit_json(run(force=force, progress=progress))


def paths():
    """Every state location and the environment variable that moves it."""
    from aiir import config

    p = config.paths()
    emit_json({"AIIR_HOME": str(p.home), "AIRFLOW_HOME": str(p.airflow_home),
               "MLFLOW_TRACKING_URI": p.mlflow_tracking_uri, "AIIR_MLFLOW_ARTIFACTS": str(p.mlflow_artifacts),
               "AIIR_EVIDENCE_DIR": str(p.evidence), "AIIR_DATA_DIR": str(p.data),
               "AIIR_GATEWAY_DIR": str(p.gateway), "AIIR_GATEWAY_URL": config.gateway_url(),
               "incidents": str(p.incidents), "checks": str(p.checks), "registry_log": str(p.registry_log)})


@guarded
def check_batch(
    model: Annotated[str, typer.Option(help="Registered model whose profile gives reference and label.")] = "fraud-detector",
    current: Annotated[Path | None, typer.Option(help="Batch file; default: the newest in the batch folder.")] = None,
    target_kind: str = "local",
    target_name: Annotated[str | None, typer.Option(help="Serving target (default: the model name).")] = None,
):
    """The scheduled job by hand: check the newest batch and open an incident record when it fails.

    Exit 0 clean, 3 incident opened, 2 bad input."""
    from aiir import integrity_job
    from aiir.errors import EXIT_INCIDENT

    progress(f"checking {current or 'the newest batch'} for {model}")
    res = integrity_job.run(model_name=model, current=str(current) if current else None,
                            target_kind=target_kind, target_name=target_name or model, run_id="cli")
    emit_json(res)
    if res["status"] == "incident":
        raise typer.Exit(EXIT_INCIDENT)


@demo_app.command("arrive")
@guarded
def demo_arrive(batch: Annotated[int, typer.Argument(help="Batch number (4 = clean, 5 = poisoned).")],
                airflow_url: Annotated[str | None, typer.Option(help="Post an Asset event to this Airflow.")] = None):
    """A training-data batch lands: touch it (newest) and, with --airflow-url, emit the Asset event."""
    import os

    from aiir import config, demo

    path = demo.DemoFiles(config.paths().data).fraud_batch(batch)
    if not path.exists():
        from aiir.errors import BadInput

        raise BadInput(str(path), "batch file not found (run `aiir bootstrap` first)")
    os.utime(path)
    out = {"batch": str(path)}
    if airflow_url:
        from aiir.runtime import http_json

        base = airflow_url.rstrip("/")
        token = http_json("GET", f"{base}/auth/token")["access_token"]
        assets = http_json("GET", f"{base}/api/v2/assets?name_pattern=fraud_training_batches", token=token)
        asset_id = assets["assets"][0]["id"]
        out["asset_event"] = http_json("POST", f"{base}/api/v2/assets/events",
                                       {"asset_id": asset_id, "extra": {"path": str(path)}}, token=token)
    emit_json(out)


@demo_app.command("nightly-retrain")
@guarded
def demo_nightly_retrain(batches: Annotated[str, typer.Option(help="Comma-separated batch numbers.")] = "4,5"):
    """The compromise: retrain on every arrived batch (poisoned one included) and auto-promote."""
    from aiir.bootstrap import nightly_retrain

    v = nightly_retrain([int(b) for b in batches.split(",")], progress=progress)
    emit_json({"model": v.name, "version": v.version, "aliases": ["champion"]})


@registry_app.command("log")
def registry_log(model: Annotated[str | None, typer.Option(help="Only this model.")] = None):
    """The alias history (who moved which alias to which version, when, why)."""
    from aiir import registry

    emit_json([e for e in registry.read_alias_log() if model is None or e["model"] == model])


@registry_app.command("verify")
@guarded
def registry_verify():
    """Verify the alias log's hash chain. Exit 0 intact, 3 tampered."""
    from aiir import registry

    entries = registry.verify_alias_log()
    typer.echo(json.dumps({"ok": True, "entries": len(entries)}))


@demo_app.command("run")
@guarded
def demo_run(keep_running: Annotated[bool, typer.Option(help="Leave Airflow and the gateway up afterwards.")] = False,
             gateway_port: Annotated[int | None, typer.Option(help="Default 8080, or a free port.")] = None,
             airflow_port: Annotated[int | None, typer.Option(help="Default 8280, or a free port.")] = None,
             target: Annotated[str, typer.Option(help="Where the model is served: local (the embedded gateway, "
                                                      "the whole story) or another kind's story "
                                                      "(kubernetes: containment, evidence, rollback on a real "
                                                      "API server; sagemaker: the whole story through Airflow on "
                                                      "a local AWS API).")] = "local"):
    """The whole story: bootstrap, serve, traffic, poisoned retrain, detection, playbook, recovery, report."""
    if target != "local":
        import importlib

        from aiir.errors import BadInput

        try:
            mod = importlib.import_module(f"aiir.story_{target}")
        except ModuleNotFoundError as exc:
            if exc.name != f"aiir.story_{target}":
                raise
            raise BadInput("--target", f"no demo story for target kind '{target}'") from None
        mod.run(keep_running=keep_running)
        return
    from aiir import story

    story.run(keep_running=keep_running, gateway_port=gateway_port, airflow_port=airflow_port)
