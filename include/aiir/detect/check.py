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
from aiir.detect.decision import RULE_KINDS, build_family, decide
from aiir.detect.drift import TESTED_TYPES, column_types, drift_table
from aiir.detect.findings import _clean, clip, finding, ladder
from aiir.detect.integrity import check_registry, load_registry
from aiir.detect.signals import SEED, duplicates, label_consistency, label_info, label_shift, outliers
from aiir.detect.sources import source_anomaly, source_feature_shift
from aiir.detect.stats import find_triggers
from aiir.detect.thresholds import load_thresholds, max_severity, severity_rank
from aiir.errors import BadInput
from aiir.hashing import sha256_file
from aiir.tabular import iter_table, read_table_sample, require_columns, table_columns

KIND_ORDER = ("integrity", "source_anomaly", "trigger", "label_shift", "duplicates", "schema", "outliers", "drift")
STATUSES = ("clean", "incident", "insufficient_data")


@dataclass
class CheckResult:
    status: str  # "clean" | "incident" | "insufficient_data"
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
            "reason": self.report.get("reason"),
            "suspect_rows": self.report.get("suspect_rows", {}).get("total", 0),
            "findings_by_severity": counts,
            "findings": [{"kind": f["kind"], "severity": f["severity"], "title": f["title"],
                          "sources": f["sources"]} for f in self.findings],
            "paths": self.paths,
        } | ({"sampling": self.report["sampling"]} if self.report.get("sampling") else {})


def _load(table: str | Path | pd.DataFrame, what: str, ignore: tuple[str, ...] | list[str] = (),
          max_rows: int = 0) -> tuple[pd.DataFrame, dict[str, Any], list[str], np.ndarray | None]:
    """(frame without the ``ignore`` columns, metadata, every column name of the input, the file row number of
    each frame row when the frame is a bounded sample of a larger Parquet file, else None)."""
    if isinstance(table, pd.DataFrame):
        if table.shape[1] == 0 or table.shape[0] == 0:
            raise BadInput(what, f"{what} DataFrame is empty")
        return table, {"path": None, "rows": int(len(table)), "columns": int(table.shape[1]), "sha256": None}, \
            list(table.columns), None
    names = table_columns(table)
    # ignored Parquet columns are never read (less memory); a CSV is read whole, its ignored columns dropped
    exclude = tuple(ignore) if names is not None else ()
    df, row_numbers, total = read_table_sample(table, what=what, max_rows=max_rows, seed=SEED, exclude=exclude)
    all_names = names if names is not None else list(df.columns)
    meta = {"path": str(Path(table).resolve()), "rows": int(total), "columns": len(all_names),
            "sha256": sha256_file(table)}
    if row_numbers is not None:
        meta["analysed_rows"] = int(len(df))
    return df, meta, all_names, row_numbers


REPORT_PROCESS_MIN_ROWS = 200_000  # from this many rows (both sides) the HTML report renders in a second process
LABEL_THREAD_MIN_ROWS = 200_000  # from this many rows (both sides) label consistency runs in a second thread


class _Background:
    """``fn(*args)`` in a daemon thread; :meth:`result` joins it and returns (or raises) what it did, with
    the thread's own wall and CPU seconds in ``wall`` / ``cpu`` (:meth:`cpu_so_far` while it runs)."""

    def __init__(self, fn: Callable[..., Any], *args: Any):
        import threading

        self._out: list[Any] = []
        self.wall = self.cpu = 0.0
        self._clock: int | None = None
        self._done = threading.Event()

        def run() -> None:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                self._clock = time.pthread_getcpuclockid(threading.get_ident())
            except (AttributeError, OSError):  # not on every platform: cpu_so_far() then says 0 until done
                pass
            try:
                self._out.append((True, fn(*args)))
            except BaseException as exc:  # re-raised in the caller's thread
                self._out.append((False, exc))
            finally:
                self.wall = round(time.perf_counter() - t0, 3)
                self.cpu = round(time.thread_time() - c0, 3)
                self._done.set()

        self._thread = threading.Thread(target=run, name="aiir-check-background", daemon=True)
        self._thread.start()

    def cpu_so_far(self) -> float:
        if self._done.is_set() or self._clock is None:
            return self.cpu
        try:
            return time.clock_gettime(self._clock)
        except OSError:  # it has just ended
            return self.cpu

    def result(self) -> Any:
        self._thread.join()
        ok, value = self._out[0]
        if not ok:
            raise value
        return value


def _report_types(types: dict[str, str], features: list[str], label: str | None, info: Any) -> dict[str, str]:
    return {**{c: types[c] for c in features}, **({label: "categorical"} if info and info.kind == "classes" else {})}


def _start_report_process(ref: pd.DataFrame, cur: pd.DataFrame, types: dict[str, str], features: list[str],
                          label: str | None, info: Any, out: Path, say: Callable[[str], None]) -> Any:
    """On a large batch, start rendering the Evidently report in a second process (aiir.detect.html.ReportProcess)
    so its import and rendering overlap the statistics; None (render at the end, here) on a small batch, when
    Evidently is already imported in this process, or if the process cannot be started."""
    import sys

    if len(ref) + len(cur) < REPORT_PROCESS_MIN_ROWS or "evidently" in sys.modules:
        return None
    try:
        from aiir.detect.html import ReportProcess

        proc = ReportProcess(ref, cur, _report_types(types, features, label, info), out / "drift_report.html")
    except Exception as exc:  # e.g. a column Parquet cannot hold: the report is rendered here at the end
        say(f"drift report: no second process ({type(exc).__name__}: {str(exc)[:200]}); rendering at the end")
        return None
    say("drift report: rendering in a second process while the statistics run")
    return proc


def _start_contract_process(ref: pd.DataFrame, cur: pd.DataFrame, t: dict[str, Any], all_types: dict[str, str],
                            meta: dict[str, Any], say: Callable[[str], None]) -> Any:
    """On a large batch with an inferred contract, build and GX-validate the suite in a second process
    (aiir.detect.gx_process.ContractProcess) so GX's import and validation overlap the statistics; None
    (everything here, at the contract stage) on a small batch, when GX is already imported in this process,
    or if the process cannot be started."""
    import sys

    if len(ref) + len(cur) < REPORT_PROCESS_MIN_ROWS or "great_expectations" in sys.modules:
        return None
    try:
        from aiir.detect.gx_process import ContractProcess, gx_sample

        spec = contract_mod.infer_spec(ref, t, all_types)
        proc = ContractProcess(spec, gx_sample(cur, t["contract"]["gx_max_rows"] or None), meta=meta)
    except Exception as exc:  # the contract stage then does it all here
        say(f"data contract: no second process ({type(exc).__name__}: {str(exc)[:200]}); validating at the end")
        return None
    say("data contract: Great Expectations builds and validates the inferred suite in a second process")
    return proc


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
    # this process's CPU per stage (steadier than wall time on a busy machine); a stage run by a second thread
    # (label consistency on a large batch) has that thread's own CPU, and the stages meanwhile the rest
    cpu_timings: dict[str, float] = {}
    background: list[_Background] = []

    def cpu() -> float:
        return time.process_time() - sum(b.cpu_so_far() for b in background)

    clock, cpu_clock = time.perf_counter(), cpu()

    def lap(name: str) -> None:
        nonlocal clock, cpu_clock
        now, cpu_now = time.perf_counter(), cpu()
        timings[name] = round(now - clock, 3)
        cpu_timings[name] = round(cpu_now - cpu_clock, 3)
        clock, cpu_clock = now, cpu_now

    # ---- validate every input before any heavy work
    t = load_thresholds(thresholds)
    contract_data = contract_mod.load_contract(contract) if contract is not None else None
    if registry is not None:
        load_registry(registry)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInput(str(out), "--out must be a directory, got a file")
    skip = [c for c in ignore_columns if c not in (label_column, source_column)]  # those are refused below
    bound = int(t["decision"]["max_rows"] or 0)
    ref, ref_meta, ref_names, _ref_rows = _load(reference, "reference", skip, bound)
    cur, cur_meta, cur_names, cur_rows = _load(current, "current", skip, bound)
    ref_where = ref_meta["path"] or "reference"
    cur_where = cur_meta["path"] or "current"
    require_columns(ref, {"--label-column": label_column}, where=ref_where)
    require_columns(cur, {"--label-column": label_column, "--source-column": source_column}, where=cur_where)
    if label_column is not None and label_column == source_column:
        raise BadInput("--source-column", "must differ from --label-column")
    for col in ignore_columns:
        if col not in ref_names:
            require_columns(ref, {"--ignore-column": col}, where=ref_where)
        if col in (label_column, source_column):
            raise BadInput("--ignore-column", f"'{col}' is the label or source column; it cannot be ignored")
    if ignore_columns:
        ref = ref.drop(columns=[c for c in ignore_columns if c in ref.columns])
        cur = cur.drop(columns=[c for c in ignore_columns if c in cur.columns])
    if contract_data is not None:  # GX's own checks of a supplied suite, before any progress line
        contract_mod.build_suite(contract_data, str(contract))
    out.mkdir(parents=True, exist_ok=True)
    lap("read")
    # progress starts once every input is known to be usable: a bad input gives exactly one stderr line
    say(f"reference {ref_meta['path'] or '(DataFrame)'}: {ref_meta['rows']:,} rows x {ref_meta['columns']} columns; "
        f"current {cur_meta['path'] or '(DataFrame)'}: {cur_meta['rows']:,} rows x {cur_meta['columns']} columns")
    sampling = {side: {"rows": m["rows"], "analysed_rows": m["analysed_rows"], "seed": SEED,
                       "note": f"statistics on a seeded uniform {m['analysed_rows']:,}-row sample of "
                               f"{m['rows']:,} rows (read batch by batch, bounded memory; [decision] max_rows)"}
                for side, m in (("reference", ref_meta), ("current", cur_meta)) if "analysed_rows" in m}
    for side, v in sampling.items():
        say(f"{side}: {v['note']}")

    exclude = [c for c in (label_column, source_column) if c is not None]
    types = column_types(ref, t, exclude=exclude)
    features = [c for c, ct in types.items() if ct in TESTED_TYPES and c in cur.columns]
    all_types = column_types(ref, t)
    findings: list[dict[str, Any]] = []
    paths: dict[str, str] = {}
    dt = t["decision"]
    contract_meta = {"inferred_from": ref_meta["path"], "reference_sha256": ref_meta["sha256"],
                     "rows": ref_meta["rows"], "inferred_at": datetime.now(UTC).isoformat(timespec="seconds"),
                     "column_types": all_types}
    contract_proc = _start_contract_process(ref, cur, t, all_types, contract_meta, say) \
        if contract_data is None else None

    # ---- too few rows to judge: the rules (contract, digests) still apply, the statistics do not
    too_few = len(cur) < dt["min_rows"] or len(ref) < dt["min_rows"]
    reason = None
    drift_rows: list[dict[str, Any]] = []
    info = label_stats = cons_stats = dup_stats = out_stats = src_stats = shift_stats = report_proc = None
    triggers: list[dict[str, Any]] = []
    suspect_masks: dict[str, np.ndarray] = {}
    source_names: list[str] = []
    source_note: dict[str, Any] = {}
    if too_few:
        which = "current" if len(cur) < dt["min_rows"] else "reference"
        reason = (f"too few rows to judge: {which} has {len(cur) if which == 'current' else len(ref)} rows, "
                  f"the statistical checks need at least {dt['min_rows']} ([decision] min_rows)")
        say(reason)
    else:
        if label_column is not None:
            info = label_info(ref, cur, label_column, t)
        report_proc = _start_report_process(ref, cur, types, features, label_column, info, out, say) \
            if html else None
        # ---- drift
        say(f"testing drift of {len(features)} features")
        drift_rows = drift_table(ref, cur, features, thresholds=t, types=types)
        f = _drift_finding(drift_rows, t)
        if f:
            findings.append(f)
        lap("drift")

        if source_column is not None:
            counts = cur[source_column].astype(str).value_counts()
            big = counts[counts >= t["source_anomaly"]["min_rows"]]
            source_names = [str(x) for x in big.index[: dt["max_sources_analysed"]]]
            source_note = {"distinct": int(len(counts)), "analysed": len(source_names),
                           "below_min_rows": int((counts < t["source_anomaly"]["min_rows"]).sum()),
                           "beyond_max_sources_analysed": int(max(0, len(big) - dt["max_sources_analysed"])),
                           "min_rows": t["source_anomaly"]["min_rows"]}
            if len(counts) < 2:
                source_note["reason"] = "only one source in current: sources are compared with the reference only"
            elif not source_names:
                source_note["reason"] = (f"none of the {len(counts):,} sources has at least "
                                         f"{t['source_anomaly']['min_rows']} rows; sources are not judged one by one")
            elif source_note["beyond_max_sources_analysed"]:
                source_note["reason"] = (f"{len(big):,} sources have enough rows; the {dt['max_sources_analysed']:,} "
                                         "largest are analysed one by one ([decision] max_sources_analysed)")

        # ---- labels, duplicates, outliers, triggers, sources. On a large batch the label-consistency model
        # (fit and scoring release the GIL) runs in a second thread while duplicates, outliers, triggers and
        # the per-source feature shift run here; the findings are collected in the same order either way.
        cons_src = source_column if source_names else None
        f_lc: list[dict[str, Any]] = []
        f_ls: list[dict[str, Any]] = []
        lc_job = None
        run_lc = label_column is not None and info.kind == "classes" and t["label_consistency"]["enabled"]
        if run_lc and len(ref) + len(cur) >= LABEL_THREAD_MIN_ROWS:
            say("testing label consistency with a reference-trained model (second thread)")
            # the model's libraries are imported here first: the thread imports nothing, so no two threads ever
            # import at once (concurrent imports can deadlock: docs/detection.md, "Cost")
            import sklearn.ensemble  # noqa: F401
            import sklearn.isotonic  # noqa: F401
            import sklearn.metrics  # noqa: F401
            import threadpoolctl  # noqa: F401

            lc_job = _Background(label_consistency, ref, cur, info, features, types, cons_src, t)
            background.append(lc_job)
        elif label_column is not None:
            say(f"testing label shift of '{clip(label_column, 80)}'")
            if run_lc:
                say("testing label consistency with a reference-trained model")
                f_lc, cons_stats, mask = label_consistency(ref, cur, info, features, types, cons_src, t)
                if mask.any():
                    suspect_masks["label_consistency"] = mask
                lap("label_consistency")
            f_ls, label_stats = label_shift(ref, cur, info, cons_src, t, consistency=cons_stats)
            lap("label_shift")

        # ---- duplicates and outliers
        say("looking for exact and near-duplicate injection")
        f_dup, dup_stats, mask = duplicates(ref, cur, features, types, source_column, t)
        if f_dup:
            suspect_masks["duplicates"] = mask
        lap("duplicates")
        say("comparing the outlier share")
        f_out, out_stats, mask = outliers(ref, cur, features, types, source_column, t)
        if f_out:
            suspect_masks["outliers"] = mask
        lap("outliers")

        # ---- candidate triggers (point masses)
        say("looking for trigger values (point masses the reference lacks)")
        triggers = find_triggers(ref, cur, [c for c in features if types.get(c) == "numerical"],
                                 label=label_column if info is not None and info.kind == "classes" else None,
                                 source=source_column, alpha=dt["trigger_alpha"], min_count=dt["trigger_min_count"],
                                 min_ratio=dt["trigger_min_ratio"], context=features)
        lap("triggers")

        # ---- sources
        f_src: list[dict[str, Any]] = []
        if source_column is not None and source_names:
            say(f"analysing {len(source_names):,} sources in '{clip(source_column, 80)}'")
            shift_stats = source_feature_shift(ref, cur, source_column, features, types,
                                               tolerance=dt["feature_tolerance"],
                                               min_rows=t["source_anomaly"]["min_rows"], only=source_names)
            if lc_job is not None:
                lap("source_feature_shift")
        if lc_job is not None:
            say("waiting for the label-consistency model (second thread)")
            try:
                f_lc, cons_stats, mask = lc_job.result()
            except Exception as exc:  # run it here instead: the same model, the same answer
                say(f"the label-consistency thread failed ({type(exc).__name__}: {str(exc)[:200]}); "
                    "running it in this thread")
                background.clear()
                lc_job.cpu = 0.0
                f_lc, cons_stats, mask = label_consistency(ref, cur, info, features, types, cons_src, t)
            if mask.any():
                suspect_masks["label_consistency"] = mask
            lap("label_consistency_wait")
            timings["label_consistency"], cpu_timings["label_consistency"] = lc_job.wall, lc_job.cpu
            say(f"testing label shift of '{clip(label_column, 80)}'")
            f_ls, label_stats = label_shift(ref, cur, info, cons_src, t, consistency=cons_stats)
            lap("label_shift")
        if source_column is not None and source_names:
            f_src, _suspects, src_stats = source_anomaly(
                ref, cur, source_column, info, features, types, drift_rows, label_stats,
                cons_stats, dup_stats, out_stats, t, only=source_names)
            lap("sources")
        elif source_column is not None:
            src_stats = {"skipped": source_note.get("reason")}
        findings += f_lc + f_ls + f_dup + f_out + f_src

    # ---- contract (Great Expectations)
    contract_path = out / "contract.json"
    sample_result, validated_in = None, "this process"
    if contract_proc is not None:
        say("waiting for the data contract's validation (Great Expectations, second process)")
        try:
            contract_data, sample_result = contract_proc.result()
            validated_in = "second process"
        except Exception as exc:  # infer and validate here instead
            say(f"the contract process failed ({str(exc)[:200]}); validating in this process")
    inferred = contract is None
    if contract_data is None:
        say("inferring the data contract (Great Expectations suite) from the reference")
        contract_data = contract_mod.infer_contract(ref, t, all_types, meta=contract_meta)
    say("validating current against the contract")
    batches = None
    if cur_rows is not None:  # cur is a sample of a larger file: null / range / domain counted over every row
        def batches(cols: list[str]):
            return iter_table(current, columns=[c for c in cols if c in cur_names])
    gx_result = contract_mod.validate(cur, contract_data, where=str(contract) if contract else "contract",
                                      max_rows=t["contract"]["gx_max_rows"] or None, rows=cur_meta["rows"],
                                      batches=batches, sample_result=sample_result)
    contract_path.write_text(json.dumps(contract_data, indent=2, default=str))
    gx_path = out / "gx_validation.json"
    gx_path.write_text(json.dumps(gx_result, indent=2, default=str))
    paths.update(contract=str(contract_path), gx_validation=str(gx_path))
    findings += contract_mod.findings_from_validation(gx_result, list(cur.columns), t)
    lap("contract")

    # ---- artifact integrity
    artifacts = None
    if registry is not None:
        say(f"verifying artifact digests in {registry}")
        fs, artifacts = check_registry(registry)
        findings += fs
        lap("integrity")

    # ---- the decision
    open_at = severity_rank(t["incident"]["open_incident_at"])
    rule_findings = [x for x in findings if x["kind"] in RULE_KINDS and severity_rank(x["severity"]) >= open_at]
    family = {} if too_few else build_family(
        ref=ref, cur=cur, t=t, label=label_column, source=source_column, info=info, label_stats=label_stats,
        cons_stats=cons_stats, dup_stats=dup_stats, out_stats=out_stats, shift_stats=shift_stats,
        triggers=triggers, source_names=source_names)
    decision = decide(family, rule_findings, t)
    findings = _apply_decision(findings, decision, triggers, shift_stats, src_stats, cons_stats, info, t)
    suspect_sources = decision["suspect_sources"]
    for i, trig in enumerate(triggers):
        if f"trigger:{i + 1}" in decision["rejected"] or (trig.get("sources") or {}).get("top") in suspect_sources:
            suspect_masks["trigger"] = suspect_masks.get("trigger", np.zeros(len(cur), dtype=bool)) | trig["mask"]
    lap("decision")

    # ---- suspect rows
    suspect_rows: dict[str, Any] = {"total": 0}
    if suspect_masks:
        any_mask = np.zeros(len(cur), dtype=bool)
        for m in suspect_masks.values():
            any_mask |= m
        idx = np.flatnonzero(any_mask)
        suspect_rows = {"total": int(idx.size),
                        "by_signal": {k: int(m.sum()) for k, m in suspect_masks.items()}}
        table = pd.DataFrame({"row": idx if cur_rows is None else cur_rows[idx]})  # row number in the file
        if source_column is not None:
            src = cur[source_column].iloc[idx].astype(str).to_numpy()
            table["source"] = src
            vc = pd.Series(src).value_counts()
            suspect_rows["by_source"] = {clip(k, dt["max_text_chars"]): int(v)
                                         for k, v in vc.head(dt["max_sources_reported"]).items()}
            if len(vc) > dt["max_sources_reported"]:
                suspect_rows["by_source_omitted"] = int(len(vc) - dt["max_sources_reported"])
        table["signals"] = [";".join(k for k, m in suspect_masks.items() if m[i]) for i in idx]
        rows_path = out / "suspect_rows.csv"
        from aiir.csvsafe import write_csv

        write_csv(table, rows_path)  # spreadsheet-safe cells (values come from the batch), 0600
        paths["suspect_rows"] = str(rows_path)
        suspect_rows["file"] = str(rows_path)

    findings.sort(key=lambda x: (-severity_rank(x["severity"]), KIND_ORDER.index(x["kind"])
                                 if x["kind"] in KIND_ORDER else 99))
    severity = max_severity(x["severity"] for x in findings)
    if decision["incident"]:
        status = "incident"
    elif too_few:
        status = "insufficient_data"
    else:
        status = "clean"

    # ---- human report
    html_info: dict[str, Any] | None = None
    if html and not too_few:
        say("rendering the Evidently drift report (sampled)" if report_proc is None else
            "waiting for the Evidently drift report (sampled, rendered by a second process)")
        try:
            from aiir.detect.html import drift_report_html

            html_info = None
            if report_proc is not None:
                try:
                    html_info = report_proc.result()
                except Exception as exc:  # render it here instead
                    say(f"the report process failed ({str(exc)[:200]}); rendering in this process")
            if html_info is None:
                html_info = drift_report_html(ref, cur, _report_types(types, features, label_column, info),
                                              out / "drift_report.html")
            paths["drift_report"] = html_info["path"]
        except Exception as exc:  # the report is a convenience; the decision does not depend on it
            html_info = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            say(f"drift report skipped: {html_info['error']}")
        lap("html")

    tested = [r for r in drift_rows if r.get("test")]
    limit = dt["max_sources_reported"]
    report = {
        "status": status,
        "severity": severity,
        "reason": reason,
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "reference": ref_meta,
        "current": cur_meta,
        "sampling": sampling or None,
        "label_column": label_column,
        "source_column": source_column,
        "findings": findings,
        "suspect_sources": suspect_sources,
        "suspect_details": _suspect_details(decision, shift_stats, triggers),
        "suspect_rows": suspect_rows,
        "decision": _bounded_decision(decision, limit),
        "contract": {"path": str(contract_path), "inferred": inferred,
                     "supplied": str(Path(contract).resolve()) if contract else None,
                     "success": gx_result.get("success"), "statistics": gx_result.get("statistics"),
                     "validated_in": validated_in},
        "drift": {"tested": len(tested), "drifted": [r["column"] for r in tested if r["drifted"]],
                  "skipped": {r["column"]: r["skipped"] for r in drift_rows if r.get("skipped")},
                  "table": drift_rows},
        "labels": {"shift": label_stats, "consistency": cons_stats} if label_column else None,
        "duplicates": dup_stats,
        "outliers": out_stats,
        "triggers": [{k: v for k, v in trig.items() if k != "mask"} for trig in triggers],
        "sources": ({**(src_stats or {}), "feature_shift": shift_stats, "summary": source_note}
                    if source_column is not None else None),
        "artifacts": artifacts,
        "html": html_info,
        "thresholds": t,
        "timings_s": timings,
        "timings_cpu_s": cpu_timings,
        "paths": {},
    }
    findings_path = out / "findings.json"
    paths["findings"] = str(findings_path)
    report["paths"] = paths
    report = _bound(_clean(report), dt["max_text_chars"], limit)
    findings_path.write_text(json.dumps(report, indent=2, default=str))
    return CheckResult(status=status, severity=severity, findings=report["findings"],
                       suspect_sources=report["suspect_sources"], paths=paths, report=report)


# ------------------------------------------------------------------------------- decision helpers

def _test_of(f: dict[str, Any]) -> str | None:
    """The family test a finding belongs to."""
    k = f["kind"]
    if f.get("sources") and k in ("source_anomaly", "label_shift"):
        return f"source:{f['sources'][0]}"
    if k == "label_shift":
        return "label_consistency" if f["statistic"]["name"] == "expected_observed_ratio" else "label_rate"
    if k in ("duplicates", "outliers"):
        return k
    return None


def _feature_effect_severity(effect: float) -> str:
    return ladder(effect, [("low", 0.0), ("medium", 0.5), ("high", 1.0), ("critical", 1.5)]) or "low"


def _apply_decision(findings: list[dict[str, Any]], decision: dict[str, Any], triggers: list[dict[str, Any]],
                    shift_stats: dict[str, Any] | None, src_stats: dict[str, Any] | None,
                    cons_stats: dict[str, Any] | None, info: Any, t: dict[str, Any]) -> list[dict[str, Any]]:
    """Attach p-values to the findings, add the findings of rejected tests that no signal reported, and cap
    the severity of statistical findings the decision did not support at ``medium``."""
    by_name = {x["name"]: x for x in decision["tests"]}
    rejected = set(decision["rejected"])
    tol = t["decision"]["feature_tolerance"]
    out: list[dict[str, Any]] = []
    seen_sources: set[str] = set()
    for f in findings:
        name = _test_of(f)
        test = by_name.get(name) if name else None
        if test is not None:
            f["decision"] = {"test": name, "p_value": test["p"], "p_adjusted": test["p_adjusted"],
                             "decisive": test["reject"]}
            if not test["reject"] and f["kind"] not in RULE_KINDS and severity_rank(f["severity"]) > 2:
                f["severity"] = "medium"
                f["detail"] = clip(f["detail"] + " Not significant at the check's family-wise level "
                                   f"(Holm-adjusted p={test['p_adjusted']:.2g}).", 2000)
        if f["kind"] == "source_anomaly" and f["sources"]:
            seen_sources.add(f["sources"][0])
        out.append(f)
    per_shift = (shift_stats or {}).get("per_source") or {}
    for test in decision["tests"]:
        if not test["reject"]:
            continue
        name = test["name"]
        if test["source"] is not None:
            src = test["source"]
            fs = per_shift.get(src) or {}
            shifted = sorted(((c, v) for c, v in (fs.get("features") or {}).items()
                              if v["p"] < t["decision"]["alpha"]), key=lambda cv: cv[1]["p"])
            comp = {**test["components"]["labels"], **test["components"]["features"]}
            signals = sorted((k for k, p in comp.items() if p < t["decision"]["alpha"]), key=lambda k: comp[k])
            sev = _feature_effect_severity(max((v["effect"] for _, v in shifted), default=0.0))
            for trig in triggers:
                if (trig.get("sources") or {}).get("top") == src:
                    skew = (trig.get("label") or {}).get("p", 1.0) < t["decision"]["alpha"]
                    sev = max_severity([sev, "critical" if skew else "high"])
            if src in seen_sources:
                for f in out:
                    if f["kind"] == "source_anomaly" and f["sources"] and f["sources"][0] == src:
                        f["columns"] = list(dict.fromkeys([c for c, _ in shifted][:20] + f["columns"]))
                        f["severity"] = max_severity([f["severity"], sev])
                        f.setdefault("evidence", {})["decision_components"] = test["components"]
                continue
            feats = ", ".join(f"{c} ({v['score']}, shift {v['effect']:.2f} sd beyond the other sources)"
                              for c, v in shifted[:5])
            out.append(finding(
                "source_anomaly", max_severity([sev, "medium"]),
                f"source '{clip(src, 80)}' deviates from the reference and from the other sources: "
                + (", ".join(signals) or "combined evidence"),
                columns=[c for c, _ in shifted], sources=[src], statistic=("p_value", test["p"]),
                threshold=t["decision"]["alpha"],
                detail=(f"Combined test of this source's label and feature evidence (Fisher over the two groups, "
                        f"Bonferroni within): p={test['p']:.2e}, Holm-adjusted {test['p_adjusted']:.2e} "
                        f"(family-wise alpha {t['decision']['alpha']}). "
                        + (f"Shifted features (difference-in-differences vs the other sources, tolerance {tol} sd): "
                           f"{feats}." if feats else "")),
                evidence={"decision_components": test["components"],
                          "feature_shift": {c: v for c, v in shifted[:20]}}))
            out[-1]["decision"] = {"test": name, "p_value": test["p"], "p_adjusted": test["p_adjusted"],
                                   "decisive": True}
        elif name.startswith("trigger:"):
            pass  # trigger findings are added below, every one of them
        elif not any((f.get("decision") or {}).get("test") == name for f in out):
            out.append(_dataset_finding(name, test, cons_stats, info, t))
    for i, trig in enumerate(triggers):
        name = f"trigger:{i + 1}"
        test = by_name.get(name)
        top = (trig.get("sources") or {}).get("top")
        decisive = bool(test and test["reject"]) or (top is not None and f"source:{top}" in rejected)
        lab = trig.get("label") or {}
        skew = lab.get("p", 1.0) < t["decision"]["alpha"]
        if decisive:
            sev = "critical" if skew and trig["share"] >= 0.005 else "high"
        else:
            sev = "low"
        conc = trig.get("sources") or {}
        atoms = ", ".join(f"{clip(a['feature'], 80)} = {a['value']!r} ({a['count']} rows, {a['expected']:.2g} expected)"
                          for a in trig["atoms"][:4])
        out.append(finding(
            "trigger", sev,
            f"candidate trigger: {trig['rows']} rows ({trig['share']:.2%}) share {clip(trig['description'], 120)}"
            + (f", {lab['rate']:.0%} labelled {lab['class']}" if skew else ""),
            columns=[c["feature"] for c in trig["rule"]], sources=[top] if top and conc.get("p", 1) < 0.001 else [],
            statistic=("p_value", trig["p"]), threshold=t["decision"]["trigger_alpha"],
            detail=(f"Point mass the reference lacks: {atoms}; "
                    f"label skew: {lab.get('class')!r} {lab.get('rate', 0):.1%} among these rows vs "
                    f"{lab.get('rest_rate', 0):.1%} elsewhere (p={lab.get('p', 1):.2e}); "
                    f"rows by source: {dict(list((conc.get('by_source') or {}).items())[:5])}."),
            evidence={"rule": trig["rule"], "rows": trig["rows"], "label": lab,
                      "sources": conc, "atoms": trig["atoms"][:10]}))
        if test:
            out[-1]["decision"] = {"test": name, "p_value": test["p"], "p_adjusted": test["p_adjusted"],
                                   "decisive": decisive}
    return out


def _dataset_finding(name: str, test: dict[str, Any], cons_stats: dict[str, Any] | None, info: Any,
                     t: dict[str, Any]) -> dict[str, Any]:
    kind = test["kind"]
    sev = "high"
    detail = (f"p={test['p']:.2e}, Holm-adjusted {test['p_adjusted']:.2e} at family-wise alpha "
              f"{t['decision']['alpha']}; components {test['components']}")
    title = f"{name}: significant at the family-wise level"
    cols: list[str] = []
    if name == "label_consistency" and cons_stats:
        g = cons_stats["groups"]["(all)"]
        top, rest = g["bands"]["top"], g["bands"]["rest"]
        worst = min((top, rest), key=lambda b: b["p"])
        sev = ladder(worst["ratio"], [("medium", 1.0), ("high", t["label_consistency"]["high_ratio"]),
                                      ("critical", t["label_consistency"]["critical_ratio"])]) or "medium"
        which = "most" if worst is top else "least"
        title = (f"labels disagree with the features across the batch: among the rows a reference model scores "
                 f"{which} '{info.minority}'-like, {worst['observed_positives']:.0f} positives observed, "
                 f"{worst['expected_positives']:.1f} expected")
        cols = [info.column]
    return finding(kind, sev, title, columns=cols, statistic=("p_value", test["p"]),
                   threshold=t["decision"]["alpha"], detail=detail) | {
        "decision": {"test": name, "p_value": test["p"], "p_adjusted": test["p_adjusted"], "decisive": True}}


def _suspect_details(decision: dict[str, Any], shift_stats: dict[str, Any] | None,
                     triggers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    per = (shift_stats or {}).get("per_source") or {}
    out = []
    alpha = decision["alpha"]
    for x in decision["tests"]:
        if not (x["reject"] and x["source"] is not None):
            continue
        src = x["source"]
        feats = sorted(((c, v) for c, v in (per.get(src, {}).get("features") or {}).items() if v["p"] < alpha),
                       key=lambda cv: cv[1]["p"])
        comp = {**x["components"]["labels"], **x["components"]["features"]}
        out.append({"source": src, "p_value": x["p"], "p_adjusted": x["p_adjusted"],
                    "signals": sorted((k for k, p in comp.items() if p < alpha), key=lambda k: comp[k]),
                    "features": [{"feature": c, "score": v["score"], "shift_sd": v["effect"], "p": v["p"]}
                                 for c, v in feats[:20]],
                    "triggers": [trig["rule"] for trig in triggers
                                 if (trig.get("sources") or {}).get("top") == src]})
    return out


def _bounded_decision(decision: dict[str, Any], limit: int) -> dict[str, Any]:
    tests = decision["tests"]
    out = dict(decision, tests=tests[: max(limit, 20)])
    if len(tests) > len(out["tests"]):
        out["tests_omitted"] = len(tests) - len(out["tests"])
    return out


def _bound(obj: Any, text_limit: int, list_limit: int, key: str | None = None) -> Any:
    """findings.json stays bounded: names cut to ``text_limit``, per-source tables to ``list_limit`` entries."""
    if isinstance(obj, dict):
        items = list(obj.items())
        extra = {}
        if key in ("per_source", "groups", "by_source") and len(items) > list_limit:
            def size(kv):
                v = kv[1]
                return -(v.get("rows") or v.get("cur_rows") or v.get("band_rows") or 0) if isinstance(v, dict) else 0
            items = sorted(items, key=size)[:list_limit]
            extra = {f"{key}_omitted": len(obj) - list_limit}
        out = {clip(k, text_limit): _bound(v, text_limit, list_limit, k) for k, v in items}
        out.update(extra)
        return out
    if isinstance(obj, list):
        if key in ("suspect_sources",):
            return [_bound(v, text_limit, list_limit, key) for v in obj[:list_limit]]
        return [_bound(v, text_limit, list_limit, key) for v in obj]
    if isinstance(obj, str):
        if key in ("title", "column", "columns", "sources", "suspect_sources", "source", "class", "drifted",
                   "feature", "shifted", "top", "top_feature"):
            return clip(obj, text_limit)
        return clip(obj, max(2000, text_limit)) if len(obj) > 2000 else obj
    return obj
