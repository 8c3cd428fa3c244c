"""Shared statistical primitives of the integrity check (and of forensics): small, pure, numpy/scipy only.

Every test returns a p-value for a stated null hypothesis, so the check can combine them into one
decision with a stated family-wise false-alarm rate (see :mod:`aiir.detect.decision`).

========================================  ===========================================================
function                                  what
========================================  ===========================================================
:func:`two_proportions`                   two-sided two-proportion z-test -> (z, p)
:func:`rate_ratio`                        symmetric smoothed ratio of two rates (>= 1)
:func:`min_effect_p`                      p of H0 "|true effect| <= tolerance" from an estimate and its SE
:func:`label_rate_test`                   class-rate change REF -> CUR with a minimum ratio (log scale)
:func:`excess_rate_test`                  binomial excess of flagged rows over an expected share
:func:`contrast_p`                        one group vs the rest (difference of two estimates)
:func:`holm`, :func:`fisher`,             multiple testing and combination of p-values
:func:`stouffer`, :func:`cauchy`,
:func:`bonferroni_min`
:func:`near_duplicate_keys`               64-bit row keys (exact or quantised), consistent across frames
:func:`point_masses`                      exact values a numeric feature's batch has far more of than REF
:func:`find_triggers`                     point masses grouped into rules, tested for label skew/source
:func:`rule_mask`                         rows matching a rule ``[{"feature", "op", "value"}, ...]``
========================================  ===========================================================
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

# ------------------------------------------------------------------------------------ rates


def two_proportions(k1: float, n1: float, k2: float, n2: float) -> tuple[float, float]:
    """Two-sided two-proportion z-test of k1/n1 (reference) against k2/n2 (current): (z, p)."""
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    p1, p2 = k1 / n1, k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return 0.0, 1.0
    z = (p2 - p1) / math.sqrt(var)
    return z, float(2 * stats.norm.sf(abs(z)))


def rate_ratio(k1: float, n1: float, k2: float, n2: float) -> float:
    """Symmetric ratio max(r2/r1, r1/r2) of two smoothed rates (>= 1)."""
    r1 = (k1 + 0.5) / (n1 + 1)
    r2 = (k2 + 0.5) / (n2 + 1)
    return max(r2 / r1, r1 / r2)


def min_effect_p(estimate: float, se: float, tolerance: float = 0.0) -> float:
    """p-value of H0: |true effect| <= ``tolerance`` given an (asymptotically normal) estimate and its SE.

    With ``tolerance = 0`` this is the ordinary two-sided z-test. With a tolerance it is the
    minimum-effect test: small, practically irrelevant effects (natural variation) are part of the null,
    so a huge sample does not make them "significant".
    """
    if not (math.isfinite(estimate) and math.isfinite(se)) or se <= 0:
        return 1.0 if abs(estimate) <= tolerance or not math.isfinite(estimate) else 0.0
    if tolerance <= 0:
        return float(2 * stats.norm.sf(abs(estimate) / se))
    # P(|Z + tol/se| >= |est|/se), the least favourable point of the null
    a = abs(estimate) / se
    b = tolerance / se
    return float(min(1.0, stats.norm.sf(a - b) + stats.norm.cdf(-a - b)))


def log_rate(k: float, n: float) -> tuple[float, float]:
    """Log of a smoothed rate and its delta-method SE."""
    k, n = float(k) + 0.5, float(n) + 1.0
    r = k / n
    return math.log(r), math.sqrt(max(1e-12, 1.0 / k - 1.0 / n))


def label_rate_test(ref_labels: Any, cur_labels: Any, positive: Any, *, min_ratio: float = 1.0
                    ) -> dict[str, Any]:
    """Has the rate of class ``positive`` moved from REF to CUR by more than a factor ``min_ratio``?

    H0: |log(rate_cur / rate_ref)| <= log(min_ratio). Returns rates, counts, ``ratio`` (symmetric, >= 1),
    ``direction`` (+1 up, -1 down) and ``p``.
    """
    r = np.asarray(pd.Series(ref_labels).dropna() == positive)
    c = np.asarray(pd.Series(cur_labels).dropna() == positive)
    k1, n1, k2, n2 = int(r.sum()), int(r.size), int(c.sum()), int(c.size)
    if n1 == 0 or n2 == 0:
        return {"ref_count": k1, "ref_rows": n1, "cur_count": k2, "cur_rows": n2, "ratio": 1.0,
                "direction": 0, "p": 1.0}
    l1, s1 = log_rate(k1, n1)
    l2, s2 = log_rate(k2, n2)
    d = l2 - l1
    p = min_effect_p(d, math.hypot(s1, s2), math.log(max(1.0, min_ratio)))
    return {"ref_count": k1, "ref_rows": n1, "ref_rate": k1 / n1, "cur_count": k2, "cur_rows": n2,
            "cur_rate": k2 / n2, "ratio": rate_ratio(k1, n1, k2, n2), "log_ratio": d,
            "log_ratio_se": math.hypot(s1, s2), "direction": 1 if d > 0 else -1, "p": p}


def excess_rate_test(count: int, n: int, expected_share: float) -> float:
    """One-sided binomial p of observing at least ``count`` flagged rows of ``n`` at ``expected_share``."""
    if n <= 0 or count <= 0:
        return 1.0
    if expected_share <= 0:
        return 0.0
    return float(stats.binom.sf(count - 1, n, min(1.0, expected_share)))


def contrast_p(est: float, se: float, est_rest: float, se_rest: float, *, direction: int = 0,
               tolerance: float = 0.0) -> float:
    """p of H0 "this group is no further than ``tolerance`` from the rest" (one-sided when ``direction``)."""
    d = est - est_rest
    s = math.hypot(se, se_rest)
    if s <= 0 or not math.isfinite(s):
        return 1.0
    if direction:
        return float(stats.norm.sf((direction * d - tolerance) / s))
    return min_effect_p(d, s, tolerance)


# --------------------------------------------------------------------------- multiple testing


def holm(pvalues: Mapping[str, float], alpha: float) -> dict[str, dict[str, Any]]:
    """Holm's step-down procedure (family-wise error rate ``alpha`` under any dependence).

    Returns, per name, the Holm-adjusted p-value (``p_adjusted``) and whether it is rejected.
    """
    items = sorted(((float(p) if p is not None and math.isfinite(p) else 1.0, k) for k, p in pvalues.items()))
    m = len(items)
    out: dict[str, dict[str, Any]] = {}
    running = 0.0
    stop = False
    for i, (p, k) in enumerate(items):
        adj = min(1.0, max(running, (m - i) * p))
        running = adj
        reject = not stop and p <= alpha / (m - i)
        if not reject:
            stop = True
        out[k] = {"p": p, "p_adjusted": adj, "reject": reject}
    return out


def bonferroni_min(pvalues: Iterable[float]) -> float:
    """min(p) x number of tests (capped at 1): valid under any dependence."""
    ps = [float(p) for p in pvalues if p is not None and math.isfinite(p)]
    return min(1.0, min(ps) * len(ps)) if ps else 1.0


def fisher(pvalues: Iterable[float]) -> float:
    """Fisher's combination of independent p-values: -2 sum log p ~ chi2(2k)."""
    ps = [max(1e-300, float(p)) for p in pvalues if p is not None and math.isfinite(p)]
    if not ps:
        return 1.0
    return float(stats.chi2.sf(-2.0 * sum(math.log(p) for p in ps), 2 * len(ps)))


def stouffer(pvalues: Iterable[float], weights: Sequence[float] | None = None) -> float:
    """Stouffer's weighted z combination of independent one-sided p-values."""
    ps = [min(1 - 1e-16, max(1e-300, float(p))) for p in pvalues if p is not None and math.isfinite(p)]
    if not ps:
        return 1.0
    w = np.asarray(weights if weights is not None else [1.0] * len(ps), dtype=float)
    z = stats.norm.isf(np.asarray(ps))
    return float(stats.norm.sf(float(np.dot(w, z)) / math.sqrt(float(np.dot(w, w)))))


def cauchy(pvalues: Iterable[float]) -> float:
    """Cauchy (ACAT) combination: valid under arbitrary dependence for small p-values."""
    ps = [min(1 - 1e-16, max(1e-300, float(p))) for p in pvalues if p is not None and math.isfinite(p)]
    if not ps:
        return 1.0
    t = float(np.mean(np.tan((0.5 - np.asarray(ps)) * math.pi)))
    if t > 1e15:
        return float(min(1.0, 1.0 / (t * math.pi)))
    return float(min(1.0, max(0.0, 0.5 - math.atan(t) / math.pi)))


# -------------------------------------------------------------------------------- row keys

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser of ``x`` (a new array; :func:`_splitmix_inplace` writes into ``x``)."""
    return _splitmix_inplace(x.copy(), np.empty_like(x))


def quantiles(x: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``np.quantile(x, probs)``, the same values, faster for many ``probs``: numpy's vectorised sort first,
    so the selection runs on sorted data (order statistics do not depend on the input order)."""
    return np.quantile(np.sort(np.asarray(x, dtype="float64")), probs)


def _distinct(x: np.ndarray) -> int:
    """``np.unique(x).size`` for finite floats by hashing (no sort); -0.0 and 0.0 are one value."""
    return int(pd.unique(np.asarray(x, dtype="float64") + 0.0).size)


def _numeric_array(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def near_duplicate_keys(ref: pd.DataFrame, cur: pd.DataFrame, columns: Sequence[str],
                        numerical: Iterable[str] = (), *, near: bool = True, bins: int = 100,
                        exact_max_distinct: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """64-bit row keys of ``ref`` and ``cur`` over ``columns``, consistent across the two frames.

    Numerical columns (``numerical``) are compared as float64 (int/float dtype differences ignored);
    with ``near=True`` they are quantised into ``bins`` reference-quantile bins (columns with at most
    ``exact_max_distinct`` distinct reference values stay exact), so near-copies share a key. Other
    columns are factorised jointly. NaN is a value of its own.
    """
    return row_key_levels(ref, cur, columns, numerical, levels=(near,), bins=bins,
                          exact_max_distinct=exact_max_distinct)[near]


def _splitmix_inplace(x: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """:func:`_splitmix` of ``x`` written into ``x`` (``tmp``: scratch of the same shape)."""
    for shift, mul in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        np.right_shift(x, np.uint64(shift), out=tmp)
        x ^= tmp
        x *= np.uint64(mul)
    np.right_shift(x, np.uint64(31), out=tmp)
    x ^= tmp
    return x


def _combine(h: np.ndarray, mixed: np.ndarray, tmp: np.ndarray, acc: np.ndarray) -> None:
    """``h = _splitmix(h ^ (mixed + (h << 6) + (h >> 2)))`` in place (``mixed`` = _splitmix(code + golden))."""
    np.left_shift(h, np.uint64(6), out=acc)
    acc += mixed
    np.right_shift(h, np.uint64(2), out=tmp)
    acc += tmp
    h ^= acc
    _splitmix_inplace(h, tmp)


_KEY_CHUNK = 32_768  # rows hashed at a time: the arrays of a chunk stay in the CPU cache


def row_key_levels(ref: pd.DataFrame, cur: pd.DataFrame, columns: Sequence[str], numerical: Iterable[str] = (),
                   *, levels: Sequence[bool] = (False, True), bins: int = 100, exact_max_distinct: int = 50
                   ) -> dict[bool, tuple[np.ndarray, np.ndarray]]:
    """:func:`near_duplicate_keys` at each ``near`` level of ``levels`` in one pass over the columns (the
    same keys; what the levels share — column values, categorical codes, a column's code when it is exact
    at both levels — is computed once; the hashing runs in cache-sized row chunks):
    ``{near: (ref keys, cur keys)}``."""
    num = set(numerical)
    n_ref = len(ref)
    n = n_ref + len(cur)
    hs = {lv: np.zeros(n, dtype=np.uint64) for lv in levels}
    m = min(n, _KEY_CHUNK)
    mixed, tmp, acc = (np.empty(m, dtype=np.uint64) for _ in range(3))

    def fold(codes: dict[bool, np.ndarray]) -> None:
        """h = combine(h, splitmix(code + golden)) for each level's code, chunk by chunk."""
        for i in range(0, n, _KEY_CHUNK):
            j = min(n, i + _KEY_CHUNK)
            w = j - i
            done: dict[int, np.ndarray] = {}
            for lv in levels:
                code = codes[lv]
                if id(code) not in done:
                    x = mixed[:w] if not done else np.empty(w, dtype=np.uint64)
                    np.add(code[i:j], _GOLDEN, out=x)
                    done[id(code)] = _splitmix_inplace(x, tmp[:w])
                _combine(hs[lv][i:j], done[id(code)], tmp[:w], acc[:w])

    with np.errstate(over="ignore"):
        for c in columns:
            by_level: dict[bool, np.ndarray] = {}
            if c in num:
                r, k = _numeric_array(ref[c]), _numeric_array(cur[c])
                both = np.concatenate([r, k])
                nan = np.isnan(both)
                exact_code = None
                rf = None
                for lv in levels:
                    quantised = False
                    if lv:
                        rf = r[np.isfinite(r)] if rf is None else rf
                        quantised = bool(rf.size and _distinct(rf[: 200_000]) > exact_max_distinct)
                    if quantised:
                        edges = np.unique(quantiles(rf, np.linspace(0, 1, bins + 1))[1:-1])
                        code = np.searchsorted(edges, both, side="right").astype(np.uint64)
                        code[nan] = np.uint64(0xFFFFFFFFFFFFFFF1)
                        by_level[lv] = code
                    else:
                        if exact_code is None:
                            exact_code = (both + 0.0).view(np.uint64).copy()  # -0.0 -> 0.0
                            exact_code[nan] = np.uint64(0xFFFFFFFFFFFFFFF1)
                        by_level[lv] = exact_code
            else:
                codes, _ = pd.factorize(pd.concat([ref[c], cur[c]], ignore_index=True))
                by_level = dict.fromkeys(levels, codes.astype(np.int64, copy=False).view(np.uint64))
            fold(by_level)
    return {lv: (h[:n_ref], h[n_ref:]) for lv, h in hs.items()}


# ---------------------------------------------------------------------- point masses, triggers


def _py(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _number(v: float) -> int | float:
    """A float that is a whole number as int (JSON-friendly rule values), else the float."""
    v = float(v)
    return int(v) if v.is_integer() and abs(v) < 2 ** 53 else v


def point_masses(ref_values: Any, cur_values: Any, *, min_count: int = 10, min_ratio: float = 3.0,
                 min_share: float = 0.0, window: int = 10) -> list[dict[str, Any]]:
    """Exact values that CUR has far more of than REF would produce: candidate trigger values.

    For every value ``v`` that occurs at least ``min_count`` times in CUR, the expected count is
    ``n_cur * m(v) / n_ref`` where ``m(v)`` is the larger of REF's own count of ``v`` and the mean
    multiplicity of the ``2 * window`` nearest distinct REF values (which absorbs rounding grids: amounts
    in cents repeat naturally), and at least 1 — and never below CUR's own mean multiplicity of the
    ``2 * window`` distinct values around ``v`` (a drifted, sharply peaked distribution is dense there too). The one-sided Poisson p-value is Bonferroni-corrected over
    the number of distinct CUR values. Returns the values with ratio >= ``min_ratio``, most significant first:
    ``{"value", "count", "share", "expected", "ref_count", "ratio", "p", "p_raw"}``.
    """
    r = np.asarray(ref_values, dtype="float64")
    c = np.asarray(cur_values, dtype="float64")
    r = r[np.isfinite(r)]
    c = c[np.isfinite(c)]
    if r.size < 2 or c.size < min_count:
        return []
    cu, cc = np.unique(c, return_counts=True)
    keep = cc >= max(1, min_count)
    if min_share > 0:
        keep &= cc >= min_share * c.size
    if not keep.any():
        return []
    ru, rc = np.unique(r, return_counts=True)
    vals, counts = cu[keep], cc[keep]
    pos = np.searchsorted(ru, vals)
    exact = np.zeros(vals.size)
    hit = (pos < ru.size) & (ru[np.minimum(pos, ru.size - 1)] == vals)
    exact[hit] = rc[pos[hit]]
    csum = np.concatenate([[0], np.cumsum(rc)])
    lo = np.clip(pos - window, 0, ru.size)
    hi = np.clip(pos + window + hit.astype(int), 0, ru.size)
    width = np.maximum(1, hi - lo)
    local = (csum[hi] - csum[lo]) / width
    m = np.maximum(np.maximum(exact, local), 1.0)
    expected = c.size * m / r.size
    # ... and never below the batch's own local multiplicity around v (v left out): a distribution that
    # moved (drift) has dense neighbours in CUR, a planted value stands out of its neighbourhood
    ci = np.flatnonzero(keep)
    ccs = np.concatenate([[0], np.cumsum(cc)])
    clo = np.clip(ci - window, 0, cu.size)
    chi = np.clip(ci + window + 1, 0, cu.size)
    own = (ccs[chi] - ccs[clo] - cc[ci]) / np.maximum(1, chi - clo - 1)
    expected = np.maximum(expected, own)
    p_raw = stats.poisson.sf(counts - 1, expected)
    p = np.minimum(1.0, p_raw * cu.size)
    ratio = counts / expected
    out = []
    for i in np.argsort(p_raw, kind="stable"):
        if ratio[i] < min_ratio:
            continue
        v = vals[i]
        out.append({"value": _number(v),
                    "count": int(counts[i]), "share": float(counts[i] / c.size), "expected": float(expected[i]),
                    "ref_count": int(exact[i]), "ratio": float(ratio[i]), "p": float(p[i]), "p_raw": float(p_raw[i])})
    return out


def rule_mask(df: pd.DataFrame, rule: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Rows of ``df`` meeting every condition of ``rule`` (``op`` one of ==, !=, <, <=, >, >=, in).

    A condition on a missing column matches nothing. Numbers are compared numerically whatever the dtype.
    """
    m = np.ones(len(df), dtype=bool)
    for cond in rule:
        col, op, v = cond["feature"], cond["op"], cond["value"]
        if col not in df.columns:
            return np.zeros(len(df), dtype=bool)
        s = df[col]
        numeric_value = isinstance(v, (int, float)) and not isinstance(v, bool)
        if op in ("<", "<=", ">", ">=") or (op in ("==", "!=") and numeric_value):
            x = _numeric_array(s)
            with np.errstate(invalid="ignore"):
                part = {"<": x < v, "<=": x <= v, ">": x > v, ">=": x >= v, "==": x == v, "!=": x != v}[op]
        elif op in ("==", "!="):
            part = (s == v).to_numpy()
            part = part if op == "==" else ~part
        elif op == "in":
            part = s.isin(list(v)).to_numpy()
        else:
            raise ValueError(f"unknown rule operator {op!r}")
        m &= np.asarray(part, dtype=bool)
    return m


def describe_rule(rule: Sequence[Mapping[str, Any]]) -> str:
    return " AND ".join(f"{c['feature']} {c['op']} {c['value']!r}" for c in rule)


def find_triggers(ref: pd.DataFrame, cur: pd.DataFrame, features: Sequence[str], *,
                  label: str | None = None, source: str | None = None, alpha: float = 1e-6,
                  min_count: int = 10, min_ratio: float = 3.0, max_triggers: int = 10,
                  min_distinct: int = 20, overlap: float = 0.5,
                  context: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Candidate backdoor triggers: exact values (point masses) CUR carries and REF lacks, grouped into rules.

    ``features`` are the numerical columns to scan (columns with fewer than ``min_distinct`` distinct REF
    values are skipped: their values repeat by nature). Point masses with Bonferroni p < ``alpha`` whose
    rows overlap (Jaccard >= ``overlap``) are merged into one rule, e.g.
    ``[{"feature": "x1", "op": "==", "value": 7.5}, {"feature": "x2", "op": "==", "value": -3}]``.

    A value counts the *distinct* rows carrying it: rows that agree on every other ``context`` feature
    (default the scanned ones; numbers compared in 5 %-quantile reference bins) count once, so a cluster of
    near-copies is left to the duplicate signal — a trigger rides on otherwise varied rows.

    Each trigger: ``rule``, ``description``, ``rows`` (count), ``share``, ``p`` (existence),
    ``mask`` (boolean over CUR rows, not JSON), ``label`` (skew of the label among the rows vs the rest
    of CUR: dominant class, rates, ``p``) and ``sources`` (rows per source, the concentrated source and
    the ``p`` of that concentration).
    """
    scan = []
    for f in features:
        if f not in ref.columns or f not in cur.columns:
            continue
        r = _numeric_array(ref[f])
        r = r[np.isfinite(r)]
        if r.size and _distinct(r[:200_000]) >= min_distinct:
            scan.append((f, r))
    atoms = []
    ctx = [c for c in (context if context is not None else [f for f, _ in scan]) if c in cur.columns
           and c in ref.columns]
    codes: np.ndarray | None = None
    for f, r in scan:
        cf = _numeric_array(cur[f])
        for pm in point_masses(r, cf, min_count=min_count, min_ratio=min_ratio):
            pm["p"] = min(1.0, pm["p"] * len(scan))  # Bonferroni over the scanned features too
            if pm["p"] >= alpha:
                continue
            # count the distinct rows carrying the value: copies of one row (same other features, numbers
            # in 5 %-quantile bins) count once, so a cluster of near-duplicates is not a trigger
            if codes is None:
                codes = _context_codes(ref, cur, ctx)
            keep = [j for j, c in enumerate(ctx) if c != f]
            if keep:
                sub = codes[cf == pm["value"]][:, keep]
                distinct = int(np.unique(sub, axis=0).shape[0])
                if distinct < pm["count"]:
                    p_raw = float(stats.poisson.sf(distinct - 1, pm["expected"]))
                    pm.update(distinct_rows=distinct, p_raw=p_raw,
                              p=min(1.0, p_raw * len(scan) * max(1, _distinct(cf[np.isfinite(cf)]))))
                    if pm["p"] >= alpha or distinct < min_count or distinct / pm["expected"] < min_ratio:
                        continue
            atoms.append((f, pm))
    if not atoms:
        return []
    atoms.sort(key=lambda a: a[1]["p_raw"])
    atoms = atoms[: 5 * max_triggers]
    cur_num = {f: _numeric_array(cur[f]) for f, _ in atoms}
    groups: list[dict[str, Any]] = []
    for f, pm in atoms:
        m = cur_num[f] == pm["value"]
        for g in groups:
            inter = int((g["mask"] & m).sum())
            union = int((g["mask"] | m).sum())
            if f not in g["features"] and union and inter / union >= overlap:
                g["mask"] = g["mask"] & m
                g["features"].add(f)
                g["rule"].append({"feature": str(f), "op": "==", "value": pm["value"]})
                g["p"] = min(g["p"], pm["p"])
                g["atoms"].append({"feature": str(f), **pm})
                break
        else:
            groups.append({"mask": m, "features": {f}, "rule": [{"feature": str(f), "op": "==", "value": pm["value"]}],
                           "p": pm["p"], "atoms": [{"feature": str(f), **pm}]})
    out = []
    n = len(cur)
    for g in groups:
        if len(out) >= max_triggers:
            break
        mask = g["mask"]
        k = int(mask.sum())
        if k < min_count:
            continue
        # a trigger rides on otherwise varied rows; rows that also share their other features are copies
        # (the duplicate signal's business), not a trigger
        trig: dict[str, Any] = {"rule": g["rule"], "description": describe_rule(g["rule"]), "rows": k,
                                "share": k / n if n else 0.0, "p": g["p"], "atoms": g["atoms"], "mask": mask}
        if label is not None and label in cur.columns:
            trig["label"] = _label_skew(cur[label], mask)
        if source is not None and source in cur.columns:
            trig["sources"] = _concentration(cur[source], mask)
        out.append(trig)
    return out


def _context_codes(ref: pd.DataFrame, cur: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Integer codes of ``cur`` per column: numbers in 20 reference-quantile bins, other values factorised."""
    out = np.zeros((len(cur), len(columns)), dtype=np.int32)
    for j, c in enumerate(columns):
        r = ref[c]
        if pd.api.types.is_numeric_dtype(r.dtype) and not pd.api.types.is_bool_dtype(r.dtype) and r.nunique() > 20:
            rv = _numeric_array(r)
            rv = rv[np.isfinite(rv)]
            edges = np.unique(quantiles(rv, np.linspace(0, 1, 21))[1:-1]) if rv.size else np.array([])
            out[:, j] = np.searchsorted(edges, _numeric_array(cur[c]), side="right")
        else:
            out[:, j] = pd.factorize(cur[c])[0]
    return out


def _label_skew(labels: pd.Series, mask: np.ndarray) -> dict[str, Any]:
    """The class most over-represented among ``mask`` rows vs the other rows (two-proportion, Bonferroni)."""
    lab = labels.to_numpy()
    inside, rest = lab[mask], lab[~mask]
    vc = pd.Series(inside).value_counts()
    if vc.empty:
        return {"class": None, "p": 1.0}
    best = None
    classes = pd.unique(pd.Series(lab).dropna())
    for cls in classes:
        k1, n1 = int((rest == cls).sum()), int(rest.size)
        k2, n2 = int((inside == cls).sum()), int(inside.size)
        z, p = two_proportions(k1, n1, k2, n2)
        p = float(stats.norm.sf(z))  # one-sided: over-represented inside
        row = {"class": _py(cls), "rate": k2 / n2 if n2 else 0.0, "rest_rate": k1 / n1 if n1 else 0.0,
               "z": z, "p": min(1.0, p * max(1, len(classes)))}
        if best is None or row["p"] < best["p"]:
            best = row
    return best or {"class": None, "p": 1.0}


def _concentration(src: pd.Series, mask: np.ndarray) -> dict[str, Any]:
    """Which source holds the rows of ``mask``: counts and the binomial p of the top source's excess."""
    s = src.astype(str).to_numpy()
    total = pd.Series(s).value_counts()
    inside = pd.Series(s[mask]).value_counts()
    k = int(mask.sum())
    if inside.empty:
        return {"by_source": {}, "top": None, "p": 1.0}
    top = str(inside.index[0])
    share = total[top] / len(s)
    p = excess_rate_test(int(inside.iloc[0]), k, share)
    by = {str(a): int(b) for a, b in inside.head(20).items()}
    return {"by_source": by, "top": top, "top_share_of_rows": float(inside.iloc[0] / k),
            "top_share_of_batch": float(share), "p": min(1.0, p * len(total))}


# ------------------------------------------------------------------- per-source feature shift


def pit(ref_sorted: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Mid-rank probability integral transform of ``x`` through the sorted reference values (NaN kept)."""
    n = ref_sorted.size
    lo = np.searchsorted(ref_sorted, x, side="left")
    hi = np.searchsorted(ref_sorted, x, side="right")
    u = (lo + hi) / (2.0 * n)
    u[~np.isfinite(x)] = np.nan
    return u


def pit_grid(ref_values: np.ndarray, grid: int = 2001) -> tuple[np.ndarray, np.ndarray]:
    """A piecewise-linear reference CDF on ``grid`` quantiles: ``(values, probabilities)`` for :func:`pit_fast`.

    O(n) to build (no full sort), O(log grid) per value to apply: the same monotone map for every sample,
    so tests comparing transformed samples stay valid; with ties the map is the mid-point of the tie.
    """
    r = np.asarray(ref_values, dtype="float64")
    r = r[np.isfinite(r)]
    probs = np.linspace(0.0, 1.0, grid)
    q = quantiles(r, probs)
    # ties: one (value, mid-probability) point per distinct quantile value, so a tied value maps to the middle
    uq, first = np.unique(q, return_index=True)
    last = np.append(first[1:] - 1, q.size - 1)
    return uq, (probs[first] + probs[last]) / 2.0


def pit_fast(grid: tuple[np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Apply a :func:`pit_grid` map (NaN kept; values beyond the reference range map to 0 or 1)."""
    values, probs = grid
    u = np.interp(x, values, probs, left=0.0, right=1.0) if values.size > 1 else np.full(x.shape, 0.5)
    u = np.asarray(u, dtype="float64")
    u[~np.isfinite(x)] = np.nan
    return u


def group_sums(values: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Per group code 0..k-1 (code -1 ignored, NaN values left out): array (k, 3) of n, sum, sum of squares."""
    ok = np.isfinite(values) & (codes >= 0)
    v, c = (values, codes) if ok.all() else (values[ok], codes[ok])
    return np.stack([np.bincount(c, minlength=k).astype(float), np.bincount(c, weights=v, minlength=k),
                     np.bincount(c, weights=v * v, minlength=k)], axis=1)


def mean_se(s: np.ndarray) -> tuple[float, float, float]:
    """(n, mean, squared SE of the mean) from one row of :func:`group_sums`."""
    n, s1, s2 = (float(x) for x in s)
    if n < 2:
        return n, math.nan, math.nan
    mean = s1 / n
    var = max(0.0, (s2 - n * mean * mean) / (n - 1))
    return n, mean, var / n
