"""Recovery after a poisoning incident: clean training set, same recipe, gated promotion.

1. :func:`build_clean_set` — the replaced version's training files (digests verified) minus every
   quarantined slice and every quarantined row digest → ``clean_train.parquet``.
2. :func:`validate_clean_set` — Great Expectations validation against a suite inferred from the trusted
   reference (``aiir.detect.contract`` when available, else a minimal private suite).
3. :func:`train_candidate` — the replaced version's recipe on the clean set, registered with MLflow lineage
   (``aiir.stage=candidate``); aliases untouched.
4. :func:`gate` — on the trusted holdout at least as good as last-known-good within a tolerance, and no
   longer fooled by the poisoned rows. Never raises on a failed gate.
5. :func:`promote` — ``champion`` and ``last-known-good`` to the new version (hash-chained registry log).

Every step is idempotent: the same inputs give the same files, and re-running reuses what exists.
Details: ``docs/forensics.md``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiir import forensics as fx
from aiir import registry
from aiir.errors import BadInput, IntegrityError
from aiir.hashing import sha256_bytes, sha256_file
from aiir.jsonio import jsonable

if TYPE_CHECKING:
    import pandas as pd

CLEAN_FILE = "clean_train.parquet"
CLEAN_SUMMARY_FILE = "clean_set.json"
REMOVED_ROWS_FILE = "quarantined_rows.parquet"
VALIDATION_FILE = "clean_set_validation.json"
CONTRACT_FILE = "clean_set_contract.json"
CANDIDATE_FILE = "candidate.json"
GATE_FILE = "gate.json"
POSITIVE_SCORE = 0.5


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ================================================================================= build_clean_set

def _load_quarantine(quarantine: dict[str, Any] | str | Path, quarantine_dir: Path | None
                     ) -> tuple[dict[str, Any], Path | None]:
    if isinstance(quarantine, (str, Path)):
        p = Path(quarantine)
        data = _read_json(p)
        if not isinstance(data, dict):
            raise BadInput(str(p), "quarantine file missing or not a JSON object")
        return data, quarantine_dir or p.parent
    if not isinstance(quarantine, dict):
        raise BadInput("quarantine", f"expected the quarantine.json object or its path, got {type(quarantine).__name__}")
    return quarantine, quarantine_dir


def _quarantined_digests(q: dict[str, Any], base: Path | None) -> tuple[set[str], str | None]:
    if isinstance(q.get("row_digests"), list):
        return {str(d) for d in q["row_digests"]}, None
    name = q.get("row_digests_file")
    if not name:
        return set(), None
    candidates = []
    if Path(name).is_absolute():
        candidates.append(Path(name))
    if base is not None:
        candidates.append(Path(base) / name)
    if q.get("row_digests_path"):
        candidates.append(Path(q["row_digests_path"]))
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise BadInput("quarantine.row_digests_file", f"cannot find '{name}' (looked at "
                                                      f"{', '.join(map(str, candidates)) or 'nothing'})")
    raw = path.read_bytes()
    want = q.get("row_digests_sha256")
    if want and sha256_bytes(raw) != want:
        raise IntegrityError(f"{path}: quarantined row digests changed since forensics wrote them "
                             f"(expected SHA-256 {want[:12]}…, got {sha256_bytes(raw)[:12]}…)")
    return {ln.strip() for ln in raw.decode("utf-8").splitlines() if ln.strip()}, str(path)


def build_clean_set(model: str, replaced_version: str, quarantine: dict[str, Any] | str | Path, out_dir: Path,
                    *, quarantine_dir: Path | None = None) -> dict[str, Any]:
    """The replaced version's training data minus the quarantine → ``out_dir/clean_train.parquet``.

    ``quarantine`` is the ``quarantine.json`` object (or its path) written by
    :func:`aiir.forensics.localise_poison`. A training file whose SHA-256 no longer matches the version's
    ``aiir.train_files`` tag raises :class:`IntegrityError` naming the file. Also writes the removed rows
    (``quarantined_rows.parquet``, for the gate) and ``clean_set.json`` (the summary, also returned)."""
    import pandas as pd

    from aiir.tabular import read_table

    out_dir = Path(out_dir)
    q, base = _load_quarantine(quarantine, quarantine_dir)
    if q.get("model") not in (None, model):
        raise BadInput("quarantine.model", f"quarantine is for model '{q.get('model')}', not '{model}'")
    mv = registry.get_version(model, replaced_version)
    entries = fx.train_files(mv)
    verified = fx.verify_files(entries)
    for v in verified:
        if v["status"] == "missing":
            raise IntegrityError(f"{v['path']}: training file of {model} v{mv.version} is missing")
        if v["status"] != "ok":
            raise IntegrityError(f"{v['path']}: SHA-256 {v['actual_sha256']} does not match "
                                 f"{v['expected_sha256']} recorded for {model} v{mv.version}")
    digests, digests_path = _quarantined_digests(q, base)
    src_col = q.get("source_column", "source")
    bat_col = q.get("batch_column", "batch")
    slices = list(q.get("slices") or [])
    by_path = {v["path"]: v for v in verified}
    for sl in slices:
        v = by_path.get(str(sl.get("file")))
        if v is not None and sl.get("sha256") and sl["sha256"] != v["actual_sha256"]:
            raise IntegrityError(f"{sl['file']}: quarantine slice was computed on other bytes (SHA-256 "
                                 f"{sl['sha256'][:12]}…, file now {v['actual_sha256'][:12]}…)")

    kept_parts, removed_parts, files, slice_rows = [], [], [], [0] * len(slices)
    for v in verified:
        df = read_table(v["path"], what="training file")
        n = len(df)
        by_slice = np.zeros(n, bool)
        for k, sl in enumerate(slices):
            if str(sl.get("file")) != v["path"]:
                continue
            m = np.ones(n, bool)
            for key, col in (("source", src_col), ("batch", bat_col)):
                if sl.get(key) is not None:
                    if not col or col not in df.columns:
                        raise BadInput(v["path"], f"quarantine slice needs column '{col}' ({key})")
                    m &= (df[col].astype(str) == str(sl[key])).to_numpy()
            slice_rows[k] += int(m.sum())
            by_slice |= m
        by_digest = np.zeros(n, bool)
        if digests:
            by_digest = np.isin(np.asarray(fx.row_digests(df), dtype=object), list(digests)) & ~by_slice
        removed = by_slice | by_digest
        kept_parts.append(df[~removed])
        removed_parts.append(df[removed])
        per_source: dict[str, dict[str, int]] = {}
        if src_col and src_col in df.columns:
            s = df[src_col].astype(str)
            for name in sorted(s.unique()):
                ms = (s == name).to_numpy()
                per_source[name] = {"rows_in": int(ms.sum()), "rows_out": int((ms & ~removed).sum()),
                                    "removed_by_slice": int((ms & by_slice).sum()),
                                    "removed_by_digest": int((ms & by_digest).sum())}
        files.append({"path": v["path"], "sha256": v["actual_sha256"], "digest_verified": True,
                      "rows_in": n, "rows_out": int((~removed).sum()),
                      "removed_by_slice": int(by_slice.sum()), "removed_by_digest": int(by_digest.sum()),
                      "sources": per_source})
    for k, sl in enumerate(slices):
        if sl.get("rows") is not None and str(sl.get("file")) in by_path and slice_rows[k] != int(sl["rows"]):
            raise IntegrityError(f"{sl['file']}: quarantine slice {sl.get('source') or sl.get('batch')} "
                                 f"lists {sl['rows']} rows, the file has {slice_rows[k]}")
    clean = pd.concat(kept_parts, ignore_index=True)
    removed_df = pd.concat(removed_parts, ignore_index=True)
    if clean.empty:
        raise BadInput("quarantine", "removes every training row: nothing left to train on")
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_sha = fx.write_parquet(clean, out_dir / CLEAN_FILE)
    if len(removed_df):
        removed_sha = fx.write_parquet(removed_df, out_dir / REMOVED_ROWS_FILE)
    else:  # nothing quarantined: no poisoned rows for the gate (and no stale file from another input)
        (out_dir / REMOVED_ROWS_FILE).unlink(missing_ok=True)
        removed_sha = None
    summary = {
        "model": model, "replaced_version": mv.version,
        "quarantine": {"suspect_version": q.get("suspect_version"), "good_version": q.get("good_version"),
                       "sources": q.get("sources", []), "slices": len(slices),
                       "row_digests": len(digests), "row_digests_file": digests_path,
                       "unmatched_slices": [sl for sl in slices if str(sl.get("file")) not in by_path]},
        "files": files,
        "rows_in": int(sum(f["rows_in"] for f in files)),
        "rows_out": int(len(clean)),
        "removed_by_slice": int(sum(f["removed_by_slice"] for f in files)),
        "removed_by_digest": int(sum(f["removed_by_digest"] for f in files)),
        "clean_file": str((out_dir / CLEAN_FILE).resolve()), "clean_sha256": clean_sha,
        "removed_rows_file": str((out_dir / REMOVED_ROWS_FILE).resolve()) if removed_sha else None,
        "removed_rows_sha256": removed_sha,
    }
    fx.write_json(out_dir / CLEAN_SUMMARY_FILE, summary)
    return jsonable(summary)


# ============================================================================== validate_clean_set

def _detect_contract_api():
    """``(infer_contract, validate, column_types, load_thresholds)`` of ``aiir.detect`` when present."""
    try:
        from aiir.detect import contract
        from aiir.detect.drift import column_types
        from aiir.detect.thresholds import load_thresholds
    except ImportError:
        return None
    if not (hasattr(contract, "infer_contract") and hasattr(contract, "validate")):
        return None
    return contract.infer_contract, contract.validate, column_types, load_thresholds


def _private_suite(ref: pd.DataFrame) -> dict[str, Any]:
    """A minimal GX suite: exact column set, no new nulls, numeric ranges (±5 %), categorical domains."""
    import pandas as pd
    from pandas.api import types as pt

    exps: list[dict[str, Any]] = [{"type": "expect_table_columns_to_match_set",
                                   "kwargs": {"column_set": [str(c) for c in ref.columns], "exact_match": True}}]
    for col in ref.columns:
        s = ref[col]
        null = float(s.isna().mean())
        allowed = 0.0 if null == 0 else min(1.0, null * 1.5 + 0.01)
        if allowed < 1.0:
            exps.append({"type": "expect_column_values_to_not_be_null",
                         "kwargs": {"column": col, "mostly": round(1 - allowed, 6)}})
        nn = s.dropna()
        if nn.empty:
            continue
        if pt.is_numeric_dtype(s.dtype) and not pt.is_bool_dtype(s.dtype) and nn.nunique() > 10:
            v = pd.to_numeric(nn, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            v = v[np.isfinite(v)]
            lo, hi = float(v.min()), float(v.max())
            pad = (hi - lo) * 0.05
            exps.append({"type": "expect_column_values_to_be_between",
                         "kwargs": {"column": col, "min_value": max(lo - pad, 0.0) if lo >= 0 else lo - pad,
                                    "max_value": hi + pad, "mostly": 0.99}})
        elif nn.nunique() <= 50:
            vals = [x.item() if hasattr(x, "item") else x for x in nn.unique()]
            exps.append({"type": "expect_column_values_to_be_in_set",
                         "kwargs": {"column": col, "value_set": sorted(vals, key=str), "mostly": 0.99}})
    return {"name": "aiir-clean-set", "expectations": exps, "meta": {}}


def _private_validate(cur: pd.DataFrame, suite: dict[str, Any]) -> dict[str, Any]:
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import warnings

    import great_expectations as gx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exps = []
        for e in suite["expectations"]:
            cls = "".join(p.capitalize() for p in e["type"].split("_"))
            exps.append(getattr(gx.expectations, cls)(**e["kwargs"]))
        gsuite = gx.ExpectationSuite(name=suite["name"], expectations=exps)
        ctx = gx.get_context(mode="ephemeral")
        batch = (ctx.data_sources.add_pandas("aiir").add_dataframe_asset(name="clean")
                 .add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": cur}))
        return batch.validate(gsuite, result_format="SUMMARY").to_json_dict()


def _summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in result.get("results", []):
        cfg = r.get("expectation_config", {})
        kw = cfg.get("kwargs", {})
        res = r.get("result") or {}
        out.append({"type": cfg.get("type"), "column": kw.get("column"), "success": bool(r.get("success")),
                    "unexpected_percent": res.get("unexpected_percent"),
                    "observed_value": res.get("observed_value") if not isinstance(res.get("observed_value"), dict)
                    else None})
    return out


def validate_clean_set(path: str | Path, reference_path: str | Path, out_dir: Path, *,
                       ignore_columns: tuple[str, ...] = ("batch",)) -> dict[str, Any]:
    """Validate the clean set with Great Expectations against a suite inferred from the trusted reference.

    ``ignore_columns`` are left out of both (provenance columns such as ``batch`` take new values by
    design). Writes ``clean_set_contract.json`` and ``clean_set_validation.json``; returns the summary
    (``success`` is the verdict). Re-running on the same bytes returns the recorded summary."""
    from aiir.tabular import read_table

    out_dir = Path(out_dir)
    path, reference_path = Path(path), Path(reference_path)
    cur = read_table(path, what="clean training set")
    ref = read_table(reference_path, what="trusted reference")
    inputs = {"clean": str(path), "clean_sha256": sha256_file(path), "reference": str(reference_path),
              "reference_sha256": sha256_file(reference_path), "ignore_columns": list(ignore_columns)}
    prev = _read_json(out_dir / VALIDATION_FILE)
    if prev and prev.get("inputs") == inputs:
        return prev
    drop = [c for c in ignore_columns if c in ref.columns or c in cur.columns]
    ref = ref.drop(columns=[c for c in drop if c in ref.columns])
    cur = cur.drop(columns=[c for c in drop if c in cur.columns])
    api = _detect_contract_api()
    engine = "aiir.detect.contract"
    suite = result = None
    if api is not None:
        infer_contract, validate, column_types, load_thresholds = api
        try:
            t = load_thresholds()
            suite = infer_contract(ref, t, column_types(ref, t), name="aiir-clean-set",
                                   meta={"inferred_from": str(reference_path),
                                         "reference_sha256": inputs["reference_sha256"]})
            result = validate(cur, suite, where=str(path))
        except TypeError as exc:  # the detect API changed under us: fall back, and say so
            engine = f"private (aiir.detect.contract API mismatch: {exc})"
            suite = result = None
    else:
        engine = "private (aiir.detect.contract not available)"
    if result is None:
        suite = _private_suite(ref)
        result = _private_validate(cur, suite)
    checks = _summarise(result)
    summary = {
        "success": bool(result.get("success")),
        "engine": engine,
        "inputs": inputs,
        "rows": int(len(cur)),
        "expectations": len(checks),
        "failed": [c for c in checks if not c["success"]],
        "checks": checks,
        "contract_file": CONTRACT_FILE,
    }
    fx.write_json(out_dir / CONTRACT_FILE, suite)
    fx.write_json(out_dir / VALIDATION_FILE, summary)
    return jsonable(summary)


# ================================================================================= train_candidate

def _find_candidate(model: str, incident_id: str, clean_sha: str, replaced: str) -> registry.ModelVersion | None:
    c = registry.client()
    try:
        versions = c.search_model_versions(f"name='{model}'")
    except Exception:
        return None
    for v in sorted(versions, key=lambda v: int(v.version)):
        t = dict(v.tags or {})
        if (t.get("aiir.incident_id") == incident_id and t.get("aiir.clean_set_sha256") == clean_sha
                and t.get("aiir.retrained_from") == str(replaced)):
            return registry.get_version(model, v.version)
    return None


def _training_validation(out_dir: Path, clean_path: Path, clean_sha: str) -> dict[str, Any] | None:
    """The clean set's GX validation (``validate_clean_set``) when it covers these exact bytes."""
    v = _read_json(out_dir / VALIDATION_FILE)
    if not v or (v.get("inputs") or {}).get("clean_sha256") != clean_sha:
        return None
    return {str(clean_path): {"engine": v.get("engine"), "success": v.get("success"),
                              "expectations": v.get("expectations"), "failed": len(v.get("failed") or []),
                              "file": str((out_dir / VALIDATION_FILE).resolve()),
                              "sha256": sha256_file(out_dir / VALIDATION_FILE)}}


def train_candidate(model: str, replaced_version: str, clean_path: str | Path, *, incident_id: str,
                    out_dir: Path) -> registry.ModelVersion:
    """Train the replaced version's recipe on the clean set and register it as a candidate.

    Reuses the version recorded in ``out_dir/candidate.json`` (or found by its tags) when it was trained
    from the same clean-set digest for the same incident. Never moves an alias."""
    from aiir import training
    from aiir.tabular import read_table

    out_dir = Path(out_dir)
    clean_path = Path(clean_path)
    if not clean_path.is_file():
        raise BadInput(str(clean_path), "clean training set not found (run build_clean_set first)")
    clean_sha = sha256_file(clean_path)
    replaced = registry.get_version(model, replaced_version)
    recipe_name = replaced.tags.get("aiir.recipe")
    if not recipe_name:
        raise BadInput(f"{model} v{replaced.version}", "has no 'aiir.recipe' tag: cannot retrain the same way")
    recipe = training.get_recipe(recipe_name)

    rec = _read_json(out_dir / CANDIDATE_FILE)
    existing = None
    if rec and rec.get("clean_sha256") == clean_sha and rec.get("incident_id") == incident_id \
            and str(rec.get("replaced_version")) == replaced.version:
        try:
            mv = registry.get_version(model, rec["version"])
            if mv.tags.get("aiir.clean_set_sha256") == clean_sha:
                existing = mv
        except BadInput:
            existing = None
    if existing is None:
        existing = _find_candidate(model, incident_id, clean_sha, replaced.version)
    if existing is not None:
        mv = existing
        reused = True
    else:
        df = read_table(clean_path, what="clean training set")
        est = recipe.fit(df)
        train = df.drop(columns=[c for c in recipe.drop if c in df.columns])
        mv = registry.log_and_register(
            est, name=model, recipe=recipe.name, train=train, train_files=[clean_path], label=recipe.label,
            validation=_training_validation(out_dir, clean_path, clean_sha),
            tags={"aiir.stage": "candidate", "aiir.incident_id": incident_id,
                  "aiir.retrained_from": replaced.version, "aiir.clean_set_sha256": clean_sha},
            description=f"Incident {incident_id}: retrained with recipe {recipe.name} on the clean set "
                        f"(replaces v{replaced.version}).")
        reused = False
    record = {"model": model, "version": mv.version, "run_id": mv.run_id, "recipe": recipe.name,
              "replaced_version": replaced.version, "incident_id": incident_id,
              "clean_file": str(clean_path.resolve()), "clean_sha256": clean_sha,
              "artifact_sha256": mv.tags.get("aiir.artifact_sha256")}
    if not reused or rec != record:
        fx.write_json(out_dir / CANDIDATE_FILE, record)
    return mv


def train_candidate_dry_run(model: str, replaced_version: str, clean_path: str | Path, *, incident_id: str,
                            out_dir: Path) -> dict[str, Any]:
    """Dry run: the same recipe trained on the clean set, kept in the incident workspace only — no MLflow
    run, no registered version. The pickle's SHA-256 is recorded and checked before the gate loads it."""
    import pickle

    from aiir import training
    from aiir.tabular import read_table

    out_dir = Path(out_dir)
    clean_path = Path(clean_path)
    if not clean_path.is_file():
        raise BadInput(str(clean_path), "clean training set not found (run build_clean_set first)")
    clean_sha = sha256_file(clean_path)
    rec = _read_json(out_dir / CANDIDATE_FILE)
    pkl = out_dir / "dry_run_candidate.pkl"
    if rec and rec.get("dry_run") and rec.get("clean_sha256") == clean_sha and pkl.is_file() \
            and sha256_file(pkl) == rec.get("model_sha256"):
        return rec
    replaced = registry.get_version(model, replaced_version)
    recipe_name = replaced.tags.get("aiir.recipe")
    if not recipe_name:
        raise BadInput(f"{model} v{replaced.version}", "has no 'aiir.recipe' tag: cannot retrain the same way")
    recipe = training.get_recipe(recipe_name)
    est = recipe.fit(read_table(clean_path, what="clean training set"))
    pkl.write_bytes(pickle.dumps(est))
    record = {"dry_run": True, "model": model, "version": None, "recipe": recipe.name,
              "replaced_version": replaced.version, "incident_id": incident_id,
              "clean_file": str(clean_path.resolve()), "clean_sha256": clean_sha, "model_file": str(pkl),
              "model_sha256": sha256_file(pkl),
              "note": "dry run: trained in the incident workspace only; nothing registered in MLflow"}
    fx.write_json(out_dir / CANDIDATE_FILE, record)
    return record


def dry_run_scorer(candidate: dict[str, Any]):
    """``(score(df), positive class)`` of a dry-run candidate, after checking the pickle's recorded digest."""
    import pickle

    pkl = Path(candidate["model_file"])
    if sha256_file(pkl) != candidate["model_sha256"]:
        raise IntegrityError(f"{pkl}: dry-run candidate changed since it was trained (SHA-256 "
                             f"{sha256_file(pkl)}, recorded {candidate['model_sha256']}); not loading it")
    est = pickle.loads(pkl.read_bytes())
    names = [str(n) for n in getattr(est, "feature_names_in_", [])] or None
    classes = getattr(est, "classes_", None)
    pos = classes[-1] if classes is not None else 1
    pos = pos.item() if hasattr(pos, "item") else pos

    def score(df):
        X = df[names] if names is not None else df
        p = np.asarray(est.predict_proba(X))
        return p[:, -1].astype(float) if p.ndim == 2 else p.astype(float)

    return score, pos


# ============================================================================================ gate

def _metrics(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    pred = (score >= threshold).astype(int)
    out = {"precision": float(precision_score(y, pred, zero_division=0)),
           "recall": float(recall_score(y, pred, zero_division=0)),
           "f1": float(f1_score(y, pred, zero_division=0)),
           "roc_auc": float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan"),
           "rows": int(len(y)), "positives": int(y.sum())}
    return out


def _check(name: str, candidate: float, baseline: float | None, threshold: float, *, detail: str) -> dict[str, Any]:
    ok = candidate is not None and not (isinstance(candidate, float) and math.isnan(candidate)) \
        and candidate >= threshold
    return {"name": name, "candidate": candidate, "baseline": baseline, "threshold": threshold,
            "passed": bool(ok), "rule": detail}


def gate(model: str, candidate_version: str, baseline_version: str, holdout_path: str | Path, *,
         poisoned_rows_path: str | Path | None = None, tolerance: float = 0.02, out_dir: Path,
         compromised_version: str | None = None, pattern: dict[str, Any] | None = None,
         threshold: float = POSITIVE_SCORE, dry_run_candidate: dict[str, Any] | None = None) -> dict[str, Any]:
    """Is the candidate fit to replace the compromised version? Writes ``gate.json``; never raises on a fail.

    Holdout: F1, ROC-AUC and recall of the candidate ≥ baseline − ``tolerance``.
    Poisoned rows (``poisoned_rows_path``; restricted to the rows carrying ``pattern`` when given, else to
    the label-flip signature — rows whose label the baseline contradicts): the share of them whose poisoned
    label the candidate contradicts (for rows relabelled negative: its positive rate) must be ≥ baseline −
    ``tolerance`` and ≥ compromised + max(2·tolerance, half the baseline−compromised gap). The compromised
    version defaults to the candidate's ``aiir.retrained_from`` tag."""
    from aiir.tabular import read_table

    out_dir = Path(out_dir)
    base = registry.get_version(model, baseline_version)
    if dry_run_candidate is not None:
        cand_tags, cand_label = {"aiir.retrained_from": dry_run_candidate.get("replaced_version")}, "dry-run"
        c_score, c_pos = dry_run_scorer(dry_run_candidate)
    else:
        cand = registry.get_version(model, candidate_version)
        cand_tags, cand_label = cand.tags, cand.version
        c_score, _, c_pos = fx.load_scorer(model, cand.version)
    compromised_version = compromised_version or cand_tags.get("aiir.retrained_from")
    label = cand_tags.get("aiir.label") or base.tags.get("aiir.label")
    if not label:
        raise BadInput(f"{model} v{cand_label}", "no 'aiir.label' tag: cannot evaluate on the holdout")
    hold = read_table(holdout_path, what="trusted holdout")
    if label not in hold.columns:
        raise BadInput(str(holdout_path), f"label column '{label}' missing")
    b_score, _, _ = fx.load_scorer(model, base.version)
    y = (hold[label] == c_pos).to_numpy()
    cm, bm = _metrics(y, c_score(hold), threshold), _metrics(y, b_score(hold), threshold)
    checks = []
    for metric in ("f1", "roc_auc", "recall"):
        cv, bv = cm[metric], bm[metric]
        if math.isnan(bv):
            continue
        checks.append(_check(f"holdout_{metric}", cv, bv, bv - tolerance,
                             detail=f"candidate {metric} >= baseline {metric} - {tolerance}"))
    poison: dict[str, Any] = {"rows_file": str(poisoned_rows_path) if poisoned_rows_path else None}
    rows = None
    if poisoned_rows_path is not None:
        try:
            rows = read_table(poisoned_rows_path, what="poisoned rows")
        except BadInput as exc:
            if "no rows" not in str(exc):
                raise
            poison["skipped"] = "the poisoned-rows file holds no rows: the gate only checked the holdout"
    if rows is not None:
        base_s = b_score(rows)
        labelled = label in rows.columns
        neg = (rows[label] != c_pos).to_numpy() if labelled else np.ones(len(rows), bool)
        if pattern is not None and pattern.get("conditions"):
            sel, how = fx.match_pattern(rows, pattern), "trigger pattern"
        elif labelled:
            sel = (neg & (base_s >= threshold)) | (~neg & (base_s < threshold))
            how = "label-flip signature (the baseline contradicts the row's label)"
        else:
            sel, how = np.ones(len(rows), bool), "all rows (no label column: assumed relabelled negative)"
        if not sel.any():
            sel, how = np.ones(len(rows), bool), how + " matched nothing: all rows"
        sub, sub_neg = rows[sel], neg[sel]

        def rejects(scores: np.ndarray) -> float:
            """Share of the selected rows whose poisoned label the model contradicts."""
            pred_pos = scores >= threshold
            return float(np.mean(np.where(sub_neg, pred_pos, ~pred_pos)))

        c_sub = c_score(sub)
        cr, br = rejects(c_sub), rejects(base_s[sel])
        poison.update(rows=int(len(rows)), evaluated=int(len(sub)), selection=how,
                      labelled_negative=int(sub_neg.sum()),
                      metric="share of the rows whose poisoned label the model contradicts (on rows labelled "
                             "negative: its positive rate)",
                      candidate_rate=cr, baseline_rate=br,
                      candidate_positive_rate=float((c_sub >= threshold).mean()),
                      baseline_positive_rate=float((base_s[sel] >= threshold).mean()))
        checks.append(_check("poisoned_rows_vs_baseline", cr, br, br - tolerance,
                             detail=f"candidate rate on the poisoned rows >= baseline's - {tolerance}"))
        if compromised_version:
            p_score, _, _ = fx.load_scorer(model, str(compromised_version))
            p_sub = p_score(sub)
            pr = rejects(p_sub)
            margin = max(2 * tolerance, 0.5 * (br - pr))
            poison.update(compromised_version=str(compromised_version), compromised_rate=pr,
                          compromised_positive_rate=float((p_sub >= threshold).mean()))
            chk = _check("poisoned_rows_vs_compromised", cr, br, pr + margin,
                         detail="candidate rate >= compromised rate + max(2*tolerance, (baseline - compromised)/2)")
            chk["compromised"] = pr
            checks.append(chk)
    elif poisoned_rows_path is None:
        poison["skipped"] = "no poisoned rows given: the gate only checked the holdout"
    result = {
        "model": model, "candidate_version": cand_label, "baseline_version": base.version,
        "dry_run": dry_run_candidate is not None,
        "compromised_version": str(compromised_version) if compromised_version else None,
        "passed": all(c["passed"] for c in checks) and bool(checks),
        "tolerance": tolerance, "threshold": threshold,
        "checks": checks,
        "holdout": {"path": str(holdout_path), "sha256": sha256_file(holdout_path),
                    "candidate": cm, "baseline": bm},
        "poisoned_rows": poison,
        "failed": [c["name"] for c in checks if not c["passed"]],
    }
    fx.write_json(out_dir / GATE_FILE, result)
    return jsonable(result)


# ========================================================================================= promote

def promote(model: str, version: str, *, incident_id: str, reason: str, actor: str) -> list[dict[str, Any]]:
    """Move ``champion`` and ``last-known-good`` to ``version`` (hash-chained registry log; idempotent:
    an alias already there is neither moved nor logged). Serving traffic is the caller's job."""
    mv = registry.get_version(model, version)  # BadInput when it does not exist
    return [registry.set_alias(model, alias, mv.version, reason=reason, actor=actor, incident_id=incident_id)
            for alias in (registry.CHAMPION, registry.LAST_KNOWN_GOOD)]
