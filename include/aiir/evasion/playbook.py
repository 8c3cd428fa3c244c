"""The adversarial-evasion playbook, one function per step (``incident_adversarial_evasion``).

Every step takes the incident record, writes its output once into the incident workspace and returns it
(idempotent: a re-run returns the recorded output). Order: contain (block / rate-limit the suspect clients
at the target) → open (pin versions) → triage (re-scan the target's decisions around the detection) →
preserve (sealed bundle: the attack queries, the model, the target state, the guard's events) → harden
(adversarial retraining with ART, robust accuracy on held-out attacks, gate) → canary redeploy with
automatic rollback → report.

Import discipline: :func:`contain` imports only :mod:`aiir.targets` (no numpy, pandas, mlflow, sklearn).
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiir.errors import BadInput
from aiir.incident import IncidentRecord, add_event, now_iso

TRIAGE_WINDOW_H = 6.0  # hours of decisions before the detection that triage re-scans
RATE_LIMIT_PER_S = 1.0
# hardening a model on a data frame with categorical columns: attacked rows held out / added per round
FRAME_HELD_OUT_ROWS = 12
FRAME_AUGMENT_ROWS = 20


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _write(path: Path, obj: Any) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
    return obj


def _target(record: IncidentRecord, target=None):
    if target is not None:
        return target
    from aiir.targets import get_target

    return get_target(record.target_kind, record.target_name)


def suspect_clients(record: IncidentRecord) -> list[str]:
    """The clients the findings name (the guard's trip, the scan's suspects) plus ``suspect_sources``."""
    out: list[str] = []
    for f in record.findings:
        for c in (f.get("sources") or []):
            if isinstance(c, str) and c not in out:
                out.append(c)
        ev = f.get("evidence") or {}
        for c in ([ev.get("client_id")] if isinstance(ev, dict) else []) + list(
                (ev.get("clients") or []) if isinstance(ev, dict) else []):
            if isinstance(c, str) and c not in out:
                out.append(c)
    for c in record.suspect_sources:
        if c not in out:
            out.append(c)
    return out


# --- 1. contain (fast, light) -----------------------------------------------------------------------
def contain(record: IncidentRecord, *, target=None) -> dict[str, Any]:
    """Block (containment ``quarantine``) or rate-limit (``fallback``: the guard answers them conservatively)
    the suspect clients at the target. Blocks apply to the authenticated identity in key mode."""
    out = record.workdir / "contain.json"
    existing = _read(out)
    if existing is not None:
        return existing
    t0 = time.perf_counter()
    target = _target(record, target)
    clients = suspect_clients(record)
    before = target.describe()
    caps = getattr(target, "capabilities", frozenset())
    action, note = "none", ""
    if not clients:
        after, note = before, "no client named by the findings: nothing to block (triage re-scans the target)"
    elif record.dry_run:
        after, action = before, "dry_run"
    else:
        block = record.containment == "quarantine" or "rate_limit" not in caps
        if "block_clients" not in caps:
            raise BadInput("target_kind", f"target {target.ref} cannot block clients; contain it with "
                                          "incident_data_poisoning's isolation or at the network edge")
        after = target.block_clients(clients, rate_limit_per_s=None if block else RATE_LIMIT_PER_S,
                                     reason=f"incident {record.incident_id}: adversarial evasion")
        action = "block" if block else f"rate_limit {RATE_LIMIT_PER_S:g}/s"
    result = {"dry_run": record.dry_run, "clients": clients, "action": action, "note": note,
              "before": before.to_dict(), "after": after.to_dict(), "target": target.ref,
              "effective_at": now_iso(), "seconds": round(time.perf_counter() - t0, 4)}
    _write(out, result)
    add_event(record, "contained", at=result["effective_at"], actor="aiir-playbook",
              details={"clients": clients, "action": action, "target": target.ref, "dry_run": record.dry_run})
    return result


# --- 2. triage -----------------------------------------------------------------------------------
def _reference(record: IncidentRecord) -> str | None:
    from aiir import playbook

    prof = playbook.model_profiles().get(record.model_name) or {}
    ref = prof.get("reference")
    return ref if ref and Path(ref).is_file() else None


def triage(record: IncidentRecord, *, target=None) -> dict[str, Any]:
    """Re-scan the target's served decisions around the detection; the attack in numbers per client."""
    out = record.workdir / "triage.json"
    existing = _read(out)
    if existing is not None:
        return existing
    import numpy as np

    from aiir.evasion import scan

    det = datetime.fromisoformat(record.detected_at.replace("Z", "+00:00"))
    since = (det - timedelta(hours=TRIAGE_WINDOW_H)).astimezone(UTC).isoformat()
    labels, labels_note = _labels(record)
    if labels is not None:  # the labelled decisions are older than the detection by the label feed's delay
        first = min((f.get("evidence") or {}).get("first_ts") or since for f in record.findings
                    if f.get("kind") == "label_evasion")
        since = min(since, _iso(first) or since)
    tgt = _target(record, target)
    res = scan.scan_target(tgt, record.workdir / "scan", since=since, reference=_reference(record), labels=labels)
    named = suspect_clients(record)
    found = [s["client_id"] for s in res.report["suspect_clients"]]
    # the attack's numbers: perturbation sizes (RMS distance of each near-duplicate to its nearest neighbour)
    attack: dict[str, Any] = {}
    every = tgt.decisions(since, None)
    rows = [r for r in every if r["client_id"] in set(found) | set(named)]
    cols = res.report["features"]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["client_id"], []).append(r)
    prof_std = None  # perturbations are measured in standard deviations of all the window's traffic
    if cols and len(every) > 1:
        prof_std = np.array([[float(r["features"].get(c, 0) or 0) for c in cols] for r in every]).std(axis=0)
    for c, rs in by.items():
        X = np.array([[float(r["features"].get(k, 0) or 0) for k in cols] for r in rs])
        sizes = []
        if len(X) > 1 and prof_std is not None:
            Z = X / np.where(prof_std > 0, prof_std, 1.0)
            for i in range(1, len(Z)):
                d = np.sqrt(((Z[:i] - Z[i]) ** 2).mean(axis=1))
                d = d[d > 1e-12]
                if d.size:
                    sizes.append(float(d.min()))
        sizes_arr = np.asarray(sizes)
        preds = [json.dumps(r.get("prediction")) for r in rs]
        attack[c] = {"queries": len(rs), "first_ts": rs[0]["ts"], "last_ts": rs[-1]["ts"],
                     "negative_decisions": sum(1 for p in preds if p in ("0", "false", '"0"')),
                     "perturbation_rms": ({"median": float(np.median(sizes_arr)), "p10": float(np.percentile(sizes_arr, 10)),
                                           "p90": float(np.percentile(sizes_arr, 90))} if sizes_arr.size else None),
                     "served_by_guard": sum(1 for r in rs if r.get("source") == "gateway-guard")}
    for s in res.report["suspect_clients"]:  # the delayed-label signal, when the scan had labels
        if s.get("labels") and s["client_id"] in attack:
            lab = s["labels"]
            attack[s["client_id"]]["labels"] = {
                "labelled": lab["labelled"], "labelled_positive": lab["labelled_positive"],
                "let_through_positive": lab["let_through_positive"],
                "signals": [r for r in s["reasons"] if r in scan.LABEL_SIGNALS],
                "p_value": min((s["signals"][r]["p_value"] for r in s["reasons"] if r in scan.LABEL_SIGNALS),
                               default=None)}
    result = {"scan_status": res.status, "findings_file": res.paths["findings"],
              "suspect_decisions_file": res.paths["suspect_decisions"], "window_since": since,
              "named_clients": named, "suspects_found": found,
              "confirmed": bool(found) or any(f.get("kind") in ("evasion", "label_evasion", "extraction") and
                                              f.get("severity") in
                                              ("high", "critical") for f in record.findings),
              "attack": attack, "labels": res.report.get("labels"), "labels_note": labels_note,
              "atlas": [t["id"] for t in res.report["atlas"]],
              "owasp": [o["id"] for o in res.report["owasp"]]}
    _write(out, result)
    add_event(record, "triaged", actor="aiir-playbook",
              details={"confirmed": result["confirmed"], "suspects": found[:20]})
    return result


def _iso(ts: Any) -> str | None:
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).astimezone(UTC).isoformat()
    except ValueError:
        return None


def _labels(record: IncidentRecord) -> tuple[str | None, str | None]:
    """The delayed-labels file a ``label_evasion`` finding was made with, if it is still there."""
    for f in record.findings:
        path = (f.get("evidence") or {}).get("labels_file") if f.get("kind") == "label_evasion" else None
        if isinstance(path, str) and path:
            if Path(path).is_file():
                return path, None
            return None, f"labels file {path} is gone: triage re-scanned without the delayed-label signal"
    return None, None


# --- 3. preserve -----------------------------------------------------------------------------------
def preserve(record: IncidentRecord, *, target=None, signing_key=None, actor: str = "aiir-playbook",
             context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Seal the attack queries, the suspects' decisions, the model, the target state and the guard's
    event log into a signed, write-once bundle."""
    out = record.workdir / "evidence.json"
    existing = _read(out)
    if existing is not None:
        return existing
    from aiir import config
    from aiir.evidence import EvidenceStore
    from aiir.evidence.keys import load_or_create_signing_key

    tri = _read(record.workdir / "triage.json") or triage(record, target=target)
    tgt = _target(record, target)
    key = signing_key or load_or_create_signing_key()
    store = EvidenceStore(config.paths().evidence)
    bundle = store.open_bundle(record.incident_id, actor=actor, host=socket.gethostname(), context=context or {})
    from aiir.playbook import seal_once, seal_target_snapshot

    def collect(bundle) -> None:
        bundle.add_json(record.to_dict(), "incident.json", category="incident", description="incident record")
        scan_dir = record.workdir / "scan"
        for name in ("findings.json", "suspect_decisions.csv"):
            if (scan_dir / name).exists():
                bundle.add_file(scan_dir / name, f"findings/{name}", category="findings",
                                description="evasion scan of the served decisions")
        # every decision of the suspect clients in the window (made once, re-added identically on retry)
        dec = record.workdir / "suspect_decisions.jsonl"
        if not dec.exists():
            clients = set(tri.get("suspects_found", [])) | set(tri.get("named_clients", []))
            rows = [r for r in tgt.decisions(tri.get("window_since"), None) if r["client_id"] in clients]
            tmp = dec.with_name(f".{dec.name}.tmp")
            tmp.write_text("".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))
            os.replace(tmp, dec)
        bundle.add_file(dec, "decisions/suspect_clients.jsonl", category="decision_log",
                        description="every decision served to the suspect clients (the attack queries)")

        def guard_events(snap: Path) -> None:
            sd = getattr(tgt, "state_dir", None)
            if sd is not None and (Path(sd) / "guard-events.jsonl").exists():
                import shutil

                shutil.copyfile(Path(sd) / "guard-events.jsonl", snap / "guard-events.jsonl")

        seal_target_snapshot(bundle, tgt, record.workdir / "target_snapshot", extra=guard_events)
        try:
            from aiir import registry

            v = _read(record.workdir / "versions.json") or {}
            if v.get("suspect_version"):
                mv = registry.get_version(record.model_name, v["suspect_version"])
                if mv.artifact_dir and mv.artifact_dir.exists():
                    bundle.add_tree(mv.artifact_dir, f"model/{record.model_name}-v{mv.version}",
                                    category="model", description=f"attacked model artifact v{mv.version}")
                bundle.add_json(mv.to_dict(), "model/registry_entry.json", category="model",
                                description="registry entry of the attacked version")
        except Exception as exc:
            bundle.add_json({"error": str(exc)}, "model/unavailable.json", category="model",
                            description="model artifact could not be read")
        for name in ("contain.json", "versions.json", "triage.json"):
            if (record.workdir / name).exists():
                bundle.add_file(record.workdir / name, f"playbook/{name}", category="playbook",
                                description=f"playbook step output {name}")

    manifest, _ = seal_once(bundle, key, collect)
    from aiir.hashing import sha256_file

    result = {"bundle": str(bundle.path), "files": len(manifest["files"]), "sealed_at": manifest["sealed_at"],
              "manifest_sha256": sha256_file(bundle.path / "manifest.json")}
    _write(out, result)
    add_event(record, "evidence_sealed", at=result["sealed_at"], actor=actor,
              details={"bundle": result["bundle"], "files": result["files"]})
    return result


# --- 4. harden ------------------------------------------------------------------------------------
def harden(record: IncidentRecord, *, training: tuple[Any, Any, list[str]] | None = None,
           model=None, min_gain: float = 0.2, max_clean_drop: float = 0.05) -> dict[str, Any]:
    """Adversarial retraining (ART), robust accuracy on held-out attacks, gate; registers the hardened
    version when the gate passes (not in a dry run). ``training`` = (X, y, columns) overrides the model
    profile's reference data."""
    out = record.workdir / "harden.json"
    existing = _read(out)
    if existing is not None:
        return existing
    import numpy as np
    import pandas as pd

    from aiir.evasion import harden as hz
    from aiir.evasion.profile import fit_profile

    v = _read(record.workdir / "versions.json") or {}
    version = v.get("suspect_version")
    if model is None:
        from aiir.models import load_verified

        model = load_verified(record.model_name, version).raw  # digest checked before unpickling
    if training is None:
        from aiir import playbook as pb

        try:
            prof = pb.profile(record.model_name)
        except BadInput as exc:  # no known training data: nothing to retrain on; say so, redeploy skips
            result = {"attacked_version": version, "skipped": True, "reason": str(exc), "hardened_version": None,
                      "gate": {"passed": False, "reasons": ["no training data"]}}
            _write(out, result)
            add_event(record, "hardened", actor="aiir-playbook", details={"skipped": True})
            return result
        df = pd.read_parquet(prof["reference"]) if prof["reference"].endswith(".parquet") else pd.read_csv(prof["reference"])
        label = prof["label"]
        cols = [c for c in getattr(model, "feature_names_in_", df.columns) if c != label]
        non_numeric = [c for c in cols if not pd.api.types.is_numeric_dtype(df[c])]
        if len(non_numeric) == len(cols):
            result = {"attacked_version": version, "skipped": True, "hardened_version": None,
                      "reason": "no numeric feature to perturb: adversarial retraining here needs numeric features",
                      "gate": {"passed": False, "reasons": ["not hardened"]}}
            _write(out, result)
            add_event(record, "hardened", actor="aiir-playbook", details={"skipped": True})
            return result
        if non_numeric:  # e.g. a merchant category: the attacks perturb the numeric features, these stay per row
            training = (df[cols].reset_index(drop=True), df[label].to_numpy(int), list(cols))
        else:
            training = (df[cols].to_numpy(float), df[label].to_numpy(int), list(cols))
    confirmed = _confirmed_evasions(record)  # decisions let through that the label feed marked positive
    transfer_info: dict[str, Any] | None = None
    with hz._one_thread():  # see hz._one_thread: on 2 busy cores an HGB refit took 5-11 s threaded, 0.9 s on one
        X, y, cols = training
        y = np.asarray(y, int)
        rng = np.random.default_rng(0)
        idx = rng.permutation(len(X))
        cut = int(0.7 * len(X))
        tr, ho = idx[:cut], idx[cut:]
        if isinstance(X, pd.DataFrame):  # categorical columns held fixed per row by the attacks
            num = [c for c in cols if pd.api.types.is_numeric_dtype(X[c])]
            Xtr, Xho = X.iloc[tr].reset_index(drop=True), X.iloc[ho].reset_index(drop=True)
            profile = fit_profile(Xtr[num].to_numpy(float), num)
            # fewer attacked rows than the array path: each HopSkipJump row costs ~70 calls of the whole
            # pipeline (column transformer + model, ~30 ms each on 2 busy cores: ~2 s a row)
            X_hsj = hz.hsj_examples(model, Xho, profile, rows=FRAME_HELD_OUT_ROWS, seed=1)
            X_hsj = X_hsj[hz._predict(model, X_hsj) == 0] if len(X_hsj) else X_hsj
            # confirmed evasions (every model column of the decision): half trained on, half held out. No surrogate
            # examples on a frame: the surrogates need every input numeric
            conf = pd.DataFrame([{c: r.get(c) for c in cols} for r in confirmed], columns=list(cols))
            conf = conf.dropna() if len(conf) else conf
            c_tr, c_ho = conf.iloc[: len(conf) // 2], conf.iloc[len(conf) // 2:]
            extra = (c_tr.reset_index(drop=True), np.ones(len(c_tr), int)) if len(c_tr) else None
            hardened, info = hz.augment_retrain(model, Xtr, y[tr], profile, rows=FRAME_AUGMENT_ROWS, rounds=2,
                                                extra=extra)
            held = {"hsj": (X_hsj, np.ones(len(X_hsj), int))}
            if len(c_ho):
                held["transfer"] = (c_ho.reset_index(drop=True), np.ones(len(c_ho), int))
                transfer_info = {"confirmed_evasions": len(conf), "trained_on": len(c_tr), "held_out": len(c_ho),
                                 "surrogate_examples": 0}
            before = hz.robust_accuracy(model, Xho, y[ho], held_out=held)
            after = hz.robust_accuracy(hardened, Xho, y[ho], held_out=held)
            X_example = Xtr.head(50)
        else:
            X = np.asarray(X, float)
            profile = fit_profile(X[tr], cols)
            # held-out attacks: HopSkipJump against the attacked model on held-out rows
            X_hsj = hz.hsj_examples(model, X[ho], profile, rows=30, columns=cols, seed=1)
            X_hsj = X_hsj[hz._predict_cols(model, X_hsj, cols) == 0] if len(X_hsj) else X_hsj
            held = {"hsj": (X_hsj, np.ones(len(X_hsj), int))}
            extra = None
            if confirmed:  # a label_evasion incident: transfer-robust examples (ensemble adversarial training)
                conf = np.array([[float(r.get(c) if r.get(c) is not None else np.nan) for c in cols] for r in confirmed])
                conf = conf[np.isfinite(conf).all(axis=1)]
                c_tr, c_ho = conf[: len(conf) // 2], conf[len(conf) // 2:]
                Xs, sinfo = hz.surrogate_examples(model, X[tr], y[tr], profile, eps=hz.TRANSFER_EPS, columns=cols)
                ex = np.vstack([Xs, c_tr]) if len(c_tr) else Xs
                extra = (ex, np.ones(len(ex), int))
                if len(c_ho):
                    held["transfer"] = (c_ho, np.ones(len(c_ho), int))
                transfer_info = {"confirmed_evasions": int(len(conf)), "trained_on": int(len(c_tr)),
                                 "held_out": int(len(c_ho)), "surrogate_examples": sinfo}
            hardened, info = hz.augment_retrain(model, X[tr], y[tr], profile, columns=cols, rows=60, rounds=2,
                                                extra=extra)
            held_df = {k: (pd.DataFrame(a, columns=cols), b) for k, (a, b) in held.items()}
            before = hz.robust_accuracy(model, pd.DataFrame(X[ho], columns=cols), y[ho], held_out=held_df)
            after = hz.robust_accuracy(hardened, pd.DataFrame(X[ho], columns=cols), y[ho], held_out=held_df)
            X_example = pd.DataFrame(X[tr][:50], columns=cols)
    # the gate's rule is the same for every incident; after a label_evasion finding it judges the robustness on
    # the held-out confirmed evasions (the attacker's own rows), else on the held-out HopSkipJump rows
    on = "transfer" if "robust_accuracy_transfer" in before else "hsj"
    g = hz.gate(before, after, on=on, min_gain=min_gain, max_clean_drop=max_clean_drop)
    new_version = None
    if g["passed"] and not record.dry_run:
        from aiir import config

        new_version = hz.register_hardened(hardened, name=record.model_name, X_example=X_example,
                                           tracking_uri=config.paths().mlflow_tracking_uri,
                                           tags={"aiir.incident_id": record.incident_id,
                                                 "aiir.hardened_from": str(version)}, source_version=version)
    result = {"attacked_version": version, "method": info, "before": before, "after": after, "gate": g,
              "hardened_version": new_version, "held_out_rows": {k: int(len(a)) for k, (a, _) in held.items()},
              "transfer": transfer_info}
    _write(out, result)
    add_event(record, "hardened", actor="aiir-playbook",
              details={"gate": g["passed"], "version": new_version, "gain": g["gain"]})
    return result


def _confirmed_evasions(record: IncidentRecord) -> list[dict[str, Any]]:
    """The feature dicts of the decisions a ``label_evasion`` finding names (let through by the model, labelled
    positive later), from triage's re-scan and the preserved decisions of the suspect clients."""
    ids: list[str] = []
    doc = _read(record.workdir / "scan" / "findings.json") or {}
    for f in list(doc.get("findings") or []) + list(record.findings):
        if f.get("kind") == "label_evasion":
            ids += [str(i) for i in (f.get("evidence") or {}).get("decision_ids") or [] if str(i) not in ids]
    if not ids:
        return []
    path = record.workdir / "suspect_decisions.jsonl"
    if not path.exists():
        return []
    want = set(ids)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["features"] for r in rows if str(r.get("decision_id")) in want and isinstance(r.get("features"), dict)]


# --- 5. canary redeploy ----------------------------------------------------------------------------
def redeploy(record: IncidentRecord, *, target=None, share: float = 0.2, observe_s: float = 30.0,
             max_positive_shift: float = 0.25) -> dict[str, Any]:
    """Canary the hardened version; promote it or roll back automatically (see harden.canary_redeploy): rolled
    back when the canary errs or its positive-class rate differs from the primary's by more than
    ``max_positive_shift`` (absolute, once the canary has 20 decisions)."""
    out = record.workdir / "redeploy.json"
    existing = _read(out)
    if existing is not None:
        return existing
    from aiir.evasion import harden as hz

    h = _read(record.workdir / "harden.json") or {}
    if not h.get("hardened_version"):
        result = {"outcome": "skipped", "reason": "no hardened version (gate failed, dry run, or not hardened)"}
    else:
        tgt = _target(record, target)
        if "canary" not in getattr(tgt, "capabilities", frozenset()):
            raise BadInput("target_kind", f"target {tgt.ref} cannot run a canary")

        def divergence(stats):
            a, b = stats.get("canary_positive_rate"), stats.get("primary_positive_rate")
            if a is not None and b is not None and stats["canary_decisions"] >= 20 and abs(a - b) > max_positive_shift:
                return f"canary positive rate {a:.2f} vs primary {b:.2f}"
            return None

        result = hz.canary_redeploy(tgt, h["hardened_version"], share=share, observe_s=observe_s, check=divergence,
                                    reason=f"incident {record.incident_id}: hardened model canary")
    _write(out, result)
    add_event(record, "redeployed", actor="aiir-playbook", details={"outcome": result["outcome"]})
    return result


def _attack_line(a: dict[str, Any]) -> str:
    line = (f"{a['queries']} queries {a['first_ts']} → {a['last_ts']}; perturbation RMS median "
            f"{a['perturbation_rms']['median']:.4f}" if a.get("perturbation_rms") else f"{a['queries']} queries")
    lab = a.get("labels")
    if lab:
        p = lab.get("p_value")
        line += (f"; delayed labels: {lab['let_through_positive']} of its {lab['labelled_positive']} labelled "
                 f"positives let through ({', '.join(lab.get('signals') or []) or 'not significant'}"
                 + (f", p {p:.1e}" if isinstance(p, int | float) else "") + ")")
    return line


# --- 6. report ------------------------------------------------------------------------------------
def report(record: IncidentRecord) -> dict[str, Any]:
    """The incident report (HTML/JSON/Markdown) with the attack's queries, perturbation sizes and clients."""
    from aiir import incident as inc
    from aiir.knowledge import taxonomy
    from aiir.report import render_report

    w = record.workdir
    tri = _read(w / "triage.json") or {}
    h = _read(w / "harden.json")
    rd = _read(w / "redeploy.json")
    atlas = sorted(set(record.atlas) | set(tri.get("atlas", [])) | {"AML.T0040", "AML.T0043", "AML.T0015"}
                   - {"AML.T0020"})
    owasp = sorted(set(tri.get("owasp", [])) | {o for f in record.findings for o in f.get("owasp", [])} | {"ML01"})
    attachments = [{"title": n, "path": str(p)} for n, p in (
        ("evasion findings", w / "scan" / "findings.json"), ("attack queries", w / "scan" / "suspect_decisions.csv"),
        ("suspect clients' decisions", w / "suspect_decisions.jsonl")) if p.exists()]
    ev = _read(w / "evidence.json")
    if ev:
        attachments.append({"title": "evidence manifest", "path": str(Path(ev["bundle"]) / "manifest.json")})
    recovery = None
    if h and not h.get("skipped"):
        recovery = {"hardened_version": h.get("hardened_version"), "gate": h["gate"]["passed"],
                    "robust_accuracy_before": h["before"].get("robust_accuracy_hsj"),
                    "robust_accuracy_after": h["after"].get("robust_accuracy_hsj"),
                    **({"robust_accuracy_on_held_out_confirmed_evasions_before": h["before"].get("robust_accuracy_transfer"),
                        "robust_accuracy_on_held_out_confirmed_evasions_after": h["after"].get("robust_accuracy_transfer")}
                       if "robust_accuracy_transfer" in h.get("before", {}) else {}),
                    "clean_accuracy_before": h["before"]["clean_accuracy"],
                    "clean_accuracy_after": h["after"]["clean_accuracy"],
                    "redeploy": (rd or {}).get("outcome")}
    doc = {
        "incident_id": record.incident_id, "kind": "adversarial_evasion", "model": record.model_name,
        "title": f"Adversarial evasion against {record.model_name}",
        "target": f"{record.target_kind}:{record.target_name}", "severity": record.severity,
        "status": ("recovered" if rd and rd.get("outcome") == "promoted" else
                   "contained" if (w / "contain.json").exists() else "open"),
        "detected_at": record.detected_at, "dry_run": record.dry_run, "timeline": inc.timeline(record),
        "findings": record.findings, "regimes": record.regimes,
        "atlas": [a for a in atlas if a in taxonomy.ATLAS_TECHNIQUES],
        "owasp": [o for o in owasp if o in taxonomy.OWASP_ML_TOP10],
        "mitigations": ["AML.M0015", "AML.M0004", "AML.M0003", "AML.M0024"],
        "versions": _read(w / "versions.json"),
        "triage": {"confirmed": tri.get("confirmed"), "suspect clients": ", ".join(tri.get("suspects_found", [])),
                   **{f"client {c}": _attack_line(a) for c, a in (tri.get("attack") or {}).items()},
                   **({"delayed labels": f"{tri['labels'].get('matched')} decisions labelled "
                                         f"({tri['labels'].get('labelled_positive')} positive, "
                                         f"{tri['labels'].get('let_through_positive')} of them let through by the "
                                         f"model) from {tri['labels'].get('file')}; the label signal is as "
                                         "late as the label feed"}
                      if tri.get("labels") else {}),
                   **({"labels": tri["labels_note"]} if tri.get("labels_note") else {})},
        "containment": _read(w / "contain.json"), "evidence": ev, "recovery": recovery, "attachments": attachments,
    }
    paths = render_report(doc, w / "report")
    add_event(record, "reported", actor="aiir-playbook")
    return {k: str(v) for k, v in paths.items()}
