"""``run_check``: the data-integrity check behind ``aiir check``, the detection DAG and the poisoning playbook."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aiir.detect import contract as contract_mod
from aiir.detect.drift import TESTED_TYPES, column_types, drift_table
from aiir.detect.findings import _clean, finding
from aiir.detect.integrity import check_registry, load_registry
from aiir.detect.signals import duplicates, label_consistency, label_info, label_shift, outliers
from aiir.detect.sources import source_anomaly
from aiir.detect.thresholds import load_thresholds, max_severity, severity_rank
from aiir.errors import BadInput
from aiir.hashing import sha256_file
from aiir.tabular import read_table, require_columns

KIND_ORDER = ("integrity", "source_anomaly", "label_shift", "duplicates", "schema", "outliers", "drift")


@dataclass
class CheckResult:
    status: str  # "clean" | "incident"
    severity: str | None  # highest finding severity, None when there is no finding
    findings: list[dict[str, Any]]
    suspect_sources: list[str]
    paths: dict[str, str]
    report: dict[str, Any] = field(repr=False)

    @property
    def incident(self) -> bool:
        return self.status == "incident"

    def to_dict(self) -> dict[str, Any]:
        """The content of ``findings.json``."""
        return self.report

    def summary(self) -> dict[str, Any]:
        """The short JSON the CLI prints."""
        counts: dict[str, int] = {}
        for f in self.findings:
            counts[f["severity"]] = counts.get(f["severity"], 0) + 1
        return {
            "status": self.status, "severity": self.severity, "suspect_sources": self.suspect_sources,
            "suspect_rows": self.report.get("suspect_rows", {}).get("total", 0),
            "findings_by_severity": counts,
            "findings": [{"kind": f["kind"], "severity": f["severity"], "title": f["title"],
                          "sources": f["sources"]} for f in self.findings],
            "paths": self.paths,
        }


def _load(table: str | Path | pd.DataFrame, what: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    if isinstance(table, pd.DataFrame):
        if table.shape[1] == 0 or table.shape[0] == 0:
            raise BadInput(what, f"{what} DataFrame is empty")
        return table, {"path": None, "rows": int(len(table)), "columns": int(table.shape[1]), "sha256": None}
    df = read_table(table, what=what)
    return df, {"path": str(Path(table).resolve()), "rows": int(len(df)), "columns": int(df.shape[1]),
                "sha256": sha256_file(table)}


def _drift_finding(rows: list[dict[str, Any]], t: dict[str, Any]) -> dict[str, Any] | None:
    d = t["drift"]
    tested = [r for r in rows if r.get("test")]
    drifted = [r for r in tested if r["drifted"]]
    if not drifted:
        return None
    share = len(drifted) / len(tested)

    def strong(r: dict[str, Any]) -> bool:
        limit = d["strong_numeric_effect"] if r.get("effect_name") == "wasserstein_normed" \
            else d["strong_categorical_effect"]
        return (r.get("effect") or 0) >= limit

    strong_cols = [r["column"] for r in drifted if strong(r)]
    if share >= d["high_share"]:
        sev = "high"
    elif share >= d["medium_share"] or strong_cols:
        sev = "medium"
    else:
        sev = "low"
    drifted.sort(key=lambda r: -(r.get("effect") or 0))
    desc = "; ".join(f"{r['column']} ({r['test']} {r['statistic']:.3g}, effect {r['effect']:.3f})" for r in drifted[:10])
    return finding(
        "drift", sev, f"{len(drifted)} of {len(tested)} features drifted ({share:.0%})",
        columns=[r["column"] for r in drifted], statistic=("drifted_feature_share", share),
        threshold=d["high_share"],
        detail=f"Evidently default tests per feature; strong effect in: {', '.join(strong_cols) or 'none'}. "
               f"Most drifted: {desc}" + (" …" if len(drifted) > 10 else ""))


def run_check(reference: str | Path | pd.DataFrame, current: str | Path | pd.DataFrame,
              out_dir: str | Path, contract: str | Path | None = None, label_column: str | None = None,
              source_column: str | None = None, registry: str | Path | None = None,
              thresholds: str | Path | dict[str, Any] | None = None, html: bool = True,
              progress: Callable[[str], None] | None = None,
              ignore_columns: list[str] | tuple[str, ...] = ()) -> CheckResult:
    """Run every integrity check of CUR against REF and write the evidence to ``out_dir``.

    ``ignore_columns`` are left out of every check (provenance such as a batch id, which takes a new
    value in every batch by design); each must exist in the reference.

    Writes ``findings.json``, ``contract.json`` (the suite used), ``gx_validation.json``,
    ``drift_report.html`` (unless ``html=False``) and ``suspect_rows.csv`` (when rows are suspected).
    Raises :class:`aiir.errors.BadInput` for unusable inputs.
    """
    say = progress or (lambda _msg: None)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    # ---- validate every input before any heavy work
    t = load_thresholds(thresholds)
    contract_data = contract_mod.load_contract(contract) if contract is not None else None
    if registry is not None:
        load_registry(registry)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInput(str(out), "--out must be a directory, got a file")
    ref, ref_meta = _load(reference, "reference")
    cur, cur_meta = _load(current, "current")
    ref_where = ref_meta["path"] or "reference"
    cur_where = cur_meta["path"] or "current"
    require_columns(ref, {"--label-column": label_column}, where=ref_where)
    require_columns(cur, {"--label-column": label_column, "--source-column": source_column}, where=cur_where)
    if label_column is not None and label_column == source_column:
        raise BadInput("--source-column", "must differ from --label-column")
    for col in ignore_columns:
        require_columns(ref, {"--ignore-column": col}, where=ref_where)
        if col in (label_column, source_column):
            raise BadInput("--ignore-column", f"'{col}' is the label or source column; it cannot be ignored")
    if ignore_columns:
        ref = ref.drop(columns=list(ignore_columns))
        cur = cur.drop(columns=[c for c in ignore_columns if c in cur.columns])
    if contract_data is not None:  # GX's own checks of a supplied suite, before any progress line
        contract_mod.build_suite(contract_data, str(contract))
    out.mkdir(parents=True, exist_ok=True)
    lap("read")
    # progress starts once every input is known to be usable: a bad input gives exactly one stderr line
    say(f"reference {ref_meta['path'] or '(DataFrame)'}: {ref_meta['rows']:,} rows x {ref_meta['columns']} columns; "
        f"current {cur_meta['path'] or '(DataFrame)'}: {cur_meta['rows']:,} rows x {cur_meta['columns']} columns")

    exclude = [c for c in (label_column, source_column) if c is not None]
    types = column_types(ref, t, exclude=exclude)
    features = [c for c, ct in types.items() if ct in TESTED_TYPES and c in cur.columns]
    all_types = column_types(ref, t)
    findings: list[dict[str, Any]] = []
    paths: dict[str, str] = {}

    # ---- contract (Great Expectations)
    contract_path = out / "contract.json"
    if contract_data is None:
        say("inferring the data contract (Great Expectations suite) from the reference")
        contract_data = contract_mod.infer_contract(ref, t, all_types, meta={
            "inferred_from": ref_meta["path"], "reference_sha256": ref_meta["sha256"],
            "rows": ref_meta["rows"], "inferred_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "column_types": all_types})
        inferred = True
    else:
        inferred = False
    say("validating current against the contract")
    gx_result = contract_mod.validate(cur, contract_data, where=str(contract) if contract else "contract")
    contract_path.write_text(json.dumps(contract_data, indent=2, default=str))
    gx_path = out / "gx_validation.json"
    gx_path.write_text(json.dumps(gx_result, indent=2, default=str))
    paths.update(contract=str(contract_path), gx_validation=str(gx_path))
    findings += contract_mod.findings_from_validation(gx_result, list(cur.columns), t)
    lap("contract")

    # ---- drift
    say(f"testing drift of {len(features)} features")
    drift_rows = drift_table(ref, cur, features, thresholds=t, types=types)
    f = _drift_finding(drift_rows, t)
    if f:
        findings.append(f)
    lap("drift")

    # ---- labels
    info = label_stats = cons_stats = None
    suspect_masks: dict[str, np.ndarray] = {}
    if label_column is not None:
        say(f"testing label shift of '{label_column}'")
        info = label_info(ref, cur, label_column, t)
        if info.kind == "classes" and t["label_consistency"]["enabled"]:
            say("testing label consistency with a reference-trained model")
            fs, cons_stats, mask = label_consistency(ref, cur, info, features, types, source_column, t)
            findings += fs
            if mask.any():
                suspect_masks["label_consistency"] = mask
            lap("label_consistency")
        fs, label_stats = label_shift(ref, cur, info, source_column, t, consistency=cons_stats)
        findings += fs
        lap("label_shift")

    # ---- duplicates and outliers
    say("looking for exact and near-duplicate injection")
    fs, dup_stats, mask = duplicates(ref, cur, features, types, source_column, t)
    findings += fs
    if fs:
        suspect_masks["duplicates"] = mask
    lap("duplicates")
    say("comparing the outlier share")
    fs, out_stats, mask = outliers(ref, cur, features, types, source_column, t)
    findings += fs
    if fs:
        suspect_masks["outliers"] = mask
    lap("outliers")

    # ---- sources
    suspect_sources: list[str] = []
    src_stats: dict[str, Any] | None = None
    if source_column is not None:
        say(f"analysing sources in '{source_column}'")
        fs, suspect_sources, src_stats = source_anomaly(
            ref, cur, source_column, info, features, types, drift_rows, label_stats, cons_stats,
            dup_stats, out_stats, t)
        findings += fs
        lap("sources")

    # ---- artifact integrity
    artifacts = None
    if registry is not None:
        say(f"verifying artifact digests in {registry}")
        fs, artifacts = check_registry(registry)
        findings += fs
        lap("integrity")

    # ---- suspect rows
    suspect_rows: dict[str, Any] = {"total": 0}
    if suspect_masks:
        any_mask = np.zeros(len(cur), dtype=bool)
        for m in suspect_masks.values():
            any_mask |= m
        idx = np.flatnonzero(any_mask)
        suspect_rows = {"total": int(idx.size),
                        "by_signal": {k: int(m.sum()) for k, m in suspect_masks.items()}}
        table = pd.DataFrame({"row": idx})
        if source_column is not None:
            src = cur[source_column].iloc[idx].astype(str).to_numpy()
            table["source"] = src
            vc = pd.Series(src).value_counts()
            suspect_rows["by_source"] = {str(k): int(v) for k, v in vc.items()}
        table["signals"] = [";".join(k for k, m in suspect_masks.items() if m[i]) for i in idx]
        rows_path = out / "suspect_rows.csv"
        table.to_csv(rows_path, index=False)
        paths["suspect_rows"] = str(rows_path)
        suspect_rows["file"] = str(rows_path)

    findings.sort(key=lambda x: (-severity_rank(x["severity"]), KIND_ORDER.index(x["kind"])
                                 if x["kind"] in KIND_ORDER else 99))
    severity = max_severity(x["severity"] for x in findings)
    status = "incident" if severity_rank(severity) >= severity_rank(t["incident"]["open_incident_at"]) else "clean"

    # ---- human report
    html_info: dict[str, Any] | None = None
    if html:
        say("rendering the Evidently drift report (sampled)")
        try:
            from aiir.detect.html import drift_report_html

            html_info = drift_report_html(ref, cur, {**{c: types[c] for c in features},
                                                     **({label_column: "categorical"} if info and info.kind == "classes"
                                                        else {})},
                                          out / "drift_report.html")
            paths["drift_report"] = html_info["path"]
        except Exception as exc:  # the report is a convenience; the decision does not depend on it
            html_info = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            say(f"drift report skipped: {html_info['error']}")
        lap("html")

    tested = [r for r in drift_rows if r.get("test")]
    report = {
        "status": status,
        "severity": severity,
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "reference": ref_meta,
        "current": cur_meta,
        "label_column": label_column,
        "source_column": source_column,
        "findings": findings,
        "suspect_sources": suspect_sources,
        "suspect_rows": suspect_rows,
        "contract": {"path": str(contract_path), "inferred": inferred,
                     "supplied": str(Path(contract).resolve()) if contract else None,
                     "success": gx_result.get("success"), "statistics": gx_result.get("statistics")},
        "drift": {"tested": len(tested), "drifted": [r["column"] for r in tested if r["drifted"]],
                  "skipped": {r["column"]: r["skipped"] for r in drift_rows if r.get("skipped")},
                  "table": drift_rows},
        "labels": {"shift": label_stats, "consistency": cons_stats} if label_column else None,
        "duplicates": dup_stats,
        "outliers": out_stats,
        "sources": src_stats,
        "artifacts": artifacts,
        "html": html_info,
        "thresholds": t,
        "timings_s": timings,
        "paths": {},
    }
    findings_path = out / "findings.json"
    paths["findings"] = str(findings_path)
    report["paths"] = paths
    report = _clean(report)
    findings_path.write_text(json.dumps(report, indent=2, default=str))
    return CheckResult(status=status, severity=severity, findings=report["findings"],
                       suspect_sources=suspect_sources, paths=paths, report=report)
