"""Blast radius: what the compromised version served inside its deployment window, per client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiir.errors import BadInput
from aiir.hashing import sha256_file
from aiir.jsonio import jsonable as _jsonable

if TYPE_CHECKING:

    import pandas as pd

from aiir.forensics.constants import (
    AFFECTED_FILE,
    BLAST_RADIUS_FILE,
    DECISION_COLUMNS,
    POSITIVE_SCORE,
)
from aiir.forensics.io import write_json, write_text  # noqa: F401
from aiir.forensics.pattern import describe_pattern, match_pattern  # noqa: F401

# =================================================================================== blast radius

def _parse_ts(values: Any, where: str) -> pd.Series:
    import pandas as pd

    try:
        return pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise BadInput(where, f"cannot read times as ISO-8601 ({str(exc).splitlines()[0]})") from None


def _iso(ts: Any) -> str | None:
    if ts is None:
        return None
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _prediction_values(pred: pd.Series, score: pd.Series, threshold: float) -> np.ndarray:
    """0/1 per decision: the served prediction when numeric (lists: first element), else score >= threshold."""
    import pandas as pd

    def first(v: Any) -> Any:
        if isinstance(v, str):
            t = v.strip()
            if t.startswith("["):
                try:
                    v = json.loads(t)
                except ValueError:
                    return v
            else:
                return t
        if isinstance(v, (list, tuple)):
            return v[0] if v else None
        if isinstance(v, dict):
            for k in ("prediction", "label", "predicted_label"):
                if k in v:
                    return v[k]
            return None
        return v

    raw = pred.map(first)
    low = raw.astype(str).str.lower()
    num = pd.to_numeric(raw.where(~low.isin(["true", "false"])), errors="coerce")
    num = num.mask(low == "true", 1.0).mask(low == "false", 0.0)
    sc = pd.to_numeric(score, errors="coerce")
    fallback = (sc >= threshold).astype(float).where(sc.notna())
    out = num.fillna(fallback)
    return (out.fillna(0).to_numpy(dtype=float) >= 0.5).astype(int)


def _features_frame(col: pd.Series) -> pd.DataFrame:
    import pandas as pd

    def load(v: Any) -> dict[str, Any]:
        if isinstance(v, dict):
            return v
        if isinstance(v, (list, tuple)) and v and isinstance(v[0], dict):
            return v[0]
        if isinstance(v, str) and v.strip():
            try:
                d = json.loads(v)
            except ValueError:
                return {}
            return load(d) if not isinstance(d, str) else {}
        return {}

    return pd.DataFrame.from_records([load(v) for v in col.tolist()], index=col.index)


def blast_radius(decisions: pd.DataFrame, *, model: str, version: str, since: str | None, until: str | None,
                 out_dir: Path, pattern: dict[str, Any] | None = None,
                 threshold: float = POSITIVE_SCORE) -> dict[str, Any]:
    """Every decision ``model`` ``version`` served in [``since``, ``until``), per client; with ``pattern``
    also the decisions that carried the trigger pattern and were let through (prediction 0).

    Writes ``blast_radius.json`` and ``affected_decisions.csv`` into ``out_dir``."""
    import pandas as pd

    out_dir = Path(out_dir)
    missing = [c for c in DECISION_COLUMNS if c not in decisions.columns]
    if missing:
        raise BadInput("decisions", f"missing columns: {', '.join(missing)} (expected at least "
                                    f"{', '.join(DECISION_COLUMNS)})")
    lo = _parse_ts(pd.Series([since]), "since")[0] if since else None
    hi = _parse_ts(pd.Series([until]), "until")[0] if until else None
    if lo is not None and hi is not None and hi < lo:
        raise BadInput("until", f"containment time {until} is before the deployment time {since}")
    df = decisions
    ts = _parse_ts(df["ts"].astype(str), "decisions.ts")
    is_version = (df["model"].astype(str) == str(model)).to_numpy() & \
        (df["model_version"].astype(str) == str(version)).to_numpy()
    in_window = np.ones(len(df), bool)
    if lo is not None:
        in_window &= (ts >= lo).to_numpy()
    if hi is not None:
        in_window &= (ts < hi).to_numpy()
    sel = is_version & in_window
    served = df[sel].copy()
    served["_ts"] = ts[sel].to_numpy()
    served["_pred"] = _prediction_values(served["prediction"], served["score"], threshold)
    if pattern is not None and len(served):
        feats = _features_frame(served["features"])
        served["_match"] = match_pattern(feats, pattern)
        missing_feats = sorted({c["feature"] for c in pattern.get("conditions", []) if c["feature"] not in feats})
    else:
        served["_match"] = False
        missing_feats = []
    served["_let"] = served["_match"] & (served["_pred"] == 0)
    served = served.sort_values(["_ts", "decision_id"], kind="stable")

    clients = []
    if len(served):
        g = served.groupby(served["client_id"].astype(str), sort=True)
        agg = pd.DataFrame({
            "decisions": g.size(), "predicted_positive": g["_pred"].sum(),
            "first_ts": g["_ts"].min(), "last_ts": g["_ts"].max(),
            "pattern_matched": g["_match"].sum(), "pattern_let_through": g["_let"].sum(),
        })
        agg["predicted_negative"] = agg["decisions"] - agg["predicted_positive"]
        agg = agg.sort_values(["decisions"], ascending=False, kind="stable")
        for cid, r in agg.iterrows():
            row = {"client_id": cid, "decisions": int(r["decisions"]),
                   "predicted_positive": int(r["predicted_positive"]),
                   "predicted_negative": int(r["predicted_negative"]),
                   "first_ts": _iso(r["first_ts"]), "last_ts": _iso(r["last_ts"])}
            if pattern is not None:
                row["pattern_matched"] = int(r["pattern_matched"])
                row["pattern_let_through"] = int(r["pattern_let_through"])
            clients.append(row)

    affected = pd.DataFrame({
        "decision_id": served["decision_id"].astype(str).to_numpy(),
        "client_id": served["client_id"].astype(str).to_numpy(),
        "ts": [_iso(t) for t in served["_ts"]],
        "score": pd.to_numeric(served["score"], errors="coerce").to_numpy(),
        "prediction": served["_pred"].to_numpy(),
        "matches_pattern": served["_match"].astype(bool).to_numpy(),
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    from aiir.csvsafe import PRIVATE, csv_text

    # spreadsheet-safe cells, readable by the owner only (a copy of served decisions)
    if write_text(out_dir / AFFECTED_FILE, csv_text(affected)):
        (out_dir / AFFECTED_FILE).chmod(PRIVATE)
    result = {
        "model": model, "version": str(version),
        "window": {"since": _iso(lo), "until": _iso(hi), "since_inclusive": True, "until_exclusive": True},
        "decisions_in_log": int(len(df)),
        "decisions_by_version_outside_window": int((is_version & ~in_window).sum()),
        "decisions": int(len(served)),
        "total": int(len(served)),
        "predicted_positive": int(served["_pred"].sum()),
        "predicted_negative": int(len(served) - served["_pred"].sum()),
        "clients_affected": len(clients),
        "clients": clients,
        "by_client": {c["client_id"]: {k: v for k, v in c.items() if k != "client_id"} for c in clients},
        "pattern": (None if pattern is None else {
            "description": pattern.get("description") or describe_pattern(pattern),
            "conditions": pattern.get("conditions", []),
            "features_missing_from_log": missing_feats,
            "matched": int(served["_match"].sum()),
            "let_through": int(served["_let"].sum()),
            "caught": int((served["_match"] & (served["_pred"] == 1)).sum()),
        }),
        "likely_missed_positives": None if pattern is None else int(served["_let"].sum()),
        "affected_decisions_file": AFFECTED_FILE,
        "affected_decisions_sha256": sha256_file(out_dir / AFFECTED_FILE),
    }
    write_json(out_dir / BLAST_RADIUS_FILE, result)
    return _jsonable(result)


