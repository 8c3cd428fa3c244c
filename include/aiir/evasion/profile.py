"""The reference profile: which numeric features, how to standardise them, and the outlier model.

Fitted on the model's reference (training) data. Standardisation is ``(x - mean) / std`` per feature;
the outlier model is the Mahalanobis distance of the standardised input under the reference covariance
(ridge-regularised), with the cut at a quantile of the reference's own distances (``ood_quantile``), so
the clean out-of-distribution rate is ``1 - ood_quantile`` by construction. Saved as JSON so the gateway's
guard loads it with numpy alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiir.errors import BadInput

PROFILE_SCHEMA = "aiir.evasion.profile/1"


@dataclass
class Profile:
    columns: list[str]
    mean: np.ndarray
    std: np.ndarray
    inv_cov: np.ndarray | None = None
    ood_threshold: float | None = None  # on the squared Mahalanobis distance
    source: dict[str, Any] | None = None

    @property
    def d(self) -> int:
        return len(self.columns)

    def standardise(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.std

    def mahalanobis2(self, Z: np.ndarray) -> np.ndarray:
        if self.inv_cov is None:
            raise ValueError("profile has no outlier model")
        return np.einsum("ij,jk,ik->i", Z, self.inv_cov, Z)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": PROFILE_SCHEMA, "columns": self.columns, "mean": self.mean.tolist(),
                "std": self.std.tolist(),
                "inv_cov": self.inv_cov.tolist() if self.inv_cov is not None else None,
                "ood_threshold": self.ood_threshold, "source": self.source}

    def save(self, path: str | Path) -> Path:
        from aiir.gateway.state import atomic_write_json

        atomic_write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "profile") -> Profile:
        try:
            if d.get("schema") != PROFILE_SCHEMA:
                raise ValueError(f"schema is {d.get('schema')!r}, expected {PROFILE_SCHEMA!r}")
            cols = [str(c) for c in d["columns"]]
            mean = np.asarray(d["mean"], dtype=float)
            std = np.asarray(d["std"], dtype=float)
            inv = np.asarray(d["inv_cov"], dtype=float) if d.get("inv_cov") is not None else None
            if not cols or mean.shape != (len(cols),) or std.shape != mean.shape or (std <= 0).any():
                raise ValueError("columns, mean and std must have one positive entry per feature")
            if inv is not None and inv.shape != (len(cols), len(cols)):
                raise ValueError("inv_cov must be a d x d matrix")
            thr = d.get("ood_threshold")
            return cls(cols, mean, std, inv, float(thr) if thr is not None else None, d.get("source"))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(where, f"not a usable evasion profile ({exc})") from None

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadInput(str(p), f"cannot read the evasion profile ({exc})") from None
        if not isinstance(d, dict):
            raise BadInput(str(p), "not a usable evasion profile (expected a JSON object)")
        return cls.from_dict(d, str(p))


def fit_profile(X: np.ndarray, columns: list[str], *, ood_quantile: float = 0.999,
                source: dict[str, Any] | None = None) -> Profile:
    """Fit standardisation and the Mahalanobis outlier model on reference rows ``X`` (n x d)."""
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[0] < max(10, X.shape[1] + 2):
        raise BadInput("reference", f"needs at least {max(10, X.shape[1] + 2)} rows of numeric features, "
                                    f"got {X.shape[0]}")
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    Z = (X - mean) / std
    cov = np.cov(Z, rowvar=False) + 1e-3 * np.eye(Z.shape[1])
    inv = np.linalg.inv(cov)
    m2 = np.einsum("ij,jk,ik->i", Z, inv, Z)
    thr = float(np.quantile(m2, ood_quantile)) if 0 < ood_quantile < 1 else None
    return Profile(list(columns), mean, std, inv, thr, source)


def profile_from_table(path: str | Path, *, columns: list[str] | None = None, ood_quantile: float = 0.999,
                       exclude: tuple[str, ...] = (), restrict: list[str] | None = None) -> Profile:
    """A profile from a CSV/Parquet reference: its numeric columns (or ``columns``), minus ``exclude``;
    with ``restrict`` (the features the decisions carry), only those of them the reference has."""
    from aiir.hashing import sha256_file
    from aiir.tabular import read_table

    df = read_table(path, what="reference")
    if restrict is not None and columns is None:  # the decisions' features the reference has, numeric ones
        columns = [c for c in restrict if c in df.columns and c not in exclude and _numeric(df[c])]
        if not columns:
            raise BadInput(str(path), f"reference has none of the decisions' features ({', '.join(restrict[:10])})")
    if columns is None:
        columns = [c for c in df.columns if c not in exclude and _numeric(df[c])]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise BadInput(str(path), f"reference lacks feature column(s): {', '.join(map(str, missing))}")
    bad = [c for c in columns if not _numeric(df[c])]
    if bad:
        raise BadInput(str(path), f"reference column(s) are not numeric: {', '.join(map(str, bad))}")
    if not columns:
        raise BadInput(str(path), "reference has no numeric feature columns")
    X = df[columns].astype(float).dropna().to_numpy()
    return fit_profile(X, [str(c) for c in columns], ood_quantile=ood_quantile,
                       source={"path": str(Path(path).resolve()), "sha256": sha256_file(path), "rows": int(len(X))})


def load_reference(path: str | Path, *, columns: list[str] | None = None, ood_quantile: float = 0.999,
                   exclude: tuple[str, ...] = (), restrict: list[str] | None = None) -> Profile:
    """A saved profile (``.json``) or a reference table (CSV/Parquet)."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(str(p), "reference file not found")
    if p.suffix.lower() == ".json":
        return Profile.load(p)
    return profile_from_table(p, columns=columns, ood_quantile=ood_quantile, exclude=exclude, restrict=restrict)


def _numeric(s) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s))


def finite(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None
