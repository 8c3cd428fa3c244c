"""The trigger pattern: the feature conditions the flipped rows share and the reference lacks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:

    import pandas as pd

from aiir.forensics.constants import (
    PATTERN_MAX_CONDITIONS,
    PATTERN_MIN_COVERAGE,
    PATTERN_MIN_LIFT,
    PATTERN_MIN_SEPARATION,
)

# ================================================================================ trigger pattern

def _cond(feature: str, op: str, value: Any, f_share: float, r_share: float) -> dict[str, Any]:
    return {"feature": feature, "op": op, "value": value, "flipped_share": float(f_share),
            "reference_share": float(r_share), "separation": float(f_share - r_share),
            "lift": float(f_share / r_share) if r_share > 0 else None}


def _feature_condition(col: str, f: pd.Series, r: pd.Series) -> dict[str, Any] | None:
    """The single condition on ``col`` that best separates the flipped rows ``f`` from the reference ``r``."""
    from pandas.api import types as pt

    floor = 1.0 / max(len(r), 1)
    numeric = pt.is_numeric_dtype(r.dtype) and not pt.is_bool_dtype(r.dtype) and pt.is_numeric_dtype(f.dtype)
    if numeric and r.nunique(dropna=True) > 2:
        rv = np.sort(r.to_numpy(dtype=float, na_value=np.nan))
        fv = np.sort(f.to_numpy(dtype=float, na_value=np.nan))
        rv, fv = rv[np.isfinite(rv)], fv[np.isfinite(fv)]
        if not len(rv) or not len(fv):
            return None
        cuts = np.unique(np.concatenate([np.quantile(rv, np.linspace(0, 1, 101)),
                                         np.quantile(fv, np.linspace(0, 1, 201)), np.unique(fv)[:500]]))
        fl = np.searchsorted(fv, cuts, side="right") / len(fv)
        rl = np.searchsorted(rv, cuts, side="right") / len(rv)
        d = fl - rl
        k = int(np.argmax(np.abs(d)))
        t = cuts[k]
        if pt.is_integer_dtype(r.dtype) and float(t).is_integer():
            t = int(t)
        else:
            t = float(t)
        if d[k] >= 0:
            return _cond(col, "<=", t, fl[k], max(rl[k], floor))
        return _cond(col, ">", t, 1 - fl[k], max(1 - rl[k], floor))
    # categorical (or binary numeric): the over-represented values
    fs = f.value_counts(normalize=True, dropna=False)
    rs = r.value_counts(normalize=True, dropna=False)
    lifts = {v: fs[v] / max(rs.get(v, 0.0), floor) for v in fs.index}
    over = sorted([v for v, lift in lifts.items() if lift >= PATTERN_MIN_LIFT], key=lambda v: -lifts[v])
    if not over:
        return None
    value = over[0].item() if hasattr(over[0], "item") else over[0]
    if len(over) == 1:
        return _cond(col, "==", value, fs[over[0]], max(rs.get(over[0], 0.0), floor))
    vals = [v.item() if hasattr(v, "item") else v for v in over]
    return _cond(col, "in", sorted(vals, key=str), float(fs[over].sum()),
                 max(float(sum(rs.get(v, 0.0) for v in over)), floor))


def derive_pattern(flipped: pd.DataFrame, reference: pd.DataFrame, *, ref_y: np.ndarray | None = None
                   ) -> dict[str, Any] | None:
    """The feature conditions over-represented in ``flipped`` rows vs. ``reference`` (see docs)."""
    cands = []
    for col in flipped.columns:
        c = _feature_condition(col, flipped[col], reference[col])
        if c is not None:
            cands.append(c)
    cands.sort(key=lambda c: -c["separation"])
    strong = [c for c in cands if c["separation"] >= PATTERN_MIN_SEPARATION
              and (c["lift"] is None or c["lift"] >= PATTERN_MIN_LIFT)][:PATTERN_MAX_CONDITIONS]
    if not strong:
        return None
    chosen: list[dict[str, Any]] = []
    f_mask = np.ones(len(flipped), bool)
    for c in strong:
        m = f_mask & _cond_mask(flipped, c)
        if m.mean() >= PATTERN_MIN_COVERAGE:
            chosen.append(c)
            f_mask = m
    pattern = {"conditions": chosen, "candidates": cands}
    r_mask = match_pattern(reference, pattern)
    pattern["match"] = {
        "flipped_rows": int(len(flipped)), "flipped_share": float(f_mask.mean()),
        "reference_rows": int(r_mask.sum()), "reference_share": float(r_mask.mean()),
        "reference_positive_rate": (float(ref_y[r_mask].mean()) if ref_y is not None and r_mask.any()
                                    else None),
    }
    pattern["description"] = describe_pattern(pattern)
    return pattern


def describe_pattern(pattern: dict[str, Any] | None) -> str:
    if not pattern or not pattern.get("conditions"):
        return ""
    parts = []
    for c in pattern["conditions"]:
        if c["op"] == "in":
            parts.append(f"{c['feature']} in {{{', '.join(map(str, c['value']))}}}")
        else:
            parts.append(f"{c['feature']} {c['op']} {c['value']}")
    return " AND ".join(parts)


def _cond_mask(df: pd.DataFrame, c: dict[str, Any]) -> np.ndarray:
    import pandas as pd

    if c["feature"] not in df.columns:
        return np.zeros(len(df), bool)
    s = df[c["feature"]]
    op, v = c["op"], c["value"]
    if op in ("<=", ">", "<", ">="):
        x = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            m = {"<=": x <= v, ">": x > v, "<": x < v, ">=": x >= v}[op]
        return np.asarray(m, bool)
    vals = v if op == "in" else [v]
    m = s.isin(vals).to_numpy()
    if not m.all():  # numbers that arrived as text (JSON) or as floats
        num = [x for x in vals if isinstance(x, (int, float)) and not isinstance(x, bool)]
        if num:
            x = pd.to_numeric(s, errors="coerce")
            m = m | x.isin(num).to_numpy()
        txt = [str(x) for x in vals]
        m = m | s.astype(str).isin(txt).to_numpy()
    return m


def match_pattern(df: pd.DataFrame, pattern: dict[str, Any] | None) -> np.ndarray:
    """Boolean mask of the rows of ``df`` meeting every condition of ``pattern`` (missing feature: False)."""
    if not pattern or not pattern.get("conditions"):
        return np.zeros(len(df), bool)
    m = np.ones(len(df), bool)
    for c in pattern["conditions"]:
        m &= _cond_mask(df, c)
    return m


