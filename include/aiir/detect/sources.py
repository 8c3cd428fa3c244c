"""Which source (feed) explains the anomaly: the suspected poison source.

For each source of the current batch (``--source-column``) the check gathers:

* the per-source poisoning signals computed elsewhere (label shift vs the same source in the reference,
  label consistency, duplicate and outlier excess within the source's rows);
* its own feature shift against the same source in the reference (share of features whose effect size
  reaches ``feature_effect`` *and* whose KS / chi-squared p-value is below ``feature_pvalue``);
* its volume change (share of rows vs the reference) and whether it is new;
* the *gain when removed*: how much of each dataset-level anomaly (label-rate ratio, duplicate and outlier
  excess, number of drifted features) disappears when the source is left out of both batches.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from aiir.detect.drift import (
    CATEGORICAL,
    NUMERICAL,
    category_counts,
    column_drift,
    finite_values,
    js_distance,
    normed_wasserstein,
)
from aiir.detect.findings import finding
from aiir.detect.signals import SEED, LabelInfo, _fmt, two_proportions
from aiir.detect.thresholds import max_severity, severity_rank

STRONG = ("label_shift", "label_consistency", "duplicates")


def _sample_idx(idx: np.ndarray, cap: int) -> np.ndarray:
    if len(idx) <= cap:
        return idx
    rng = np.random.default_rng(SEED)
    return np.sort(rng.choice(idx, size=cap, replace=False))


def feature_shift(ref_part: pd.DataFrame, cur_part: pd.DataFrame, features: list[str], types: dict[str, str],
                  effect_min: float, p_max: float) -> dict[str, Any]:
    rows = {}
    for c in features:
        if types.get(c) == NUMERICAL:
            u, v = finite_values(ref_part[c]), finite_values(cur_part[c])
            if u.size < 2 or v.size < 2:
                continue
            u.sort()
            v.sort()
            eff = normed_wasserstein(u, v)
            p = float(stats.ks_2samp(u, v, method="asymp").pvalue)
        elif types.get(c) == CATEGORICAL:
            _, rc, cc = category_counts(ref_part[c], cur_part[c])
            if rc.sum() == 0 or cc.sum() == 0:
                continue
            eff = js_distance(rc, cc)
            keep = (rc + cc) > 0
            table = np.vstack([rc[keep], cc[keep]])
            p = float(stats.chi2_contingency(table, correction=False)[1]) if table.shape[1] > 1 else 1.0
        else:
            continue
        rows[c] = {"effect": eff, "p": p, "shifted": bool(eff >= effect_min and p < p_max)}
    shifted = [c for c, r in rows.items() if r["shifted"]]
    return {"tested": len(rows), "shifted": shifted, "share": len(shifted) / len(rows) if rows else 0.0,
            "columns": rows}


def _excess_explained(stats_level: dict[str, Any] | None, name: str) -> float | None:
    """Share of the dataset-level excess rows (duplicates/outliers) that lie in source ``name``."""
    if not stats_level or not stats_level.get("per_source"):
        return None
    exp = stats_level["expected_share"]
    total = stats_level["count"] - stats_level["rows"] * exp
    s = stats_level["per_source"].get(name)
    if not s or total <= 0:
        return None
    return float(min(1.0, max(0.0, (s["count"] - s["rows"] * exp) / total)))


def source_anomaly(ref: pd.DataFrame, cur: pd.DataFrame, source: str, info: LabelInfo | None,
                   features: list[str], types: dict[str, str], drift_rows: list[dict[str, Any]],
                   label_stats: dict[str, Any] | None, consistency_stats: dict[str, Any] | None,
                   dup_stats: dict[str, Any] | None, outlier_stats: dict[str, Any] | None,
                   t: dict[str, Any], only: list[str] | None = None
                   ) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """Findings (kind ``source_anomaly``), suspect sources (most suspicious first), per-source statistics.

    Strong signals (label shift not explained by the features, label inconsistency, duplicate injection)
    are judged per source against the same source in the reference. Weak signals (feature shift,
    outliers) only count when the source is disproportionate: its feature-shift share exceeds the other
    sources' median by ``feature_shift_share``, or it holds at least half of the excess outlier rows. A
    phenomenon spread over every source is reported by the dataset-level findings, not blamed on a source.
    """
    st = t["source_anomaly"]
    cur_groups = cur.groupby(source, sort=True, dropna=False, observed=True).indices
    ref_groups = ref.groupby(source, sort=True, dropna=False, observed=True).indices if source in ref.columns else {}
    tested = {s: idx for s, idx in cur_groups.items() if len(idx) >= st["min_rows"]}
    if only is not None:
        keep = set(only)
        tested = {s: idx for s, idx in tested.items() if _fmt(s) in keep}
    if len(cur_groups) < 2:
        return [], [], {"skipped": "fewer than two sources in current"}
    if not tested:
        return [], [], {"skipped": f"none of the {len(cur_groups):,} sources has at least {st['min_rows']} rows"}
    n_cur, n_ref = len(cur), len(ref)
    drifted_cols = [r["column"] for r in drift_rows if r.get("drifted")]
    dup_level = (dup_stats or {}).get("reported_level") or "near"
    dup_level_stats = ((dup_stats or {}).get("levels") or {}).get(dup_level)
    out_overall = (outlier_stats or {}).get("overall")
    out_level = dict(out_overall, per_source=outlier_stats["per_source"]) if out_overall else None
    label_overall = (label_stats or {}).get("overall") or {}
    label_top = label_overall.get("top") if isinstance(label_overall, dict) else None

    # pass 1: feature shift of every source (vs the same source in the reference, else the whole reference)
    shifts: dict[str, Any] = {}
    for s, idx in tested.items():
        ridx = ref_groups.get(s)
        same = ridx is not None and len(ridx) >= st["min_rows"]
        ref_idx = _sample_idx(ridx if same else np.arange(n_ref), st["max_rows_per_source"])
        cur_idx = _sample_idx(idx, st["max_rows_per_source"])
        shifts[_fmt(s)] = feature_shift(ref.iloc[ref_idx], cur.iloc[cur_idx], features, types,
                                        st["feature_effect"], st["feature_pvalue"] / max(1, len(tested)))

    per: dict[str, Any] = {}
    for s, idx in tested.items():
        name = _fmt(s)
        ridx = ref_groups.get(s)
        same = ridx is not None and len(ridx) >= st["min_rows"]
        signals: dict[str, str] = {}
        info_s: dict[str, Any] = {"rows": len(idx), "baseline": "same source in reference" if same
                                  else "whole reference"}
        # volume / new source
        if ref_groups:
            k_ref = 0 if ridx is None else len(ridx)
            z, p = two_proportions(k_ref, n_ref, len(idx), n_cur)
            ratio = (len(idx) / n_cur) / (k_ref / n_ref) if k_ref else math.inf
            info_s["volume"] = {"ref_share": k_ref / n_ref, "cur_share": len(idx) / n_cur, "ratio": ratio, "p": p}
            if k_ref == 0:
                signals["new_source"] = "medium"
            elif ratio >= st["volume_ratio"] and p < st["volume_alpha"]:
                signals["volume"] = "medium"
        # feature shift, relative to the other sources
        fs = shifts[name]
        others = [v["share"] for k, v in shifts.items() if k != name]
        others_median = float(np.median(others)) if others else 0.0
        info_s["feature_shift"] = {"share": fs["share"], "shifted": fs["shifted"], "tested": fs["tested"],
                                   "other_sources_median_share": others_median}
        if fs["tested"] and fs["share"] >= st["feature_shift_share"] \
                and fs["share"] - others_median >= st["feature_shift_share"] / 2:
            signals["feature_shift"] = "medium"
        # signals computed by the other checks
        ls = ((label_stats or {}).get("per_source") or {}).get(name)
        explained = bool(ls and (ls.get("adjusted") or {}).get("explained"))
        if ls and ls.get("severity") and ls["severity"] != "low" and not explained:
            signals["label_shift"] = ls["severity"]
            info_s["label"] = {k: ls["top"][k] for k in ("class", "ref_rate", "cur_rate", "ratio", "p")}
        lc = ((consistency_stats or {}).get("groups") or {}).get(name)
        if lc and lc.get("severity"):
            signals["label_consistency"] = lc["severity"]
            info_s["label_consistency"] = {k: lc[k] for k in ("band_rows", "observed_positives",
                                                              "expected_positives", "ratio", "p")}
        gains: dict[str, float] = {}
        if dup_level_stats:
            ds = dup_level_stats["per_source"].get(name)
            share = _excess_explained(dup_level_stats, name)
            if share is not None:
                gains["duplicates"] = share
            if ds and ds.get("severity"):
                signals["duplicates"] = ds["severity"]
                info_s["duplicates"] = {k: ds[k] for k in ("count", "share", "expected_share", "p")}
        if out_level:
            os_ = out_level["per_source"].get(name)
            share = _excess_explained(out_level, name)
            if share is not None:
                gains["outliers"] = share
            if os_ and os_.get("severity") and severity_rank(os_["severity"]) >= severity_rank("medium") \
                    and (share or 0) >= 0.5:
                signals["outliers"] = "medium"
                info_s["outliers"] = {k: os_[k] for k in ("count", "share", "expected_share", "p")}
        # gain when removed: label-rate ratio and drifted features without this source
        keep_cur = np.ones(n_cur, dtype=bool)
        keep_cur[idx] = False
        keep_ref = np.ones(n_ref, dtype=bool)
        if ridx is not None:
            keep_ref[ridx] = False
        if info is not None and info.kind == "classes" and label_top and label_overall.get("significant"):
            cls = label_top["class"]
            r_all = (ref[info.column] == cls).to_numpy()
            c_all = (cur[info.column] == cls).to_numpy()
            before = math.log(label_top["ratio"])
            kr, nr = r_all[keep_ref].sum(), keep_ref.sum()
            kc, nc = c_all[keep_cur].sum(), keep_cur.sum()
            after = math.log(max(1.0, ((kc + .5) / (nc + 1)) / ((kr + .5) / (nr + 1)),
                                 ((kr + .5) / (nr + 1)) / ((kc + .5) / (nc + 1)))) if nr and nc else before
            gains["label_shift"] = 1 - after / before if before > 0 else 0.0
        if drifted_cols and keep_cur.sum() >= st["min_rows"]:
            cur_rest = cur.iloc[_sample_idx(np.flatnonzero(keep_cur), st["max_rows_per_source"] * 5)]
            still = sum(1 for c in drifted_cols
                        if column_drift(c, ref[c], cur_rest[c], types.get(c, NUMERICAL), t).get("drifted"))
            gains["drift"] = 1 - still / len(drifted_cols)
        info_s["gain_when_removed"] = gains
        strong = [k for k in STRONG if severity_rank(signals.get(k)) >= severity_rank("high")]
        if len(strong) >= 2:
            sev = "critical"
        elif strong:
            sev = "high"
        elif signals:
            sev = "medium"
        else:
            sev = None
        info_s["signals"] = signals
        info_s["severity"] = sev
        info_s["score"] = sum(severity_rank(v) for v in signals.values()) + sum(max(0.0, g) for g in gains.values())
        per[name] = info_s

    findings = []
    flagged = sorted((n for n, v in per.items() if v["severity"]),
                     key=lambda n: (-severity_rank(per[n]["severity"]), -per[n]["score"]))
    for name in flagged:
        v = per[name]
        sig = ", ".join(f"{k} ({s})" for k, s in v["signals"].items())
        gains = ", ".join(f"{k} {g:.0%}" for k, g in v["gain_when_removed"].items())
        findings.append(finding(
            "source_anomaly", v["severity"],
            (f"source '{name}' is a suspected poison source: {sig}" if severity_rank(v["severity"]) >= 3
             else f"source '{name}' deviates from the reference: {sig}"),
            columns=v["feature_shift"]["shifted"] + ([info.column] if info and (
                "label_shift" in v["signals"] or "label_consistency" in v["signals"]) else []),
            sources=[name], statistic=("anomaly_score", round(v["score"], 4)),
            threshold=None,
            detail=f"{v['rows']} current rows (baseline: {v['baseline']}); signals: {sig}"
                   + (f"; share of the dataset-level anomaly removed when this source is left out: {gains}"
                      if gains else ""),
            evidence={k: v[k] for k in v if k not in ("severity",)}))
    return findings, flagged, {"per_source": per, "max_severity": max_severity(v["severity"] for v in per.values())}


# ------------------------------------------------------------------ calibrated per-source feature shift

_SQ12 = math.sqrt(12.0)
_SQ180 = math.sqrt(180.0)


def _source_codes(ref: pd.DataFrame, cur: pd.DataFrame, source: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    cur_codes, uniques = pd.factorize(cur[source].astype(str), sort=True)
    names = [str(u) for u in uniques]
    if source in ref.columns:
        ref_codes = pd.Index(names).get_indexer(ref[source].astype(str))
    else:
        ref_codes = np.full(len(ref), -1)
    return ref_codes.astype(np.int64), cur_codes.astype(np.int64), names


def source_feature_shift(ref: pd.DataFrame, cur: pd.DataFrame, source: str, features: list[str],
                         types: dict[str, str], *, tolerance: float = 0.25, min_rows: int = 30,
                         max_categories: int = 20, only: list[str] | None = None) -> dict[str, Any]:
    """Feature drift of each source against the reference AND against the other sources, as calibrated tests.

    Every numerical feature is mapped through the reference's distribution (probability integral
    transform on 2,001 reference quantiles, so heavy tails and units do not matter) into two unit-variance scores: location
    ``(u - 1/2) sqrt 12`` and spread ``((u - 1/2)^2 - 1/12) sqrt 180``; every categorical feature into the
    standardised indicator of each of its ``max_categories`` most common reference values. For source s the
    statistic is a difference-in-differences of the score means: (s now − s in the reference) − the drift
    shared by the sources (the median of every source's own shift, so one deviant source does not move it;
    with fewer than three sources each is judged against its own reference alone). Drift that moves every
    source alike cancels out, and a source's own shift stands out. H0 (per feature and score): |DiD| <= ``tolerance`` (in reference
    standard deviations); p from :func:`aiir.detect.stats.min_effect_p`, Bonferroni over scores and features.

    Returns ``{"tolerance", "per_source": {name: {"rows", "p", "top_feature", "features": {...}}}}``.
    """
    from aiir.detect.stats import bonferroni_min, group_sums, mean_se, min_effect_p, pit_fast, pit_grid

    ref_codes, cur_codes, names = _source_codes(ref, cur, source)
    k = len(names)
    counts = np.bincount(cur_codes, minlength=k)
    keep = set(only) if only is not None else None
    tested_idx = [j for j in range(k) if counts[j] >= min_rows and (keep is None or names[j] in keep)]
    per: dict[str, Any] = {names[j]: {"rows": int(counts[j]), "features": {}} for j in tested_idx}
    def scores():  # one feature's scores at a time: (feature, score name, reference values, current values)
        for f in features:
            if types.get(f) == NUMERICAL:
                r_all = pd.to_numeric(ref[f], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
                r = r_all[np.isfinite(r_all)]
                if r.size < min_rows or np.ptp(r) == 0:
                    continue
                grid = pit_grid(r)
                ur = pit_fast(grid, r_all) - 0.5
                uc = pit_fast(grid, pd.to_numeric(cur[f], errors="coerce").to_numpy(dtype="float64",
                                                                                     na_value=np.nan)) - 0.5
                yield f, "location", ur * _SQ12, uc * _SQ12
                yield f, "spread", (ur ** 2 - 1 / 12) * _SQ180, (uc ** 2 - 1 / 12) * _SQ180
            elif types.get(f) == CATEGORICAL:
                vc = ref[f].value_counts(dropna=True)
                n_ref = float(len(ref))
                top = pd.Index(vc.index[:max_categories])
                code_r, code_c = top.get_indexer(ref[f]), top.get_indexer(cur[f])  # one pass per side
                for j, (value, cnt) in enumerate(vc.head(max_categories).items()):
                    p0 = cnt / n_ref
                    if p0 <= 0 or p0 >= 1:
                        continue
                    sd = math.sqrt(p0 * (1 - p0))
                    yield (f, f"== {_fmt(value)}", ((code_r == j).astype(float) - p0) / sd,
                           ((code_c == j).astype(float) - p0) / sd)

    for f, sname, rv, cv in scores():
        rs = group_sums(rv, ref_codes, k)
        cs = group_sums(cv, cur_codes, k)
        r_all = mean_se(rs.sum(axis=0))
        deltas: dict[int, tuple[float, float]] = {}  # source -> (shift vs the reference, its variance)
        for j in tested_idx:
            _, m_c, v_c = mean_se(cs[j])
            if not math.isfinite(m_c):
                continue
            _, m_r, v_r = mean_se(rs[j]) if rs[j][0] >= min_rows else r_all  # a new source: the whole reference
            deltas[j] = (m_c - m_r, v_c + v_r)
        known = [j for j in deltas if rs[j][0] >= min_rows]
        if len(known) >= 3:
            # drift shared by the sources: the median of their shifts (one or a few deviant sources do not
            # move it), with the variance of a median of len(known) estimates
            g = float(np.median([deltas[j][0] for j in known]))
            vg = 1.571 * float(np.mean([deltas[j][1] for j in known])) / len(known)
        else:
            g, vg = 0.0, 0.0  # fewer than three sources: each is judged against its own reference
        for j, (d, var) in deltas.items():
            did, se = d - g, math.sqrt(var + vg)
            p = min_effect_p(did, se, tolerance)
            feat = per[names[j]]["features"].setdefault(f, {"scores": {}})
            feat["scores"][sname] = {"did": did, "se": se, "vs_reference": d, "shared_drift": g, "p": p}
    for j in tested_idx:
        v = per[names[j]]
        v["rows"] = int(counts[j])
        best_p, best_f = 1.0, None
        pf = []
        for f, feat in v["features"].items():
            sc = feat["scores"]
            feat["p"] = bonferroni_min(s["p"] for s in sc.values())
            top = max(sc, key=lambda s: abs(sc[s]["did"]))
            feat["effect"] = abs(sc[top]["did"])
            feat["score"] = top
            pf.append(feat["p"])
            if feat["p"] < best_p or best_f is None:
                best_p, best_f = feat["p"], f
        v["p"] = bonferroni_min(pf) if pf else 1.0
        v["top_feature"] = best_f
        v["tested"] = bool(pf)
    return {"tolerance": tolerance, "per_source": per}
