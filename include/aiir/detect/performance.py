"""Label-free performance estimate: confidence-based performance estimation (CBPE) on production decisions.

The served model's scores on a labelled *reference* set (e.g. the trusted holdout scored by the suspect
model) calibrate its scores into probabilities (isotonic regression). On production decisions, whose
labels have not arrived yet, every row predicted positive contributes its calibrated probability to the
expected true positives and its complement to the expected false positives; every row predicted negative
contributes its probability to the expected false negatives. Hence::

    precision ~ sum_{pred=1} p_i / #pred=1      recall ~ sum_{pred=1} p_i / sum_i p_i
    F1 ~ 2 TP / (2 TP + FP + FN)

Uncertainty comes from a bootstrap that refits the calibration on resampled reference rows and draws the
production labels from the calibrated probabilities (so the interval covers the metric the labels will
show). A *drop* is declared for a metric when the estimate is below the baseline (the reference's own
realised metric, or a supplied one such as the last-known-good model's) by at least ``min_drop``
(relative) and a one-sided z-test on the bootstrap standard errors rejects at ``alpha`` / 3 (Bonferroni
over precision, recall and F1).

Assumption (as for every CBPE): the calibration learnt on the reference holds in production — the
relation P(y | score) does not change; covariate shift is fine, concept shift is not visible.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

METRICS = ("precision", "recall", "f1")


def _as_array(x: Any, name: str) -> np.ndarray:
    from aiir.errors import BadInput

    a = np.asarray(x, dtype=float).ravel()
    if a.size == 0:
        raise BadInput(name, "is empty")
    if not np.isfinite(a).all():
        raise BadInput(name, "contains NaN or infinite values")
    return a


def _metrics_from_probs(p: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tp = float(p[pred].sum())
    fp = float(pred.sum()) - tp
    fn = float(p[~pred].sum())
    return _ratios(tp, fp, fn)


def _ratios(tp: float, fp: float, fn: float) -> dict[str, float]:
    return {"precision": tp / (tp + fp) if tp + fp > 0 else math.nan,
            "recall": tp / (tp + fn) if tp + fn > 0 else math.nan,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else math.nan}


def realised(scores: Any, labels: Any, threshold: float = 0.5) -> dict[str, float]:
    """Precision, recall and F1 of ``scores >= threshold`` against 0/1 ``labels``."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels).astype(bool)
    pred = s >= threshold
    tp = float((pred & y).sum())
    return _ratios(tp, float((pred & ~y).sum()), float((~pred & y).sum()))


def estimate_performance(reference_scores: Any, reference_labels: Any, production_scores: Any, *,
                         threshold: float = 0.5, alpha: float = 0.01, min_drop: float = 0.1,
                         baseline: dict[str, float] | None = None, n_boot: int = 300,
                         seed: int = 0) -> dict[str, Any]:
    """CBPE estimate of precision/recall/F1 on ``production_scores`` with intervals and a drop decision.

    ``reference_scores``/``reference_labels``: the same model's scores on labelled reference rows (0/1
    labels, positive = 1); ``production_scores``: its scores on production decisions (no labels);
    ``threshold``: the decision threshold (score >= threshold is positive); ``baseline``: the metrics to
    compare with (default: realised on the reference); ``alpha``: family-wise level of the drop test over
    the three metrics; ``min_drop``: smallest relative drop that counts.

    Returns ``{"estimate": {metric: value}, "interval": {metric: [lo, hi]} (95 %), "baseline": {...},
    "tests": {metric: {"drop", "relative_drop", "z", "p", "significant"}}, "decision": {"drop": bool,
    "metrics": [...], "rule": str}, "calibration": {...}, "production_rows", "predicted_positive_rate"}``.
    """
    from sklearn.isotonic import IsotonicRegression

    from aiir.errors import BadInput

    rs = _as_array(reference_scores, "reference_scores")
    ry = _as_array(reference_labels, "reference_labels")
    ps = _as_array(production_scores, "production_scores")
    if rs.size != ry.size:
        raise BadInput("reference_labels", f"has {ry.size} values for {rs.size} reference scores")
    if not np.isin(ry, (0, 1)).all():
        raise BadInput("reference_labels", "must be 0/1")
    if ry.sum() < 5 or (1 - ry).sum() < 5:
        raise BadInput("reference_labels", "need at least 5 rows of each class to calibrate")
    if not 0 < alpha < 1:
        raise BadInput("alpha", f"must be between 0 and 1, got {alpha!r}")

    def calibrate(s: np.ndarray, y: np.ndarray) -> IsotonicRegression:
        return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)

    iso = calibrate(rs, ry)
    p = iso.predict(ps)
    pred = ps >= threshold
    est = _metrics_from_probs(p, pred)
    base = dict(baseline) if baseline else realised(rs, ry, threshold)
    supplied = baseline is not None

    rng = np.random.default_rng(seed)
    boots = {m: [] for m in METRICS}
    base_boots = {m: [] for m in METRICS}
    n_r, n_p = rs.size, ps.size
    for _ in range(n_boot):
        i = rng.integers(0, n_r, n_r)
        cal = calibrate(rs[i], ry[i])
        j = rng.integers(0, n_p, n_p)
        pj = cal.predict(ps[j])
        yj = rng.random(n_p) < pj  # the labels production will show, drawn from the calibration
        pr = pred[j]
        tp = float((pr & yj).sum())
        for m, v in _ratios(tp, float((pr & ~yj).sum()), float((~pr & yj).sum())).items():
            boots[m].append(v)
        if not supplied:
            for m, v in realised(rs[i], ry[i], threshold).items():
                base_boots[m].append(v)
    tests: dict[str, Any] = {}
    interval: dict[str, list[float]] = {}
    level = alpha / len(METRICS)
    dropped = []
    for m in METRICS:
        b = np.asarray(boots[m], dtype=float)
        b = b[np.isfinite(b)]
        interval[m] = [float(np.quantile(b, 0.025)), float(np.quantile(b, 0.975))] if b.size else [math.nan] * 2
        se = float(np.std(b, ddof=1)) if b.size > 2 else math.nan
        bb = np.asarray(base_boots[m], dtype=float)
        bb = bb[np.isfinite(bb)]
        se_base = float(np.std(bb, ddof=1)) if bb.size > 2 else 0.0
        e, bv = est[m], base.get(m, math.nan)
        drop = bv - e if math.isfinite(e) and math.isfinite(bv) else math.nan
        rel = drop / bv if math.isfinite(drop) and bv > 0 else math.nan
        s = math.hypot(se, se_base) if math.isfinite(se) else math.nan
        z = drop / s if math.isfinite(drop) and s and s > 0 else math.nan
        pval = float(stats.norm.sf(z)) if math.isfinite(z) else 1.0
        sig = bool(pval < level and math.isfinite(rel) and rel >= min_drop)
        tests[m] = {"drop": drop, "relative_drop": rel, "se": s, "z": z, "p": pval, "significant": sig}
        if sig:
            dropped.append(m)
    return {
        "method": "CBPE (isotonic calibration on the reference, bootstrap with label draws)",
        "estimate": est, "interval": interval, "baseline": base,
        "baseline_source": "supplied" if supplied else "realised on the reference",
        "tests": tests,
        "decision": {"drop": bool(dropped), "metrics": dropped, "alpha": alpha, "min_drop": min_drop,
                     "rule": f"drop when a metric's estimate is at least {min_drop:.0%} (relative) below the "
                             f"baseline and a one-sided z-test rejects at alpha {alpha}/{len(METRICS)}"},
        "calibration": {"reference_rows": int(n_r), "reference_positives": int(ry.sum()),
                        "threshold": threshold},
        "production_rows": int(n_p), "predicted_positive_rate": float(pred.mean()),
        "expected_positive_rate": float(p.mean()),
    }
