"""Poisoning signals: label shift, label consistency, duplicate injection, outlier share.

Every function compares the current batch with the reference's *own* behaviour (its label rates, its
natural duplicate and outlier shares), so a dataset that naturally has duplicates or heavy tails does
not raise findings, and returns both findings and per-source statistics for :mod:`aiir.detect.sources`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from aiir.detect.drift import CATEGORICAL, NUMERICAL, category_counts, column_drift, finite_values
from aiir.detect.findings import finding, ladder
from aiir.detect.stats import (  # noqa: F401
    contrast_p,
    near_duplicate_keys,
    rate_ratio,
    row_key_levels,
    two_proportions,
)

SEED = 20240601  # every sample in the check is deterministic


# ------------------------------------------------------------------------------------------ helpers

def group_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes, keys) of ``values`` grouped as ``groupby(sort=True, dropna=False)`` groups them (NaN a group)."""
    codes, keys = pd.factorize(values, sort=True, use_na_sentinel=False)
    return codes, np.asarray(keys, dtype=object)


def group_counts(values: pd.Series, mask: np.ndarray) -> list[tuple[Any, int, int]]:
    """(key, rows, rows with ``mask``) per group of ``values``, in ``groupby(sort=True, dropna=False)`` order,
    by one factorisation and two bincounts instead of a per-group scan."""
    if isinstance(values.dtype, pd.CategoricalDtype):  # groupby's own rules for categories and NaN
        groups = values.to_frame("k").groupby("k", sort=True, dropna=False, observed=True).indices
        return [(key, len(idx), int(mask[idx].sum())) for key, idx in groups.items()]
    codes, keys = group_codes(values)
    n = np.bincount(codes, minlength=len(keys))
    k = np.bincount(codes, weights=mask.astype(np.float64), minlength=len(keys))
    return [(keys[j], int(n[j]), int(round(k[j]))) for j in range(len(keys)) if n[j]]

def ratio_severity(ratio: float, t: dict[str, Any]) -> str:
    return ladder(ratio, [("low", 1.0), ("medium", t["medium_ratio"]), ("high", t["high_ratio"]),
                          ("critical", t["critical_ratio"])]) or "low"


def _fmt(x: Any) -> str:
    return str(x.item() if hasattr(x, "item") else x)


@dataclass
class LabelInfo:
    """How the label is analysed: classes (classification) or numerical (regression)."""

    column: str
    kind: str  # "classes" | "numerical" | "unsupported"
    classes: list[Any] = field(default_factory=list)
    minority: Any = None


def label_info(ref: pd.DataFrame, cur: pd.DataFrame, label: str, t: dict[str, Any]) -> LabelInfo:
    keys, rc, cc = category_counts(ref[label], cur[label])
    if 2 <= len(keys) <= t["label_shift"]["max_classes"] or (len(keys) == 1):
        order = np.argsort(rc, kind="stable")
        present = [i for i in order if rc[i] > 0]
        minority = keys[present[0]] if present else keys[0]
        return LabelInfo(label, "classes", list(keys), minority)
    if pd.api.types.is_numeric_dtype(ref[label].dtype):
        return LabelInfo(label, "numerical")
    return LabelInfo(label, "unsupported")


def _class_test(ref_lab: pd.Series, cur_lab: pd.Series, alpha: float) -> dict[str, Any]:
    """Per-class rate test; returns the most changed significant class (or the most changed one)."""
    keys, rc, cc = category_counts(ref_lab, cur_lab)
    n1, n2 = int(rc.sum()), int(cc.sum())
    k_eff = 1 if len(keys) <= 2 else len(keys)
    rows = []
    for i, key in enumerate(keys):
        z, p = two_proportions(rc[i], n1, cc[i], n2)
        rows.append({"class": key, "ref_rate": rc[i] / n1 if n1 else None, "cur_rate": cc[i] / n2 if n2 else None,
                     "ref_count": int(rc[i]), "cur_count": int(cc[i]), "z": z, "p": min(1.0, p * k_eff),
                     "ratio": rate_ratio(rc[i], n1, cc[i], n2)})
    sig = [r for r in rows if r["p"] < alpha]
    pick = max(sig or rows, key=lambda r: (r["ratio"], abs(r["z"]))) if rows else None
    return {"significant": bool(sig), "ref_rows": n1, "cur_rows": n2, "top": pick, "classes": rows}


# -------------------------------------------------------------------------------------- label shift

def _explained(res: dict[str, Any], group: str, info: LabelInfo, consistency: dict[str, Any] | None,
               t: dict[str, Any]) -> dict[str, Any] | None:
    """The covariate-adjusted test of a rate change, when the label-consistency model covers it.

    A model trained on the reference predicts the expected number of positives from the features of the
    current rows. Natural covariate shift moves observed and expected together; label poisoning does not.
    Returns the adjusted statistics with ``explained`` = True when they show no significant change.
    """
    if not consistency or "groups" not in consistency or not res.get("top"):
        return None
    if res["top"]["class"] != info.minority and len(info.classes) > 2:
        return None
    g = consistency["groups"].get(group)
    if not g:
        return None
    adj = dict(g["all_rows"])
    lc = t["label_consistency"]
    significant = adj["p"] * consistency.get("n_tests", 1) < lc["alpha"] and adj["ratio"] >= lc["medium_ratio"]
    adj["explained"] = not significant
    return adj


def _cap(severity: str | None, adj: dict[str, Any] | None) -> str | None:
    if adj and adj["explained"] and severity in ("high", "critical"):
        return "medium"
    return severity


def label_shift(ref: pd.DataFrame, cur: pd.DataFrame, info: LabelInfo, source: str | None,
                t: dict[str, Any], consistency: dict[str, Any] | None = None
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Label-distribution shift overall and per source (vs the same source in the reference if present).

    With ``consistency`` (the statistics of :func:`label_consistency`), a rate change that the features of
    the current rows explain (covariate shift) is capped at "medium".
    """
    ls = t["label_shift"]
    label = info.column
    findings: list[dict[str, Any]] = []
    per_source: dict[str, Any] = {}
    if info.kind == "unsupported":
        return findings, {"overall": {"skipped": "label has too many non-numeric values"}, "per_source": {}}
    if info.kind == "numerical":
        res = column_drift(label, ref[label], cur[label], NUMERICAL, t)
        u, v = finite_values(ref[label]), finite_values(cur[label])
        p = float(stats.ks_2samp(u, v, method="asymp").pvalue) if u.size and v.size else 1.0
        eff = res.get("effect") or 0.0
        sev = ladder(eff, [("medium", ls["medium_effect"]), ("high", ls["high_effect"])])
        overall = {"test": "ks", "p": p, "effect": eff}
        if p < ls["alpha"] and sev:
            findings.append(finding(
                "label_shift", sev, f"label '{label}' distribution shifted (normed Wasserstein {eff:.3f})",
                columns=[label], statistic=("wasserstein_normed", eff), threshold=ls["medium_effect"],
                detail=f"KS p={p:.2e}; reference mean {np.mean(u):.4g}, current mean {np.mean(v):.4g}."))
        return findings, {"overall": overall, "per_source": per_source}

    overall = _class_test(ref[label], cur[label], ls["alpha"])
    top = overall["top"]
    adj = _explained(overall, "(all)", info, consistency, t)
    overall["adjusted"] = adj
    if overall["significant"] and top:
        sev = _cap(ratio_severity(top["ratio"], ls), adj)
        overall["severity"] = sev
        findings.append(finding(
            "label_shift", sev,
            f"label '{label}' class {_fmt(top['class'])!s} rate {top['ref_rate']:.4%} -> {top['cur_rate']:.4%} "
            f"(x{top['cur_rate'] / top['ref_rate']:.2f})" if top["ref_rate"] else
            f"label '{label}' class {_fmt(top['class'])} appears ({top['cur_rate']:.4%}), absent in reference",
            columns=[label], statistic=("class_rate_ratio", top["ratio"]), threshold=ls["medium_ratio"],
            detail=f"two-proportion z={top['z']:.2f}, p={top['p']:.2e} (alpha {ls['alpha']}); "
                   f"reference {overall['ref_rows']} rows, current {overall['cur_rows']} rows." + _adj_text(adj),
            evidence={"classes": overall["classes"], "adjusted": adj}))

    if source is not None:
        groups = cur.groupby(source, sort=True, dropna=False, observed=True).indices
        tested = {s: idx for s, idx in groups.items() if len(idx) >= ls["min_rows"]}
        ref_groups = ref.groupby(source, sort=True, dropna=False, observed=True).indices \
            if source in ref.columns else {}
        alpha = ls["alpha"] / max(1, len(tested))
        for s, idx in tested.items():
            ridx = ref_groups.get(s)
            same = ridx is not None and len(ridx) >= ls["min_rows"]
            ref_lab = ref[label].iloc[ridx] if same else ref[label]
            res = _class_test(ref_lab, cur[label].iloc[idx], alpha)
            res["baseline"] = "same source in reference" if same else "whole reference"
            top = res["top"]
            res["adjusted"] = _explained(res, _fmt(s), info, consistency, t)
            res["severity"] = _cap(ratio_severity(top["ratio"], ls), res["adjusted"]) \
                if res["significant"] and top else None
            per_source[_fmt(s)] = res
        if len(tested) > 1:
            for s, res in per_source.items():
                if not res["severity"] or res["severity"] == "low":
                    continue
                top = res["top"]
                findings.append(finding(
                    "label_shift", res["severity"],
                    f"source '{s}': label class {_fmt(top['class'])} rate {top['ref_rate']:.4%} -> "
                    f"{top['cur_rate']:.4%}",
                    columns=[label], sources=[s], statistic=("class_rate_ratio", top["ratio"]),
                    threshold=ls["medium_ratio"],
                    detail=f"two-proportion z={top['z']:.2f}, p={top['p']:.2e} (alpha {alpha:.2e} after "
                           f"Bonferroni over {len(tested)} sources); baseline: {res['baseline']}; "
                           f"{res['cur_rows']} current rows." + _adj_text(res["adjusted"])))
    return findings, {"overall": overall, "per_source": per_source}


def _adj_text(adj: dict[str, Any] | None) -> str:
    if not adj:
        return ""
    return (f" Given the features, a reference-trained model expects {adj['expected_positives']:.1f} positives, "
            f"observed {adj['observed_positives']:.0f} (p={adj['p']:.2e}): "
            + ("the change is explained by the features (covariate shift), severity capped at medium."
               if adj["explained"] else "the features do not explain it."))


# -------------------------------------------------------------------------------- label consistency

def _model_matrix(ref: pd.DataFrame, frames: list[pd.DataFrame], cols: list[str], types: dict[str, str]):
    """Float matrices (NaN kept) for HistGradientBoosting; categorical columns as reference codes."""
    mats = [np.empty((len(f), len(cols)), dtype=np.float32) for f in frames]
    cat_mask = []
    for j, c in enumerate(cols):
        if types.get(c) == CATEGORICAL:
            vc = ref[c].value_counts()
            index = pd.Index(vc.index[:250])  # HGB categories must be < 255
            for f, m in zip(frames, mats, strict=True):
                codes = index.get_indexer(f[c]).astype(np.float32)
                codes[codes < 0] = np.nan
                m[:, j] = codes
            cat_mask.append(True)
        else:
            for f, m in zip(frames, mats, strict=True):
                m[:, j] = pd.to_numeric(f[c], errors="coerce").to_numpy(dtype="float32", na_value=np.nan)
            cat_mask.append(False)
    return mats, np.array(cat_mask, dtype=bool)


def _scores(model: Any, x: np.ndarray, chunk: int = 131_072) -> np.ndarray:
    """Positive-class scores in row chunks: the same values, without a float64 copy of a large matrix."""
    out = np.empty(len(x), dtype=np.float64)
    for i in range(0, len(x), chunk):
        out[i:i + chunk] = model.predict_proba(x[i:i + chunk])[:, 1]
    return out


def label_consistency(ref: pd.DataFrame, cur: pd.DataFrame, info: LabelInfo, features: list[str],
                      types: dict[str, str], source: str | None,
                      t: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], np.ndarray]:
    """Do the labels of the rows a reference-trained model finds most positive still say positive?

    Returns findings, statistics and a boolean mask of current rows that are suspected flipped labels
    (in the top band, labelled non-positive, in a flagged group).
    """
    lc = t["label_consistency"]
    empty = np.zeros(len(cur), dtype=bool)
    if not lc["enabled"] or info.kind != "classes" or len(info.classes) < 2 or not features:
        return [], {"skipped": "disabled or not a classification label"}, empty
    label = info.column
    pos = info.minority
    y_ref = (ref[label] == pos).to_numpy()
    if y_ref.sum() < 20 or (~y_ref).sum() < 20:
        return [], {"skipped": "too few reference rows of each class"}, empty
    from sklearn.ensemble import HistGradientBoostingClassifier

    cols = list(features) + ([source] if source and source in ref.columns else [])
    mtypes = dict(types)
    if source and source in ref.columns:
        mtypes[source] = CATEGORICAL
    rng = np.random.default_rng(SEED)
    perm = rng.permutation(len(ref))
    half = len(ref) // 2
    train_idx = perm[:half][: lc["max_train_rows"]]
    cal_idx = perm[half:][: 4 * lc["max_train_rows"]]
    (x_train, x_cal, x_cur), cat_mask = _model_matrix(
        ref, [ref.iloc[train_idx], ref.iloc[cal_idx], cur], cols, mtypes)
    model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=15,
                                           categorical_features=cat_mask if cat_mask.any() else None,
                                           random_state=0)
    from sklearn.isotonic import IsotonicRegression
    from threadpoolctl import threadpool_limits

    # one OpenMP thread: on a busy 2-core machine oversubscribed OpenMP is ~10x slower, not faster
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(x_train, y_ref[train_idx])
        s_cal = _scores(model, x_cal)
        s_cur = _scores(model, x_cur)
    y_cal = y_ref[cal_idx]
    # isotonic calibration on the held-out reference half: expected counts stay right when the current
    # batch's score distribution moves (covariate shift)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s_cal, y_cal.astype(float))
    p_cur = iso.predict(s_cur)
    q = max(lc["band_min_share"], 2 * float(y_ref.mean()))
    cut = float(np.quantile(s_cal, 1 - q))
    in_cal = s_cal >= cut
    o_cal = float(y_cal[in_cal].sum())
    # relative uncertainty of an expected count estimated from k reference positives ~ 1/sqrt(k)
    rel_band = 1 / math.sqrt(max(1.0, o_cal))
    rel_all = 1 / math.sqrt(max(1.0, float(y_cal.sum())))
    y_cur = (cur[label] == pos).to_numpy()
    labelled = cur[label].notna().to_numpy()  # rows without a label say nothing about flipping
    in_cur = (s_cur >= cut) & labelled

    def oe(rows: np.ndarray, rel: float) -> dict[str, Any]:
        o = float(y_cur[rows].sum())
        e = float(p_cur[rows].sum())
        var = float((p_cur[rows] * (1 - p_cur[rows])).sum()) + (e * rel) ** 2 + 1e-9
        z = (o - e) / math.sqrt(var)
        return {"observed_positives": o, "expected_positives": e, "z": z,
                "p": float(2 * stats.norm.sf(abs(z))),
                "ratio": max((e + 0.5) / (o + 0.5), (o + 0.5) / (e + 0.5))}

    rest_cur = ~(s_cur >= cut) & labelled
    rel_rest = 1 / math.sqrt(max(1.0, float(y_cal[~in_cal].sum())))

    def band_test(rows: np.ndarray, rel: float, others: np.ndarray | None) -> dict[str, Any]:
        st = {"rows": int(rows.sum()), **oe(rows, rel)}
        if others is not None and others.sum() >= 30 and rows.sum() >= 1:
            # against the other sources: the calibration error is shared, so it drops out of the contrast
            def rate(m):
                n = max(1, int(m.sum()))
                return float((y_cur[m] - p_cur[m]).sum()) / n, float((p_cur[m] * (1 - p_cur[m])).sum()) / n ** 2

            d_s, v_s = rate(rows)
            d_o, v_o = rate(others)
            direction = 1 if d_s > d_o else -1
            st["p_vs_other_sources"] = contrast_p(d_s, math.sqrt(v_s + 1e-12), d_o, math.sqrt(v_o + 1e-12),
                                                  direction=direction)
        return st

    def group_stat(mask: np.ndarray, others: np.ndarray | None) -> dict[str, Any]:
        band = mask & in_cur
        st = {"band_rows": int(band.sum()), **oe(band, rel_band)}
        st["all_rows"] = {"rows": int(mask.sum()), **oe(mask, rel_all)}  # covariate-adjusted label rate
        top = band_test(band, rel_band, None if others is None else others & in_cur)
        rest = band_test(mask & rest_cur, rel_rest, None if others is None else others & rest_cur)
        st["bands"] = {"top": top, "rest": rest}
        # the whole-batch label-consistency test: either band off (deficit of positives among the most
        # positive-looking rows = flipped positives; excess among the rest = flipped negatives / noise)
        ok_top = top["rows"] >= lc["min_band_rows"]
        ok_rest = rest["rows"] >= lc["min_band_rows"]
        ps = ([top["p"]] if ok_top and top["ratio"] >= lc["medium_ratio"] else [1.0]) + \
             ([rest["p"]] if ok_rest and rest["ratio"] >= lc["medium_ratio"] else [1.0])
        st["p_bands"] = min(1.0, 2 * min(ps))
        vs = [b["p_vs_other_sources"] for b, ok in ((top, ok_top), (rest, ok_rest)) if ok and "p_vs_other_sources" in b]
        if others is not None:
            st["p_vs_other_sources"] = min(1.0, 2 * min(vs)) if vs else 1.0
        return st

    groups: dict[str, np.ndarray] = {"(all)": labelled.copy()}
    if source and source in cur.columns:
        min_rows = t["label_shift"]["min_rows"]
        for s, idx in cur.groupby(source, sort=True, dropna=False, observed=True).indices.items():
            if len(idx) < min_rows:
                continue
            m = np.zeros(len(cur), dtype=bool)
            m[idx] = True
            groups[_fmt(s)] = m & labelled
    n_tests = len(groups)
    result: dict[str, Any] = {"positive_class": pos, "band_share": q, "score_cut": cut, "n_tests": len(groups),
                              "reference_band": {"rows": int(in_cal.sum()), "observed_positives": o_cal},
                              "train_rows": len(train_idx), "calibration_rows": len(cal_idx), "groups": {}}
    findings: list[dict[str, Any]] = []
    suspect = np.zeros(len(cur), dtype=bool)
    for name, mask in groups.items():
        st = group_stat(mask, None if name == "(all)" or n_tests <= 2 else labelled & ~mask)
        flagged = st["band_rows"] >= lc["min_band_rows"] and st["p"] * n_tests < lc["alpha"] \
            and st["ratio"] >= lc["medium_ratio"]
        st["severity"] = ratio_severity(st["ratio"], lc) if flagged else None
        result["groups"][name] = st
        if not flagged or (name == "(all)" and n_tests > 1):  # with sources, report per source
            continue
        if name != "(all)":
            suspect |= mask & in_cur & ~y_cur if st["observed_positives"] < st["expected_positives"] else \
                mask & in_cur & y_cur
        fewer = st["observed_positives"] < st["expected_positives"]
        findings.append(finding(
            "label_shift", st["severity"],
            (f"source '{name}': " if name != "(all)" else "") +
            f"{'too few' if fewer else 'too many'} '{_fmt(pos)}' labels among the rows a reference model scores "
            f"most '{_fmt(pos)}'-like ({st['observed_positives']:.0f} observed, {st['expected_positives']:.1f} expected)",
            columns=[label], sources=[name] if name != "(all)" else [],
            statistic=("expected_observed_ratio", st["ratio"]), threshold=lc["medium_ratio"],
            detail=(f"label consistency: {st['band_rows']} current rows in the top {q:.1%} score band of a "
                    f"model trained on the reference; z={st['z']:.2f}, p={st['p']:.2e} (alpha {lc['alpha']} "
                    f"over {n_tests} tests). "
                    + ("Consistent with label flipping of positives." if fewer else
                       "Labels disagree with the features."))))
    return findings, result, suspect


# --------------------------------------------------------------------------------------- duplicates

def row_keys(ref: pd.DataFrame, cur: pd.DataFrame, cols: list[str], types: dict[str, str], *,
             near: bool, bins: int = 100, exact_max_distinct: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """64-bit row keys, consistent across the two frames: :func:`aiir.detect.stats.near_duplicate_keys`."""
    return near_duplicate_keys(ref, cur, cols, [c for c in cols if types.get(c) == NUMERICAL], near=near,
                               bins=bins, exact_max_distinct=exact_max_distinct)


def isin(keys: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``np.isin(keys, other)`` through pandas' hash table: ~10x faster on millions of 64-bit keys."""
    if not other.size or not keys.size:
        return np.zeros(keys.size, dtype=bool)
    return pd.Series(keys, copy=False).isin(other).to_numpy()


def _dup_mask(keys: np.ndarray, other: np.ndarray | None, copies: np.ndarray | None = None) -> np.ndarray:
    """Rows that repeat an earlier row of ``keys`` or copy a row of ``other`` (``copies``: that test, if known)."""
    mask = pd.Series(keys, copy=False).duplicated(keep="first").to_numpy()
    if copies is not None:
        mask |= copies
    elif other is not None and other.size:
        mask |= isin(keys, other)
    return mask


def _baseline_dup_share(ref_keys: np.ndarray, n_cur: int) -> dict[str, float]:
    """Expected duplicate share of a clean batch of ``n_cur`` rows, estimated on a reference split."""
    n_ref = ref_keys.size
    if n_ref < 4:
        return {"within": 0.0, "cross": 0.0, "expected": 0.0}
    rng = np.random.default_rng(SEED)
    perm = rng.permutation(n_ref)
    h = max(1, min(n_cur, n_ref // 2))
    hold, rest = ref_keys[perm[:h]], ref_keys[perm[h:]]
    within = float(pd.Series(hold).duplicated().mean())
    cross = float(isin(hold, rest).mean())
    within_exp = min(1.0, within * n_cur / h)
    cross_exp = 1 - (1 - cross) ** (n_ref / max(1, rest.size))
    return {"within": within_exp, "cross": cross_exp,
            "expected": 1 - (1 - within_exp) * (1 - cross_exp)}


def _excess_test(count: int, n: int, expected_share: float, t: dict[str, Any]) -> dict[str, Any]:
    share = count / n if n else 0.0
    excess = share - expected_share
    if expected_share > 0:
        p = float(stats.binom.sf(count - 1, n, expected_share)) if count > 0 else 1.0
    else:
        p = 0.0 if count > 0 else 1.0
    ratio = share / expected_share if expected_share > 0 else (math.inf if count else 1.0)
    flagged = (excess * n >= t["min_rows"] and ratio >= t["min_ratio"] and p < t["alpha"]
               and excess >= t["low_excess"])
    sev = ladder(excess, [("low", t["low_excess"]), ("medium", t["medium_excess"]),
                          ("high", t["high_excess"]), ("critical", t["critical_excess"])]) if flagged else None
    return {"count": int(count), "rows": int(n), "share": share, "expected_share": expected_share,
            "excess_share": excess, "ratio": ratio, "p": p, "severity": sev}


def duplicates(ref: pd.DataFrame, cur: pd.DataFrame, features: list[str], types: dict[str, str],
               source: str | None, t: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], np.ndarray]:
    """Exact and near-duplicate injection: rows of CUR repeating CUR rows or copying REF rows."""
    dt = t["duplicates"]
    empty = np.zeros(len(cur), dtype=bool)
    if not features:
        return [], {"skipped": "no feature columns"}, empty
    levels: dict[str, Any] = {}
    masks: dict[str, np.ndarray] = {}
    keys = row_key_levels(ref, cur, features, [c for c in features if types.get(c) == NUMERICAL],
                          levels=(False, True), bins=dt["near_bins"], exact_max_distinct=dt["near_exact_max_distinct"])
    for level, near in (("exact", False), ("near", True)):
        kr, kc = keys.pop(near)
        base = _baseline_dup_share(kr, len(cur))
        copies = isin(kc, kr)
        repeats = pd.Series(kc, copy=False).duplicated(keep="first").to_numpy()
        mask = repeats | copies
        overall = _excess_test(int(mask.sum()), len(cur), base["expected"], dt)
        overall["baseline"] = base
        overall["copies_of_reference"] = int(copies.sum())
        overall["repeats_within_current"] = int(repeats.sum())
        per_source = {}
        if source is not None and source in cur.columns:
            for s, n_s, k_s in group_counts(cur[source], mask):
                per_source[_fmt(s)] = _excess_test(k_s, n_s, base["expected"], dt)
        overall["per_source"] = per_source
        levels[level] = overall
        masks[level] = mask
    findings: list[dict[str, Any]] = []
    # report the level with the larger (flagged) excess
    flagged = [lv for lv in ("exact", "near") if levels[lv]["severity"]]
    stats_out = {"levels": levels, "features": list(features)}
    if not flagged:
        stats_out["reported_level"] = None
        return findings, stats_out, empty
    lv = max(flagged, key=lambda x: (levels[x]["excess_share"], x == "exact"))
    st = levels[lv]
    stats_out["reported_level"] = lv
    srcs = sorted((s for s, v in st["per_source"].items() if v["severity"]),
                  key=lambda s: -st["per_source"][s]["excess_share"])
    by_src = ", ".join(f"{s}: {st['per_source'][s]['count']} ({st['per_source'][s]['share']:.1%})" for s in srcs)
    findings.append(finding(
        "duplicates", st["severity"],
        f"{st['count']} {'exact' if lv == 'exact' else 'near'}-duplicate rows in current ({st['share']:.2%}, "
        f"expected {st['expected_share']:.2%})",
        columns=list(features), sources=srcs, statistic=("excess_duplicate_share", st["excess_share"]),
        threshold=dt["low_excess"],
        detail=f"{st['repeats_within_current']} repeat rows within current, {st['copies_of_reference']} copies of "
               f"reference rows ({'rounded to ' + str(dt['near_bins']) + ' quantile bins per numerical feature' if lv == 'near' else 'identical features'}); "
               f"binomial p={st['p']:.2e}" + (f"; by source: {by_src}" if by_src else ""),
        evidence={"exact": {k: v for k, v in levels["exact"].items() if k != "per_source"},
                  "near": {k: v for k, v in levels["near"].items() if k != "per_source"}}))
    return findings, stats_out, masks[lv]


# ----------------------------------------------------------------------------------------- outliers

def _robust_scale(r: np.ndarray) -> tuple[float, float] | None:
    med = float(np.median(r))
    mad = float(np.median(np.abs(r - med))) * 1.4826
    if mad > 0:
        return med, mad
    q1, q3 = np.quantile(r, [0.25, 0.75])
    if q3 > q1:
        return med, float(q3 - q1) / 1.349
    sd = float(np.std(r))
    return (med, sd) if sd > 0 else None


def outliers(ref: pd.DataFrame, cur: pd.DataFrame, features: list[str], types: dict[str, str],
             source: str | None, t: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], np.ndarray]:
    """Share of rows with any numerical feature beyond ``robust_z`` robust z-scores, vs the reference's share."""
    ot = t["outliers"]
    num = [c for c in features if types.get(c) == NUMERICAL]
    row_ref = np.zeros(len(ref), dtype=bool)
    row_cur = np.zeros(len(cur), dtype=bool)
    per_col = {}
    for c in num:
        rf = finite_values(ref[c])
        if rf.size < 10 or np.ptp(rf) == 0:
            continue
        # right-skewed non-negative features (amounts, durations, counts) are judged on a log scale,
        # otherwise their natural tail would hide injected extremes
        log = bool(rf.min() >= 0 and float(stats.skew(rf[: 200_000])) > ot["log_skew"])
        if log:
            rf = np.log1p(rf)
        sc = _robust_scale(rf)
        if sc is None:
            continue
        med, scale = sc
        r = pd.to_numeric(ref[c], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        k = pd.to_numeric(cur[c], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        if log:
            negative = k < 0  # a negative value of a non-negative feature is an outlier
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.log1p(r)
                k = np.log1p(np.where(negative, 0.0, k))
            k[negative] = -np.inf
        with np.errstate(invalid="ignore"):
            orf = np.abs(r - med) / scale > ot["robust_z"]
            ocf = np.abs(k - med) / scale > ot["robust_z"]
        row_ref |= orf
        row_cur |= ocf
        per_col[c] = {"scale_type": "log1p" if log else "linear", "median": med, "scale": scale,
                      "ref_share": float(orf.mean()), "cur_share": float(ocf.mean())}
    if not per_col:
        return [], {"skipped": "no numerical features with spread"}, np.zeros(len(cur), dtype=bool)
    base = float(row_ref.mean())
    overall = _excess_test(int(row_cur.sum()), len(cur), base, ot)
    per_source = {}
    if source is not None and source in cur.columns:
        for s, n_s, k_s in group_counts(cur[source], row_cur):
            per_source[_fmt(s)] = _excess_test(k_s, n_s, base, ot)
    st = {"overall": overall, "per_source": per_source, "columns": per_col, "robust_z": ot["robust_z"]}
    if not overall["severity"]:
        return [], st, np.zeros(len(cur), dtype=bool)
    cols = sorted((c for c, v in per_col.items() if v["cur_share"] > max(2 * v["ref_share"], v["ref_share"] + 0.002)),
                  key=lambda c: per_col[c]["ref_share"] - per_col[c]["cur_share"])
    srcs = sorted((s for s, v in per_source.items() if v["severity"]), key=lambda s: -per_source[s]["excess_share"])
    return [finding(
        "outliers", overall["severity"],
        f"{overall['share']:.2%} of current rows are outliers (reference {base:.2%})",
        columns=cols, sources=srcs, statistic=("excess_outlier_share", overall["excess_share"]),
        threshold=ot["low_excess"],
        detail=f"row outlier = any numerical feature with |x - median| / robust scale > {ot['robust_z']} "
               f"(log1p scale for right-skewed non-negative features); "
               f"{overall['count']} rows, binomial p={overall['p']:.2e}; most affected: "
               + ", ".join(f"{c} {per_col[c]['ref_share']:.2%}->{per_col[c]['cur_share']:.2%}" for c in cols[:8]),
        evidence={"columns": {c: per_col[c] for c in cols}})], st, row_cur
