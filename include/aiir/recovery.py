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
    "target_conn_id": str, "canary_share": float, "canary_window_s": float, "canary_min_decisions": int,
}
DEFAULTS = {"target_kind": "local", "dry_run": False, "require_approval": False, "target_name": "",
            "target_conn_id": "", "canary_share": 0.0, "canary_window_s": 300.0, "canary_min_decisions": 200}


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
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, typ):
            raise BadInput(f"conf.{name}", f"expected {typ.__name__}, got {type(v).__name__}")
        out[name] = v
    if not 0.0 <= out["canary_share"] < 1.0:
        raise BadInput("conf.canary_share", f"expected a share from 0 (no canary) up to below 1, got {out['canary_share']}")
    if out["canary_window_s"] <= 0 or out["canary_min_decisions"] < 1:
        raise BadInput("conf.canary_window_s", "the canary window and minimum decisions must be positive")
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
    if conf["dry_run"]:  # no MLflow run, no registered version
        return retrain.train_candidate_dry_run(conf["model_name"], conf["replaced_version"],
                                               w / "clean_train.parquet", incident_id=conf["incident_id"], out_dir=w)
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
                       poisoned_rows_path=poisoned if poisoned.exists() else None, out_dir=w,
                       dry_run_candidate=cand if cand.get("dry_run") else None)
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


def approval_needed(conf: dict[str, Any]) -> bool:
    """The approval step's condition: the conf asks for a person before promotion."""
    return bool(conf.get("require_approval"))


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
    return record_approval(conf, approved=approve, by=actor or getpass.getuser(), reason=reason or "",
                           via="airflow-hitl" if (actor or "").startswith("airflow:") else "cli")


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


CANARY_FILE = "canary.json"
CANARY_MAX_KS = 0.25  # the candidate's live score distribution may differ from last-known-good's by at most this
CANARY_MAX_RATE_DIFF = 0.10  # ... and its positive-decision rate by at most this (absolute)


def canary_needed(conf: dict[str, Any]) -> bool:
    return conf["canary_share"] > 0 and not conf["dry_run"]


def canary(conf: dict[str, Any], *, target=None, sleep=None) -> dict[str, Any]:
    """Serve the gated candidate on live traffic at ``canary_share`` for ``canary_window_s`` (or until
    ``canary_min_decisions`` decisions of each version), compare its live score distribution (two-sample KS)
    and positive-decision rate with last-known-good's, then keep it for promotion or roll it back — with the
    reason in ``canary.json`` (and the report). A rolled-back canary stops the promotion (BadInput)."""
    import time as _time

    from aiir.jsonio import write_json

    w = workdir(conf)
    existing = _read(w / CANARY_FILE)
    if existing is not None:
        if existing.get("decision") == "rollback":
            raise BadInput("canary", existing["reason"])
        return existing
    if not canary_needed(conf):
        return {"needed": False, "reason": "no canary (canary_share is 0)" if not conf["dry_run"] else "dry run"}
    if target is None or "canary" not in getattr(target, "capabilities", ()):
        raise BadInput("canary", f"target {getattr(target, 'ref', None)} cannot run a canary")
    cand = _read(w / "candidate.json") or {}
    version = str(cand.get("version"))
    base = conf["baseline_version"]
    started = now_iso()
    target.canary(version, conf["canary_share"], reason=f"incident {conf['incident_id']}: canary of v{version}")
    deadline = _time.monotonic() + conf["canary_window_s"]
    pause = sleep or _time.sleep
    rows: list[dict[str, Any]] = []
    while True:
        rows = target.decisions(since=started)
        n_c = sum(1 for r in rows if str(r.get("model_version")) == version)
        n_b = sum(1 for r in rows if str(r.get("model_version")) != version)
        if (n_c >= conf["canary_min_decisions"] and n_b >= conf["canary_min_decisions"]) \
                or _time.monotonic() >= deadline:
            break
        pause(min(2.0, max(0.1, deadline - _time.monotonic())))
    result = _canary_verdict(rows, version, base, conf)
    result.update({"started_at": started, "ended_at": now_iso(), "share": conf["canary_share"],
                   "candidate_version": version})
    if result["decision"] == "rollback":
        target.canary(version, 0.0, reason=f"incident {conf['incident_id']}: canary rolled back: {result['reason']}")
        result["target_state"] = target.describe().to_dict()
    write_json(w / CANARY_FILE, result)
    if result["decision"] == "rollback":
        raise BadInput("canary", result["reason"])
    return result


def _canary_verdict(rows: list[dict[str, Any]], version: str, base: str, conf: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    from scipy.stats import ks_2samp

    def scores(pred):
        return np.array([float(r["score"]) for r in rows if pred(r) and r.get("score") is not None], float)

    def pos_rate(pred):
        sel = [r for r in rows if pred(r)]
        vals = [1.0 if str(r.get("prediction")).strip().lower() in ("1", "1.0", "true") else 0.0 for r in sel]
        return float(np.mean(vals)) if vals else float("nan")

    is_c = lambda r: str(r.get("model_version")) == version  # noqa: E731
    is_b = lambda r: str(r.get("model_version")) != version  # noqa: E731
    sc, sb = scores(is_c), scores(is_b)
    res: dict[str, Any] = {"candidate_decisions": int(len(sc)), "baseline_decisions": int(len(sb)),
                           "min_decisions": conf["canary_min_decisions"], "max_ks": CANARY_MAX_KS,
                           "max_positive_rate_diff": CANARY_MAX_RATE_DIFF}
    if len(sc) < conf["canary_min_decisions"] or len(sb) < conf["canary_min_decisions"]:
        res.update(decision="rollback", reason=f"too little live traffic in the window ({len(sc)} candidate, "
                                               f"{len(sb)} baseline decisions; need {conf['canary_min_decisions']} "
                                               "each)")
        return res
    ks = ks_2samp(sc, sb)
    rc, rb = pos_rate(is_c), pos_rate(is_b)
    res.update(ks_statistic=float(ks.statistic), ks_p_value=float(ks.pvalue), candidate_positive_rate=rc,
               baseline_positive_rate=rb, candidate_mean_score=float(sc.mean()), baseline_mean_score=float(sb.mean()))
    if ks.statistic > CANARY_MAX_KS:
        res.update(decision="rollback", reason=f"live score distribution of v{version} differs from last-known-good "
                                               f"v{base} (KS {ks.statistic:.3f} > {CANARY_MAX_KS})")
    elif abs(rc - rb) > CANARY_MAX_RATE_DIFF:
        res.update(decision="rollback", reason=f"positive-decision rate {rc:.3f} vs {rb:.3f} differs by more than "
                                               f"{CANARY_MAX_RATE_DIFF}")
    else:
        res.update(decision="promote", reason=f"v{version} behaved like last-known-good on live traffic "
                                               f"(KS {ks.statistic:.3f}, positive rate {rc:.3f} vs {rb:.3f})")
    return res


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
    can = _read(w / CANARY_FILE)
    if can is not None:
        result["canary"] = can
    if conf["dry_run"]:
        result["promoted_at"] = None
        result["aliases"] = []
        result["note"] = ("dry run: nothing promoted — no alias moved, nothing registered, the target "
                          "untouched; the gate result above is what a real run would have acted on")
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
    if not conf["dry_run"]:
        _set_state(conf, "recovered", f"v{version} promoted and serving")
    return result


def _set_state(conf: dict[str, Any], state: str, reason: str) -> None:
    from aiir import lifecycle
    from aiir.errors import BadInput as _Bad
    from aiir.incident import load

    try:
        lifecycle.set_state(load(conf["incident_id"]), state, actor="retrain_from_clean_data", reason=reason)
    except _Bad:  # a retrain started by hand for an id with no incident workspace
        pass
