"""Per-feature drift with the tests Evidently 0.7 applies by default, in vectorised numpy/scipy.

Evidently's ``DataDriftPreset`` picks a test per column (``evidently/legacy/calculations/stattests/
registry.py::_get_default_stattest``) from the number of *reference* rows (after dropping NaN/±inf)
and the number of distinct values in reference ∪ current:

===============  ==================================  =================================================
column type      reference rows <= 1000              reference rows > 1000
===============  ==================================  =================================================
numerical        KS (p <= 0.05); <= 5 distinct:      Wasserstein / std(ref) (>= 0.1);
                 chi-squared (> 2) or z-test (<= 2)  <= 5 distinct: Jensen-Shannon (>= 0.1)
categorical      chi-squared (> 2 distinct) or       Jensen-Shannon distance (>= 0.1)
                 two-proportion z-test (p < 0.05)
===============  ==================================  =================================================

Column types follow Evidently 0.7's inference (``evidently/core/datasets.py::infer_column_type``):
float → numerical; integer → categorical when it has <= 10 distinct values, else numerical; bool and
category → categorical; strings → categorical, or text (skipped here) when more than half the values are
distinct. aiir also skips datetime columns, all-empty columns and integer identifiers (every value
distinct, >= 1000 rows), which would only add noise.

Besides the decision, every column gets an *effect size* independent of the sample size: the normed
Wasserstein distance (numerical) or the Jensen-Shannon distance (categorical, low-cardinality numerical).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

if TYPE_CHECKING:
    from collections.abc import Iterable

NUMERICAL, CATEGORICAL = "numerical", "categorical"
TESTED_TYPES = (NUMERICAL, CATEGORICAL)

_DEFAULTS = {
    "small_sample_rows": 1000, "low_cardinality": 5, "integer_categorical_max": 10,
    "text_unique_ratio": 0.5, "ks_pvalue": 0.05, "chi2_pvalue": 0.05, "z_pvalue": 0.05,
    "wasserstein": 0.1, "jensenshannon": 0.1,
}


def _drift_thresholds(thresholds: dict[str, Any] | None) -> dict[str, Any]:
    if thresholds is None:
        return dict(_DEFAULTS)
    t = thresholds.get("drift", thresholds)
    return {k: t.get(k, v) for k, v in _DEFAULTS.items()}


# --------------------------------------------------------------------------------------------- types

def column_type(s: pd.Series, thresholds: dict[str, Any] | None = None) -> str:
    """numerical | categorical | text | datetime | id | empty | unknown (only the first two are tested)."""
    t = _drift_thresholds(thresholds)
    non_null = s.dropna()
    if non_null.empty:
        return "empty"
    dt = s.dtype
    if pd.api.types.is_bool_dtype(dt) or isinstance(dt, pd.CategoricalDtype):
        return CATEGORICAL
    if pd.api.types.is_datetime64_any_dtype(dt) or pd.api.types.is_timedelta64_dtype(dt):
        return "datetime"
    if pd.api.types.is_float_dtype(dt):
        return NUMERICAL
    if pd.api.types.is_integer_dtype(dt):
        nunique = non_null.nunique()
        if nunique <= t["integer_categorical_max"]:
            return CATEGORICAL
        if nunique == len(non_null) and len(non_null) >= 1000:
            return "id"
        return NUMERICAL
    if pd.api.types.is_string_dtype(dt) or pd.api.types.is_object_dtype(dt):
        first, last = non_null.iloc[0], non_null.iloc[-1]
        if isinstance(first, str) and isinstance(last, str):
            if non_null.nunique() > len(non_null) * t["text_unique_ratio"]:
                return "text"
            return CATEGORICAL
        if pd.api.types.is_object_dtype(dt) and isinstance(first, (bool, int, float, np.number)):
            return CATEGORICAL if non_null.nunique() <= t["integer_categorical_max"] else "unknown"
        return "unknown"
    return "unknown"


def column_types(df: pd.DataFrame, thresholds: dict[str, Any] | None = None,
                 exclude: Iterable[str] = ()) -> dict[str, str]:
    skip = set(exclude)
    return {c: column_type(df[c], thresholds) for c in df.columns if c not in skip}


# ------------------------------------------------------------------------------------ primitives

def finite_values(s: pd.Series) -> np.ndarray:
    """Float64 values without NaN/±inf (what Evidently feeds its numerical tests)."""
    a = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return a[np.isfinite(a)]


def wasserstein_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """First Wasserstein distance of two *sorted* samples, by merging them (O(n+m) after the sorts).

    Equal to ``scipy.stats.wasserstein_distance(u, v)``: the integral of |F_u - F_v|. Ties contribute
    zero width, so the order within ties does not matter.
    """
    n, m = len(u), len(v)
    if n == m:
        return float(np.mean(np.abs(u - v)))
    pos_v = np.searchsorted(u, v, side="right") + np.arange(m)
    is_v = np.zeros(n + m, dtype=bool)
    is_v[pos_v] = True
    merged = np.empty(n + m, dtype=np.float64)
    merged[is_v] = v
    merged[~is_v] = u
    cv = np.cumsum(is_v)[:-1]
    cu = np.arange(1, n + m) - cv
    return float(np.dot(np.abs(cu / n - cv / m), np.diff(merged)))


def normed_wasserstein(u_sorted: np.ndarray, v_sorted: np.ndarray) -> float:
    """Evidently's ``wasserstein``: W1 / max(std(reference), 0.001) (population std)."""
    return wasserstein_sorted(u_sorted, v_sorted) / max(float(np.std(u_sorted)), 0.001)


def category_counts(ref: pd.Series, cur: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts per category (NaN dropped) over the union of values: (keys, ref_counts, cur_counts)."""
    ref, cur = ref.dropna(), cur.dropna()
    codes_r, uniques = pd.factorize(ref, sort=False)
    codes_c = pd.Index(uniques).get_indexer(cur) if len(uniques) else np.full(len(cur), -1)
    new = codes_c < 0
    keys = np.asarray(uniques, dtype=object)
    if new.any():
        extra_codes, extra_uniques = pd.factorize(cur[new], sort=False)
        codes_c = codes_c.copy()
        codes_c[new] = extra_codes + len(uniques)
        keys = np.concatenate([keys, np.asarray(extra_uniques, dtype=object)])
    k = len(keys)
    return keys, np.bincount(codes_r, minlength=k), np.bincount(codes_c, minlength=k)


def chi2_pvalue(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Evidently's ``chisquare``: goodness of fit of current counts to the scaled reference counts."""
    k = len(ref_counts)
    if k <= 1:
        return 1.0
    n_ref, n_cur = ref_counts.sum(), cur_counts.sum()
    f_exp = ref_counts * (n_cur / n_ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(f_exp > 0, (cur_counts - f_exp) ** 2 / np.where(f_exp > 0, f_exp, 1), np.inf)
    stat = float(np.sum(terms))
    return float(stats.chi2.sf(stat, k - 1)) if math.isfinite(stat) else 0.0


def z_pvalue(keys: np.ndarray, ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Evidently's ``z``: two-proportion z-test on (value == smallest key) vs the rest."""
    present_r, present_c = ref_counts > 0, cur_counts > 0
    if present_r.sum() == 1 and present_c.sum() == 1 and np.array_equal(present_r, present_c):
        return 1.0
    try:
        first = int(np.argmin(keys)) if len(keys) else 0
    except TypeError:
        first = int(np.argmin([str(k) for k in keys]))
    n1, n2 = ref_counts.sum(), cur_counts.sum()
    p1 = 1 - ref_counts[first] / n1
    p2 = 1 - cur_counts[first] / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    denom = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if denom == 0:
        return float("nan")
    z = (p1 - p2) / denom
    return float(2 * (1 - stats.norm.cdf(abs(z))))


def js_distance(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) between the two category distributions."""
    p = ref_counts / ref_counts.sum()
    q = cur_counts / cur_counts.sum()
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(math.sqrt(max((kl_p + kl_q) / 2, 0.0)))


def _distinct_le(sorted_arr: np.ndarray, limit: int) -> np.ndarray | None:
    """The distinct values of a sorted array if there are at most ``limit`` of them, else None."""
    if sorted_arr.size == 0:
        return sorted_arr
    breaks = np.flatnonzero(sorted_arr[1:] != sorted_arr[:-1])
    if breaks.size + 1 > limit:
        return None
    return sorted_arr[np.concatenate([[0], breaks + 1])]


# ----------------------------------------------------------------------------------------- tests

def _skip(column: str, ctype: str, reason: str) -> dict[str, Any]:
    return {"column": column, "type": ctype, "test": None, "statistic": None, "threshold": None,
            "drifted": False, "effect": None, "skipped": reason}


def _numerical(column: str, ref: pd.Series, cur: pd.Series, t: dict[str, Any]) -> dict[str, Any]:
    u, v = finite_values(ref), finite_values(cur)
    if u.size == 0 or v.size == 0:
        return _skip(column, NUMERICAL, "no finite values in " + ("reference" if u.size == 0 else "current"))
    u.sort()
    v.sort()
    small = u.size <= t["small_sample_rows"]
    low_u = _distinct_le(u, t["low_cardinality"])
    low = None
    if low_u is not None:
        low_v = _distinct_le(v, t["low_cardinality"])
        if low_v is not None:
            low = np.union1d(low_u, low_v)
            low = low if low.size <= t["low_cardinality"] else None
    out = {"column": column, "type": NUMERICAL, "ref_rows": int(u.size), "cur_rows": int(v.size)}
    if low is not None:  # few distinct values: compare the value frequencies
        keys = low
        rc = np.bincount(np.searchsorted(keys, u), minlength=keys.size)
        cc = np.bincount(np.searchsorted(keys, v), minlength=keys.size)
        effect = js_distance(rc, cc)
        if not small:
            test, stat, thr, drifted = "jensenshannon", effect, t["jensenshannon"], effect >= t["jensenshannon"]
        elif keys.size > 2:
            p = chi2_pvalue(rc, cc)
            test, stat, thr, drifted = "chisquare", p, t["chi2_pvalue"], p < t["chi2_pvalue"]
        else:
            p = z_pvalue(keys, rc, cc)
            test, stat, thr, drifted = "z", p, t["z_pvalue"], bool(p < t["z_pvalue"])
        out.update(test=test, statistic=stat, threshold=thr, drifted=bool(drifted), effect=effect,
                   effect_name="jensenshannon")
        return out
    effect = normed_wasserstein(u, v)
    if small:
        p = float(stats.ks_2samp(u, v).pvalue)
        out.update(test="ks", statistic=p, threshold=t["ks_pvalue"], drifted=bool(p <= t["ks_pvalue"]))
    else:
        out.update(test="wasserstein", statistic=effect, threshold=t["wasserstein"],
                   drifted=bool(effect >= t["wasserstein"]))
    out.update(effect=effect, effect_name="wasserstein_normed")
    return out


def _categorical(column: str, ref: pd.Series, cur: pd.Series, t: dict[str, Any]) -> dict[str, Any]:
    keys, rc, cc = category_counts(ref, cur)
    n_ref, n_cur = int(rc.sum()), int(cc.sum())
    if n_ref == 0 or n_cur == 0:
        return _skip(column, CATEGORICAL, "no values in " + ("reference" if n_ref == 0 else "current"))
    effect = js_distance(rc, cc)
    out = {"column": column, "type": CATEGORICAL, "ref_rows": n_ref, "cur_rows": n_cur}
    if n_ref > t["small_sample_rows"]:
        out.update(test="jensenshannon", statistic=effect, threshold=t["jensenshannon"],
                   drifted=bool(effect >= t["jensenshannon"]))
    elif len(keys) > 2:
        p = chi2_pvalue(rc, cc)
        out.update(test="chisquare", statistic=p, threshold=t["chi2_pvalue"], drifted=bool(p < t["chi2_pvalue"]))
    else:
        p = z_pvalue(keys, rc, cc)
        out.update(test="z", statistic=p, threshold=t["z_pvalue"], drifted=bool(p < t["z_pvalue"]))
    out.update(effect=effect, effect_name="jensenshannon")
    return out


def column_drift(column: str, ref: pd.Series, cur: pd.Series, ctype: str,
                 thresholds: dict[str, Any] | None = None) -> dict[str, Any]:
    t = _drift_thresholds(thresholds)
    if ctype == NUMERICAL:
        return _numerical(column, ref, cur, t)
    if ctype == CATEGORICAL:
        return _categorical(column, ref, cur, t)
    return _skip(column, ctype, f"{ctype} columns are not tested for drift")


def drift_table(ref_df: pd.DataFrame, cur_df: pd.DataFrame, columns: list[str] | None = None, *,
                thresholds: dict[str, Any] | None = None, types: dict[str, str] | None = None,
                workers: int = 2) -> list[dict[str, Any]]:
    """One row per column: column, type, test, statistic, threshold, drifted (+ effect, rows, skipped).

    ``columns`` defaults to the reference columns; a column missing from ``cur_df`` is reported as skipped.
    ``types`` overrides the inferred column types. ``thresholds`` is the full thresholds dict or its
    ``[drift]`` table (defaults: Evidently's).
    """
    cols = list(columns) if columns is not None else list(ref_df.columns)
    types = dict(types or {})

    def one(col: str) -> dict[str, Any]:
        if col not in ref_df.columns:
            return _skip(col, "unknown", "missing in reference")
        ctype = types.get(col) or column_type(ref_df[col], thresholds)
        if col not in cur_df.columns:
            return _skip(col, ctype, "missing in current")
        return column_drift(col, ref_df[col], cur_df[col], ctype, thresholds)

    if workers > 1 and len(cols) > 1 and len(ref_df) + len(cur_df) > 200_000:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # numpy sorts release the GIL
            return list(pool.map(one, cols))
    return [one(c) for c in cols]
