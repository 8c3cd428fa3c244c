"""Steps of ``retrain_from_clean_data``: clean set → GX validation → same-recipe training → gate → promote.

Thin orchestration over :mod:`aiir.retrain` with the conf the poisoning playbook passes on. Every step
writes into ``$AIIR_HOME/incidents/<incident_id>/retrain/`` and is idempotent. ``promote`` is the only
step that changes anything outside that folder: it moves the registry aliases (hash-chained log) and
the serving target, and writes ``recovery.json`` into the incident workspace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiir import config
from aiir.errors import BadInput
from aiir.incident import ID_RE, now_iso

FIELDS = {
    "model_name": str, "incident_id": str, "replaced_version": str, "baseline_version": str,
    "quarantine_file": str, "target_kind": str, "target_name": str, "dry_run": bool, "require_approval": bool,
    "target_conn_id": str,
}
DEFAULTS = {"target_kind": "local", "dry_run": False, "require_approval": False, "target_name": "",
            "target_conn_id": ""}


def validate_conf(conf: Any) -> dict[str, Any]:
    if not isinstance(conf, dict):
        raise BadInput("conf", f"expected a JSON object, got {type(conf).__name__}")
    out: dict[str, Any] = {}
    for name, typ in FIELDS.items():
        v = conf.get(name, DEFAULTS.get(name))
        if v is None or (typ is str and not str(v).strip() and name not in ("target_name", "target_conn_id")):
            raise BadInput(f"conf.{name}", "is required")
        if typ is str and isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, typ):
            raise BadInput(f"conf.{name}", f"expected {typ.__name__}, got {type(v).__name__}")
        out[name] = v
    if not ID_RE.match(out["incident_id"]):
        raise BadInput("conf.incident_id", "expected letters, digits, '.', '_' or '-'")
    if not Path(out["quarantine_file"]).is_file():
        raise BadInput("conf.quarantine_file", f"file {out['quarantine_file']} does not exist")
    out["target_name"] = out["target_name"] or out["model_name"]
    return out


def workdir(conf: dict[str, Any]) -> Path:
    d = config.paths().incidents / conf["incident_id"] / "retrain"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _profile(conf: dict[str, Any]) -> dict[str, Any]:
    from aiir.playbook import profile

    return profile(conf["model_name"])


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def prepare(conf: dict[str, Any]) -> dict[str, Any]:
    return {"workdir": str(workdir(conf)), **conf}


def build_clean_set(conf: dict[str, Any]) -> dict[str, Any]:
    from aiir import retrain

    quarantine = json.loads(Path(conf["quarantine_file"]).read_text())
    return retrain.build_clean_set(conf["model_name"], conf["replaced_version"], quarantine, workdir(conf))


def validate_clean_set(conf: dict[str, Any]) -> dict[str, Any]:
    from aiir import retrain

    w = workdir(conf)
    res = retrain.validate_clean_set(w / "clean_train.parquet", _profile(conf)["reference"], w)
    if not res.get("success", True):
        raise BadInput("clean training set", f"failed GX validation: see {w}")
    return res


def train_candidate(conf: dict[str, Any]) -> dict[str, Any]:
    from aiir import retrain

    w = workdir(conf)
    mv = retrain.train_candidate(conf["model_name"], conf["replaced_version"], w / "clean_train.parquet",
                                 incident_id=conf["incident_id"], out_dir=w)
    return mv.to_dict() if hasattr(mv, "to_dict") else dict(mv)


def gate(conf: dict[str, Any]) -> dict[str, Any]:
    from aiir import retrain

    w = workdir(conf)
    cand = _read(w / "candidate.json") or {}
    version = str(cand.get("version") or cand.get("candidate_version"))
    poisoned = w / "quarantined_rows.parquet"
    res = retrain.gate(conf["model_name"], version, conf["baseline_version"], _profile(conf)["holdout"],
                       poisoned_rows_path=poisoned if poisoned.exists() else None, out_dir=w)
    if not res["passed"]:
        failed = [c["name"] for c in res["checks"] if not c["passed"]]
        raise BadInput("gate", f"candidate v{version} failed the promotion gate ({', '.join(failed)}); "
                               f"last-known-good keeps serving. Details: {w / 'gate.json'}")
    return res


APPROVAL_FILE = "approval.json"


def record_approval(conf: dict[str, Any], *, approved: bool, by: str, reason: str = "",
                    via: str = "cli", at: str | None = None) -> dict[str, Any]:
    """Record a person's decision on the promotion once (a later, different answer does not overwrite it)."""
    from aiir.jsonio import write_json

    path = workdir(conf) / APPROVAL_FILE
    existing = _read(path)
    if existing is not None:
        return existing
    res = {"required": True, "approved": bool(approved), "by": by, "reason": reason, "via": via,
           "at": at or now_iso(), "incident_id": conf["incident_id"]}
    write_json(path, res)
    return res


def approval_request(conf: dict[str, Any], *, approve: bool | None = None, actor: str | None = None,
                     reason: str = "") -> dict[str, Any]:
    """The promotion's approval. Not required: recorded as such. Required: the answer given (``approve``),
    else asked on a terminal, else refused with how to give it — the CLI never promotes unasked."""
    import getpass
    import sys

    existing = _read(workdir(conf) / APPROVAL_FILE)
    if existing is not None:
        return existing
    if not conf.get("require_approval"):
        return {"required": False, "approved": True, "by": "policy (require_approval is off)", "at": now_iso()}
    if approve is None and sys.stdin is not None and sys.stdin.isatty():
        answer = input(f"Incident {conf['incident_id']}: promote the retrained {conf['model_name']} candidate? "
                       "[y/N] ").strip().lower()
        approve = answer in ("y", "yes")
        if not approve and not reason:
            reason = input("Reason for rejecting: ").strip()
    if approve is None:
        raise BadInput("require_approval", f"promoting the retrained model of {conf['incident_id']} needs a "
                                           "person's approval: run again with --approve, or --reject "
                                           "--reason '...' (or answer in the Airflow UI)")
    return record_approval(conf, approved=approve, by=actor or getpass.getuser(), reason=reason)


def approval_from_hitl(response: Any) -> tuple[bool, str, str] | None:
    """``(approved, by, reason)`` from an Airflow HITL approval task's XCom, or None when it has none."""
    if not isinstance(response, dict):
        return None
    chosen = response.get("chosen_options") or response.get("chosen_option") or []
    if isinstance(chosen, str):
        chosen = [chosen]
    if not chosen:
        return None
    user = response.get("responded_by_user") or response.get("responded_by") or {}
    by = (user.get("name") or user.get("id") or "unknown") if isinstance(user, dict) else str(user)
    params = response.get("params_input") or {}
    reason = str(params.get("reason") or params.get("comment") or "") if isinstance(params, dict) else ""
    return (str(chosen[0]).lower() in ("approve", "approved", "yes")), f"airflow:{by}", reason


def promote(conf: dict[str, Any], *, target=None, approval: Any = None) -> dict[str, Any]:
    """Move aliases to the gated candidate, serve it on the target, lift containment; write recovery.json.
    ``approval``: the Airflow HITL answer, recorded before it is acted on."""
    from aiir import retrain

    if conf.get("require_approval") and approval is not None:
        answer = approval_from_hitl(approval)
        if answer is not None:
            record_approval(conf, approved=answer[0], by=answer[1], reason=answer[2], via="airflow-hitl")

    w = workdir(conf)
    inc_dir = config.paths().incidents / conf["incident_id"]
    existing = _read(inc_dir / "recovery.json")
    if existing is not None:
        return existing
    gate_res = _read(w / "gate.json")
    if not gate_res or not gate_res.get("passed"):
        raise BadInput("gate", "no passed gate on record; refusing to promote")
    if conf.get("require_approval"):
        appr = _read(w / APPROVAL_FILE)
        if appr is None:
            raise BadInput("approval", "promotion requires a person's approval and none is on record")
        if not appr.get("approved"):
            raise BadInput("approval", f"promotion was rejected by {appr.get('by')} at {appr.get('at')}"
                                       + (f": {appr['reason']}" if appr.get("reason") else ""))
    cand = _read(w / "candidate.json") or {}
    version = str(cand.get("version") or cand.get("candidate_version"))
    result: dict[str, Any] = {"model": conf["model_name"], "new_version": version,
                              "replaced_version": conf["replaced_version"], "dry_run": conf["dry_run"],
                              "gate": gate_res}
    if conf["dry_run"]:
        result["promoted_at"] = now_iso()
        result["aliases"] = []
    else:
        result["aliases"] = retrain.promote(conf["model_name"], version, incident_id=conf["incident_id"],
                                            reason=f"incident {conf['incident_id']}: clean retrain passed gate",
                                            actor="retrain_from_clean_data")
        if target is not None:
            target.rollback(version, reason=f"incident {conf['incident_id']}: promote clean v{version}")
            state = target.restore(reason=f"incident {conf['incident_id']}: recovered on v{version}")
            result["target_state"] = state.to_dict()
        result["promoted_at"] = now_iso()
    from aiir.jsonio import write_json

    write_json(inc_dir / "recovery.json", result)
    return result
