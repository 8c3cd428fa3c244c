"""Airflow Params (the UI trigger form) built from aiir's own JSON-schema of the playbook conf."""

from __future__ import annotations

from airflow.sdk import Param


def target_kinds() -> list[str]:
    """The target kinds the trigger form offers: those installed whose requirements import here."""
    from aiir.targets.registry import available_kinds

    return available_kinds() or ["local"]


def incident_params() -> dict[str, Param]:
    from aiir.incident import param_specs

    params = {}
    for name, spec in param_specs().items():
        schema = {k: v for k, v in spec.items() if k not in ("default", "description")}
        params[name] = Param(spec["default"], description=spec.get("description"), **schema)
    return params


def retrain_params() -> dict[str, Param]:
    return {
        "model_name": Param("fraud-detector", type="string", minLength=1, title="Registered model"),
        "incident_id": Param("", type="string", title="Incident id"),
        "replaced_version": Param("", type="string", title="Version being replaced (the compromised one)"),
        "baseline_version": Param("", type="string", title="Last-known-good version (the gate's baseline)"),
        "quarantine_file": Param("", type="string", title="quarantine.json from forensics"),
        "target_kind": Param("local", type="string", enum=target_kinds()),
        "target_conn_id": Param("", type="string", title="Target connection (empty: the kind's default)"),
        "target_name": Param("fraud-detector", type="string"),
        "dry_run": Param(False, type="boolean"),
        "require_approval": Param(False, type="boolean", title="Promotion waits for a person"),
        "canary_share": Param(0.0, type="number", minimum=0, maximum=0.99,
                              title="Live canary share before promotion (0: none)"),
        "canary_window_s": Param(300.0, type="number", exclusiveMinimum=0, title="Canary window (seconds)"),
        "canary_min_decisions": Param(200, type="integer", minimum=1, title="Decisions per version to judge"),
    }
