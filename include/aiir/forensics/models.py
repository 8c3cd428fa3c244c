"""Scoring with a registered version for forensics, through the one verified loader (aiir.models)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from aiir.errors import BadInput
from aiir.models import artifact_digest, load_verified

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

__all__ = ["artifact_digest", "load_scorer"]


def load_scorer(model: str, version: str) -> tuple[Callable[[pd.DataFrame], np.ndarray], list[str] | None, Any]:
    """``(score(df) -> P(positive), feature names or None, positive class)`` of a registered version.

    Loaded with :func:`aiir.models.load_verified`: the artifact digest is checked against the recorded one
    before anything is unpickled (IntegrityError on mismatch); the model needs ``predict_proba``."""
    vm = load_verified(model, version)
    est = vm.estimator
    if not callable(getattr(est, "predict_proba", None)):
        raise BadInput(f"{model} v{version}", "the model has no predict_proba (a probabilistic classifier "
                                              "is needed)")
    names = vm.feature_names

    def score(df: pd.DataFrame) -> np.ndarray:
        X = df[names] if names is not None else df
        proba = np.asarray(est.predict_proba(X))
        return proba[:, -1].astype(float) if proba.ndim == 2 else proba.astype(float)

    return score, names, vm.positive_class
