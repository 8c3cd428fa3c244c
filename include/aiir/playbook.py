"""Incident playbook steps, one function each. The playbook *definitions* (which steps, in which order,
under which NIST phase) live in :mod:`aiir.playbooks`; the Airflow operators and the CLI both call these
functions through those definitions.

Every step reads the incident record, writes its output into the incident workspace once
(:func:`once`, atomic through :mod:`aiir.jsonio`) and returns a JSON-serialisable dict: re-running a task
(or the whole DAG) changes nothing. Every step that talks to the serving target takes the one ``target``
built for the run (the Airflow hook's connection, or the CLI's defaults).

Import discipline: :func:`contain` imports only :mod:`aiir.targets` (and httpx), never mlflow, sklearn,
pandas, GX or Evidently — containment must not wait seconds for imports.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiir import config
from aiir.errors import BadInput
from aiir.incident import IncidentRecord, add_event, now_iso

CHAMPION = "champion"
LAST_KNOWN_GOOD = "last-known-good"


def _read(path: Path) -> dict[str, Any] | None:
    from aiir.jsonio import read_json

    return read_json(path)


def _write(path: Path, obj: Any) -> Any:
    """Write ``obj`` as JSON; returns what was written (NaN/inf as None, numpy as Python), which is what a
    retry reads back."""
    from aiir.jsonio import jsonable, write_json

    obj = jsonable(obj)
    write_json(path, obj)
    return obj


def once(path: Path, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A step's output: the file's content when it exists, else ``build()`` written atomically. Either way
    the JSON form is returned, so the first try and a retry return the same value (a first try returning a
    raw NaN — CBPE's precision of a model that predicts no positive — failed its XCom push, which Airflow's
    API refuses as "Out of range float values are not JSON compliant", while the retry read null)."""
    existing = _read(path)
    if existing is not None:
        return existing
    return _write(path, build())


_once = once


def model_profiles() -> dict[str, Any]:
    path = config.paths().home / "registry" / "models.json"
    return json.loads(path.read_text()) if path.exists() else {}


def profile(model: str) -> dict[str, Any]:
    prof = model_profiles().get(model)
    if prof is None:
        raise BadInput("model_name", f"no profile for model '{model}' in {config.paths().home}/registry/models.json "
                                     "(run `aiir bootstrap`, or add its label, holdout and feedback files)")
    return prof


def target_for(record: IncidentRecord, target=None, **options):
    """The run's DeploymentTarget: the one handed in (built by the Airflow hook from the connection), else
    built from the record's kind and name with aiir's defaults (the CLI)."""
    if target is not None:
        return target
    from aiir.targets import get_target

    return get_target(record.target_kind, record.target_name, **options)


_target = target_for


# --- 0. open --------------------------------------------------------------------------------------
def open_incident(record: IncidentRecord) -> dict[str, Any]:
    """Pin the versions in play (aliases move later; the incident must not), then save the record. Nothing
    is written when the model is unknown, so a corrected conf opens cleanly."""
    from aiir import incident, registry

    existing = _read(record.workdir / "versions.json")
    if existing is not None:
        incident.save(record)
        return existing
    suspect = registry.resolve_alias(record.model_name, CHAMPION)
    good = registry.resolve_alias(record.model_name, LAST_KNOWN_GOOD)
    if suspect is None or good is None:
        raise BadInput("model_name", f"model '{record.model_name}' needs aliases '{CHAMPION}' and "
                                     f"'{LAST_KNOWN_GOOD}' in the registry")
    incident.save(record)
    return _once(record.workdir / "versions.json",
                 lambda: {"incident_id": record.incident_id, "model": record.model_name, "suspect_version": suspect,
                          "good_version": good, "pinned_at": now_iso()})


def versions(record: IncidentRecord) -> dict[str, Any]:
    """The versions pinned when the incident opened. A later step never re-opens (and so re-pins) it."""
    v = _read(record.workdir / "versions.json")
    if v is None:
        raise BadInput("incident", f"incident {record.incident_id} was not opened (no versions.json in "
                                   f"{record.workdir}); run open_incident first")
    return v


# --- 1. contain (fast, light) -----------------------------------------------------------------------
def contain(record: IncidentRecord, *, target=None, target_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Isolate the endpoint: all traffic to the target's last-known-good fallback, or quarantine.

    When last-known-good is the very version serving (after a recovery both aliases point at it) or there is
    none, routing to it contains nothing, and refusing all traffic takes the whole service down. That is
    never done without a person: containment changes nothing, pages, and records ``decision_needed`` —
    the playbook's ``confirm_quarantine`` step asks (Airflow HITL, or the CLI). A person who chose
    ``containment=quarantine`` at trigger gets the quarantine at once."""
    from aiir import lifecycle

    out = record.workdir / "contain.json"
    existing = _read(out)
    if existing is not None:
        return existing
    target = target_for(record, target, **(target_options or {}))
    t0 = time.perf_counter()
    before = target.describe()
    note = ""
    decision_needed = None
    if record.dry_run:
        result = {"dry_run": True, "before": before.to_dict(), "after": before.to_dict(),
                  "note": "dry run: nothing was changed on the target"}
    else:
        quarantine = record.containment == "quarantine"
        already = (before.mode == "quarantined" if quarantine else
                   before.mode == "isolated" and before.serving_versions == [before.fallback_version])
        if already:  # an earlier incident on this model contained it the same way: nothing to change
            note = f"already {before.mode} ({target.ref}); left as it is"
            after = before
        elif not quarantine and (before.fallback_version is None or before.fallback_version in before.serving_versions):
            decision_needed = "quarantine"
            note = ((f"last-known-good v{before.fallback_version} is the version serving" if before.fallback_version
                     else "there is no last-known-good version") + ": isolating to it contains nothing, and "
                    "quarantine would take the whole service down — a person decides (confirm_quarantine)")
            after = before
        else:
            after = target.isolate(quarantine=quarantine,
                                   reason=f"incident {record.incident_id}: {record.playbook.title}")
        result = {"dry_run": False, "before": before.to_dict(), "after": after.to_dict()}
        if note:
            result["note"] = note
        if decision_needed:
            result["decision_needed"] = decision_needed
    result.update({"effective_at": now_iso(), "seconds": round(time.perf_counter() - t0, 4),
                   "containment": record.containment, "target": target.ref})
    record.workdir.mkdir(parents=True, exist_ok=True)
    _write(out, result)
    add_event(record, "contained" if not decision_needed else "containment_needs_decision",
              at=result["effective_at"], actor="aiir-playbook",
              details={"mode": result["after"]["mode"], "target": target.ref, "dry_run": record.dry_run,
                       "note": note})
    if decision_needed:
        _page(record, f"containment of {target.ref} needs a person: {note}")
    elif not record.dry_run:
        lifecycle.set_state(record, "contained", actor="aiir-playbook",
                            reason=f"{target.ref} in mode {result['after']['mode']}")
    return result


def _page(record: IncidentRecord, message: str) -> None:
    """A critical SIEM alert and, when AIIR_PAGER_WEBHOOK is set, the pager (never raises)."""

    from aiir import siem

    try:
        event = siem.phase_event(record.incident_id, "contain", "containment_needs_decision", "unknown",
                                 details={"message": message, "page": True}, model=record.model_name,
                                 target=f"{record.target_kind}:{record.target_name}")
        siem.EventSink().emit(event)
        url = os.environ.get("AIIR_PAGER_WEBHOOK")
        if url:
            import httpx

            httpx.post(url, json=siem.to_ecs(event), timeout=5.0)
    except Exception:
        pass


def quarantine_pending(record: IncidentRecord) -> bool:
    """Whether containment is waiting on a person's decision to quarantine (the approval step's condition)."""
    res = _read(record.workdir / "contain.json") or {}
    return res.get("decision_needed") == "quarantine" and "quarantine_decision" not in res


def confirm_quarantine(record: IncidentRecord, *, approve: bool | None = None, actor: str | None = None,
                       reason: str = "", target=None) -> dict[str, Any]:
    """A person's answer to "take the service down?": approve → quarantine now; reject → keep serving
    (the analysis goes on). Recorded once in contain.json."""
    import getpass
    import sys

    from aiir import lifecycle

    out = record.workdir / "contain.json"
    res = _read(out) or {}
    if res.get("decision_needed") != "quarantine":
        return {"decision_needed": False}
    if "quarantine_decision" in res:
        return res["quarantine_decision"]
    if approve is None and sys.stdin is not None and sys.stdin.isatty():
        approve = input(f"{res.get('note')}. Quarantine {res.get('target')} now (every request refused)? "
                        "[y/N] ").strip().lower() in ("y", "yes")
    if approve is None:
        raise BadInput("confirm_quarantine", f"{res.get('note')}; answer with --approve (quarantine) or --reject")
    decision = {"approved": bool(approve), "by": actor or getpass.getuser(), "reason": reason, "at": now_iso()}
    if approve:
        t = target_for(record, target)
        after = t.isolate(quarantine=True, reason=f"incident {record.incident_id}: quarantine approved by "
                                                  f"{decision['by']}")
        res["after"] = after.to_dict()
        lifecycle.set_state(record, "contained", actor=decision["by"], reason="quarantine approved")
    res["quarantine_decision"] = decision
    _write(out, res)
    add_event(record, "quarantine_decided", actor=decision["by"], details=decision)
    return decision


def contain_settled(record: IncidentRecord, state: dict[str, Any], *, waited_s: float | None = None) -> dict[str, Any]:
    """After a settling containment (SageMaker update, Kubernetes rollout): the state the platform settled
    in, re-read by the trigger. A target that settled back on the suspect (a silent rollback) is an error."""
    from aiir.errors import TargetError

    out = record.workdir / "contain.json"
    result = _read(out)
    if result is None:
        raise BadInput("contain", f"no contain.json for {record.incident_id}: containment never started")
    if result.get("settled_state") is not None:
        return result
    want = result["after"].get("mode")

    def serving(st: dict[str, Any]) -> list[str]:
        return sorted(str(r.get("version")) for r in st.get("routes", []) if r.get("share", 0) > 0)

    if state.get("mode") != want or (want == "isolated" and serving(state) != serving(result["after"])):
        raise TargetError(f"{result.get('target')}: containment did not hold — asked for mode {want}, the "
                          f"platform settled in mode {state.get('mode')} with routes {state.get('routes')} "
                          "(a silent rollback?)")
    result["settled_state"] = state
    result["settled_at"] = now_iso()
    if waited_s is not None:
        result["settle_seconds"] = waited_s
    _write(out, result)
    add_event(record, "containment_settled", at=result["settled_at"], actor="aiir-playbook",
              details={"mode": state.get("mode"), "target": result.get("target"), "waited_s": waited_s})
    return result


# --- 2. triage --------------------------------------------------------------------------------------
def estimate_performance(scores, threshold: float = 0.5) -> dict[str, float]:
    """Label-free estimate (CBPE-style): treat calibrated scores as the probability of the positive class."""
    import numpy as np

    s = np.asarray(scores, dtype=float)
    pos = s >= threshold
    exp_tp = float(s[pos].sum())
    exp_pos = float(s.sum())
    return {
        "estimated_precision": exp_tp / max(int(pos.sum()), 1),
        "estimated_recall": exp_tp / exp_pos if exp_pos > 0 else 0.0,
        "positive_rate": float(pos.mean()) if len(s) else 0.0,
    }


def triage(record: IncidentRecord, *, target=None) -> dict[str, Any]:
    """Confirm the signal: suspect vs last-known-good on labelled feedback, and — before any label arrives —
    a label-free CBPE estimate on the decisions the suspect actually served (aiir.detect.performance: its
    scores calibrated on the trusted holdout, compared with last-known-good's realised performance there)."""

    def build():
        import pandas as pd

        from aiir import training
        from aiir.models import load_verified

        v = versions(record)
        prof = profile(record.model_name)
        feedback = pd.read_parquet(prof["feedback"])
        recipe = training.get_recipe(prof["recipe"])
        res: dict[str, Any] = {"versions": v, "feedback_file": prof["feedback"], "rows": len(feedback)}
        for role in ("suspect", "good"):
            # the recorded artifact digest is checked before anything is unpickled
            m = load_verified(record.model_name, v[role + "_version"]).estimator
            res[role] = training.evaluate(m, feedback, recipe)
            res[role].update(estimate_performance(m.predict_proba(recipe.features(feedback))[:, 1]))
        s, g = res["suspect"], res["good"]
        res["precision_drop"] = (g["precision"] - s["precision"]) / g["precision"] if g["precision"] else 0.0
        res["recall_drop"] = (g["recall"] - s["recall"]) / g["recall"] if g["recall"] else 0.0
        res["label_free"] = _label_free_estimate(record, v, prof, recipe, target)
        lf_drop = bool((res["label_free"] or {}).get("decision", {}).get("drop"))
        res["confirmed"] = bool(res["precision_drop"] >= 0.1 or res["recall_drop"] >= 0.1 or lf_drop
                                or any(f.get("severity") in ("high", "critical") for f in record.findings))
        res["check_findings"] = [{k: f.get(k) for k in ("kind", "severity", "title", "sources")}
                                 for f in record.findings]
        return res

    res = _once(record.workdir / "triage.json", build)
    add_event(record, "triaged", actor="aiir-playbook",
              details={"confirmed": res["confirmed"], "precision_drop": round(res["precision_drop"], 3),
                       "recall_drop": round(res["recall_drop"], 3)})
    return res


def _label_free_estimate(record: IncidentRecord, v: dict[str, Any], prof: dict[str, Any], recipe,
                         target) -> dict[str, Any] | None:
    """CBPE on production: the suspect's served scores (from the target's own log), no labels needed."""
    import pandas as pd

    from aiir.detect.performance import estimate_performance as cbpe
    from aiir.detect.performance import realised
    from aiir.errors import AiirError
    from aiir.models import load_verified

    try:
        dec = decisions_frame(record, target=target)
    except AiirError as exc:
        return {"skipped": f"served decisions unavailable ({exc})"}
    if dec.empty or "score" not in dec:
        return {"skipped": "the target has no served decisions with scores"}
    served = pd.to_numeric(dec.loc[dec["model_version"].astype(str) == str(v["suspect_version"]), "score"],
                           errors="coerce").dropna()
    if len(served) < 50:
        return {"skipped": f"only {len(served)} scored decisions served by v{v['suspect_version']}"}
    hold = pd.read_parquet(prof["holdout"])
    suspect = load_verified(record.model_name, v["suspect_version"])
    good = load_verified(record.model_name, v["good_version"])
    y = (hold[recipe.label] == suspect.positive_class).astype(int).to_numpy()
    X = recipe.features(hold)
    try:
        res = cbpe(suspect.predict_proba(X)[:, 1], y, served.to_numpy(),
                   baseline=realised(good.predict_proba(X)[:, 1], y))
    except AiirError as exc:
        return {"skipped": str(exc)}
    res["served_decisions"] = int(len(served))
    res["calibrated_on"] = prof["holdout"]
    return res


def triage_unconfirmed(record: IncidentRecord) -> bool:
    """The confirm_incident step's condition: triage found no performance drop and no high finding."""
    res = _read(record.workdir / "triage.json")
    return res is not None and not res.get("confirmed") and "confirmation" not in res


def confirm_incident(record: IncidentRecord, *, approve: bool | None = None, actor: str | None = None,
                     reason: str = "", target=None) -> dict[str, Any]:
    """Triage confirmed nothing: a person says go on (approve) or close as a false positive (reject), which
    restores the target. Recorded once in triage.json."""
    import getpass
    import sys

    from aiir import lifecycle

    out = record.workdir / "triage.json"
    res = _read(out) or {}
    if res.get("confirmed", True):
        return {"needed": False}
    if "confirmation" in res:
        return res["confirmation"]
    if approve is None and sys.stdin is not None and sys.stdin.isatty():
        approve = input("Triage found no performance drop and no high-severity finding. Go on with the "
                        "response? (no = close as a false positive and restore the target) [y/N] "
                        ).strip().lower() in ("y", "yes")
    if approve is None:
        raise BadInput("confirm_incident", "triage confirmed nothing: answer with --approve (go on) or --reject "
                                           "--reason '...' (close as a false positive, restore the target)")
    who = actor or getpass.getuser()
    decision = {"go_on": bool(approve), "by": who, "reason": reason, "at": now_iso()}
    res["confirmation"] = decision
    _write(out, res)
    add_event(record, "incident_confirmed" if approve else "closed_false_positive", actor=who, details=decision)
    if not approve:
        lifecycle.close(record.incident_id, as_="false-positive", reason=reason or "triage confirmed nothing",
                        actor=who, approve=True, target=target)
    return decision


# --- 3. preserve evidence ----------------------------------------------------------------------------
def decisions_frame(record: IncidentRecord, *, target=None, since: str | None = None, until: str | None = None):
    """Decisions served by the target (its own log, through ``DeploymentTarget.decisions``), as a DataFrame."""
    import pandas as pd

    from aiir.targets.base import DECISION_FIELDS

    t = target_for(record, target)
    if "decisions" not in t.capabilities:
        return pd.DataFrame(columns=list(DECISION_FIELDS))
    rows = t.decisions(since=since, until=until)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(DECISION_FIELDS))


def seal_once(bundle: Any, key: Any, collect: Callable[[Any], Any]) -> tuple[dict[str, Any], Any]:
    """``collect(bundle)`` then seal; returns (manifest, what ``collect`` returned). When an earlier try
    already sealed the bundle (it was stopped — killed with its scheduler, say — after sealing but before
    writing the step's output), nothing is added: the sealed bundle is the evidence, a sealed bundle refuses
    new files (a parallel step's output that appeared since, e.g. triage.json, would fail every retry), and
    sealing again only finishes an interrupted seal (one ``sealed`` entry). ``collect``'s result is then
    ``None``; the manifest says what was sealed."""
    if bundle.sealed:
        return bundle.seal(key), None
    out = collect(bundle)
    return bundle.seal(key), out


def seal_target_snapshot(bundle: Any, target: Any, snap: Path,
                         extra: Callable[[Path], None] | None = None) -> str | None:
    """The target's own snapshot (``target.snapshot``: its state, configs, model data, capture files, logs) into
    ``bundle`` under ``target/``, every file of the tree with its relative path. Taken once into ``snap`` and
    reused, so a retried task re-adds the same bytes (the write-once store accepts that) rather than a fresh
    export it would refuse. ``extra(snap)`` adds files of the caller's own before the snapshot is marked complete.
    A target that cannot be read is recorded loudly (``target/snapshot_error.json``) and the rest is preserved;
    the error text is returned."""
    try:
        done = snap.with_name(snap.name + ".complete")  # beside the tree, not in it: not evidence
        if not done.exists():
            if snap.exists():
                import shutil

                shutil.rmtree(snap)
            target.snapshot(snap)
            if extra is not None:
                extra(snap)
            done.touch()
        bundle.add_tree(snap, "target", category="target_state", description="serving target state and logs")
        return None
    except Exception as exc:  # the target may be down: record that loudly, keep preserving the rest
        error = f"{type(exc).__name__}: {exc}"
        bundle.add_json({"error": error, "target": getattr(target, "ref", "")}, "target/snapshot_error.json",
                        category="target_state", description="target snapshot failed")
        return error


def preserve(record: IncidentRecord, *, signing_key=None, actor: str = "aiir-playbook",
             context: dict[str, Any] | None = None, target=None) -> dict[str, Any]:
    """Seal the suspect model, its training data, decisions, target state, findings into a signed bundle."""
    out = record.workdir / "evidence.json"
    existing = _read(out)
    if existing is not None:
        return existing
    from aiir import registry
    from aiir.evidence import EvidenceStore
    from aiir.evidence.keys import load_or_create_signing_key

    v = versions(record)
    suspect = registry.get_version(record.model_name, v["suspect_version"])
    p = config.paths()
    key = signing_key or load_or_create_signing_key()
    store = EvidenceStore(p.evidence)
    bundle = store.open_bundle(record.incident_id, actor=actor, host=socket.gethostname(), context=context or {})
    target = target_for(record, target)

    def collect(bundle) -> str | None:
        bundle.add_json(record.to_dict(), "incident.json", category="incident", description="incident record")
        if suspect.artifact_dir and suspect.artifact_dir.exists():
            bundle.add_tree(suspect.artifact_dir, f"model/{record.model_name}-v{suspect.version}",
                            category="model", description=f"suspect model artifact v{suspect.version}")
        bundle.add_json(suspect.to_dict(), "model/registry_entry.json", category="model",
                        description="registry entry of the suspect version")
        for f in json.loads(suspect.tags.get("aiir.train_files", "[]")):
            src = Path(f["path"])
            if src.exists():
                bundle.add_file(src, f"training_data/{src.name}", category="training_data",
                                description=f"training file (registered sha256 {f['sha256']})")
        if p.registry_log.exists():
            bundle.add_file(p.registry_log, "registry/alias_log.jsonl", category="registry",
                            description="hash-chained alias log")
        # Inputs generated here are made once and reused, so a retried task re-adds the same bytes
        # (the write-once store accepts that) instead of a fresh export it would refuse.
        snapshot_error = seal_target_snapshot(bundle, target, record.workdir / "target_snapshot")
        dec_path = record.workdir / "decisions_recent.csv"
        if not dec_path.exists():
            from aiir.csvsafe import write_csv

            # spreadsheet-safe cells (client ids like =HYPERLINK(...)), 0600 like the decision log it copies
            write_csv(decisions_frame(record, target=target).tail(200_000), dec_path)
        bundle.add_file(dec_path, "decisions/recent_decisions.csv", category="decision_log",
                        description="recent decisions served by the target")
        for name in ("contain.json", "versions.json", "triage.json"):
            if (record.workdir / name).exists():
                bundle.add_file(record.workdir / name, f"playbook/{name}", category="playbook",
                                description=f"playbook step output {name}")
        if record.check_dir and Path(record.check_dir).is_dir():
            bundle.add_tree(Path(record.check_dir), "findings", category="findings",
                            description="integrity check findings and reports")
        return snapshot_error

    manifest, snapshot_error = seal_once(bundle, key, collect)
    result = {"bundle": str(bundle.path), "files": len(manifest["files"]), "sealed_at": manifest["sealed_at"],
              "manifest_sha256": _sha(bundle.path / "manifest.json"), "target": target.ref}
    if snapshot_error:
        result["snapshot_error"] = snapshot_error
    _write(out, result)
    add_event(record, "evidence_sealed", at=result["sealed_at"], actor=actor,
              details={"bundle": result["bundle"], "files": result["files"]})
    return result


def _sha(path: Path) -> str:
    from aiir.hashing import sha256_file

    return sha256_file(path)


# --- 4. forensics -------------------------------------------------------------------------------------
def forensics(record: IncidentRecord, *, target=None) -> dict[str, Any]:
    out = record.workdir / "forensics.json"
    existing = _read(out)
    if existing is not None:
        return existing
    from aiir import forensics as fx

    v = versions(record)
    fdir = record.workdir / "forensics"
    loc = fx.localise_poison(record.model_name, v["suspect_version"], v["good_version"], fdir)
    contained = _read(record.workdir / "contain.json") or {}
    since, _ = fx.deployment_window(record.model_name, v["suspect_version"])
    until = contained.get("effective_at")
    radius = fx.blast_radius(decisions_frame(record, target=target), model=record.model_name, version=v["suspect_version"],
                             since=since, until=until, out_dir=fdir, pattern=loc.get("trigger_pattern"))
    result = {"localisation": loc, "blast_radius": radius, "dir": str(fdir)}
    _write(out, result)
    add_event(record, "forensics_done", actor="aiir-playbook",
              details={"quarantined": [x.get("id") for x in loc.get("suspects", []) if x.get("quarantined")],
                       "affected_decisions": radius.get("total"),
                       "clients_affected": radius.get("clients_affected")})
    return result


# --- 5. eradicate ------------------------------------------------------------------------------------
def eradicate(record: IncidentRecord) -> dict[str, Any]:
    """Fix the quarantine list and build the conf of ``retrain_from_clean_data``."""

    def build():
        fx = _read(record.workdir / "forensics.json")
        if fx is None:
            raise BadInput("forensics", f"run forensics for {record.incident_id} first")
        v = versions(record)
        qpath = Path(fx["dir"]) / "quarantine.json"
        return {"quarantine_file": str(qpath), "quarantine": json.loads(qpath.read_text()),
                "retrain_conf": {"model_name": record.model_name, "incident_id": record.incident_id,
                                 "replaced_version": v["suspect_version"], "baseline_version": v["good_version"],
                                 "quarantine_file": str(qpath), "target_kind": record.target_kind,
                                 "target_name": record.target_name, "target_conn_id": record.target_conn_id,
                                 "dry_run": record.dry_run,
                                 "require_approval": record.require_approval,
                                 "canary_share": record.canary_share}}

    res = _once(record.workdir / "eradicate.json", build)
    add_event(record, "eradicated", actor="aiir-playbook",
              details={"quarantined_sources": res["quarantine"].get("sources", [])})
    if not record.dry_run:
        from aiir import lifecycle

        lifecycle.set_state(record, "eradicated", actor="aiir-playbook",
                            reason=f"quarantined {', '.join(res['quarantine'].get('sources', [])) or 'rows'}")
    return res


# --- 6. report --------------------------------------------------------------------------------------
def report(record: IncidentRecord) -> dict[str, Any]:
    """Render HTML/JSON/Markdown reports from everything the workspace holds (re-rendered each time)."""
    from aiir import incident as inc
    from aiir.knowledge import taxonomy
    from aiir.report import render_report

    w = record.workdir
    from aiir import lifecycle

    recovery = _read(w / "recovery.json")
    if recovery and not recovery.get("dry_run"):
        inc.add_event(record, "recovered", at=recovery.get("promoted_at"), actor="retrain_from_clean_data",
                      details={"new_version": recovery.get("new_version")})
    fx = _read(w / "forensics.json") or {}
    from aiir.playbooks import get_playbook

    pb = get_playbook(record.kind)
    mitigations = sorted({m for f in record.findings for m in f.get("mitigations", [])} | set(pb.mitigations))
    attachments = []
    if record.check_dir:
        for name in ("drift_report.html", "gx_validation.json", "findings.json", "contract.json"):
            if (Path(record.check_dir) / name).exists():
                attachments.append({"title": name, "path": str(Path(record.check_dir) / name)})
    for name in ("poison_localisation.json", "quarantine.json", "blast_radius.json", "affected_decisions.csv"):
        if (w / "forensics" / name).exists():
            attachments.append({"title": name, "path": str(w / "forensics" / name)})
    ev = _read(w / "evidence.json")
    if ev:
        attachments.append({"title": "evidence manifest", "path": str(Path(ev["bundle"]) / "manifest.json")})
    doc = {
        "incident_id": record.incident_id, "kind": record.kind, "model": record.model_name,
        "playbook": {"kind": pb.kind, "title": pb.title, "dag_id": pb.dag_id, "containment": pb.containment,
                     "steps": [{"name": st.name, "phase": st.phase, "title": st.title} for st in pb.steps]},
        "report_sections": list(pb.report_sections),
        "target": f"{record.target_kind}:{record.target_name}", "severity": record.severity,
        "status": (lifecycle.read_state(record.incident_id) or {}).get("state", "open"),
        "state": (lifecycle.read_state(record.incident_id) or {}).get("state", "open"),
        "lifecycle": lifecycle.read_state(record.incident_id),
        "detected_at": record.detected_at, "dry_run": record.dry_run,
        "timeline": inc.timeline(record),
        "findings": record.findings,
        "atlas": [taxonomy.ATLAS_TECHNIQUES[t].__dict__ for t in record.atlas if t in taxonomy.ATLAS_TECHNIQUES],
        "mitigations": [taxonomy.ATLAS_MITIGATIONS[m].__dict__ for m in mitigations
                        if m in taxonomy.ATLAS_MITIGATIONS],
        "owasp": [taxonomy.OWASP_ML_TOP10[o].__dict__ for o in record.owasp if o in taxonomy.OWASP_ML_TOP10],
        "regimes": record.regimes,
        "deadlines": incident_deadlines(record),
        "versions": _read(w / "versions.json"),
        "triage": _read(w / "triage.json"),
        "containment": _read(w / "contain.json"),
        "evidence": ev,
        "poison_localisation": fx.get("localisation"),
        "blast_radius": fx.get("blast_radius"),
        "recovery": recovery or _not_recovered(w),
        "approval": _read(w / "retrain" / "approval.json"),
        "canary": _read(w / "retrain" / "canary.json"),
        "attachments": attachments,
    }
    paths = render_report(doc, w / "report")
    add_event(record, "reported", actor="aiir-playbook")
    return {k: str(v) for k, v in paths.items()}


def incident_deadlines(record: IncidentRecord) -> list[dict[str, Any]]:
    """Every regulatory deadline of the record's regimes, from the form's fields: a clock whose start
    depends on a field not given yet is shown as waiting on that field; a regime that does not apply
    (no personal data) is shown as not applicable."""
    from aiir.knowledge import regulatory

    regimes = list(record.regimes)
    if not regimes:
        return []
    ds = [d.to_dict() for d in regulatory.deadlines(
        record.detected_at, regimes=regimes, materiality_at=record.sec_materiality_at or None,
        death=record.eu_ai_act_death, widespread=record.eu_ai_act_widespread,
        critical_infrastructure=record.eu_ai_act_critical_infrastructure)]
    personal = {"gdpr", "hipaa"}
    for d in ds:
        if d.get("regime") in personal and record.personal_data == "no":
            d["status"] = "not_applicable"
            d["applies"] = "no personal data affected (conf.personal_data = no)"
        elif d.get("regime") in personal and record.personal_data == "unknown":
            d["waiting_on"] = "conf.personal_data"
            d["applies"] = "only if personal (health) data were affected: set personal_data"
        if d.get("regime") == "sec_8k" and not record.sec_materiality_at:
            d["waiting_on"] = "conf.sec_materiality_at"
        if d.get("regime") == "eu_ai_act":
            d["flags"] = {"death": record.eu_ai_act_death, "widespread": record.eu_ai_act_widespread,
                          "critical_infrastructure": record.eu_ai_act_critical_infrastructure}
    return ds


def _not_recovered(w: Path) -> dict[str, Any] | None:
    """Why nothing was promoted (a rejected approval, a rolled-back canary, a failed gate), for the report."""
    appr = _read(w / "retrain" / "approval.json")
    can = _read(w / "retrain" / "canary.json")
    gate = _read(w / "retrain" / "gate.json")
    if appr and not appr.get("approved"):
        why = f"promotion rejected by {appr.get('by')} at {appr.get('at')}" + (
            f": {appr['reason']}" if appr.get("reason") else "")
    elif can and can.get("decision") == "rollback":
        why = f"canary rolled back: {can.get('reason')}"
    elif gate and not gate.get("passed"):
        why = f"candidate failed the gate ({', '.join(gate.get('failed', []))}); last-known-good keeps serving"
    else:
        return None
    return {"promoted": False, "reason": why}
