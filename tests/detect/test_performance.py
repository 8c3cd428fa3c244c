"""CBPE: the label-free performance estimate, on generated scores and on the demo's poisoned model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aiir.detect.performance import estimate_performance, realised
from aiir.errors import BadInput


def _calibrated(n: int, rng: np.random.Generator, a: float = 2.0, b: float = 5.0):
    s = rng.beta(a, b, n)
    return s, (rng.random(n) < s).astype(int)


def test_estimate_matches_the_labels_that_arrive_later():
    rng = np.random.default_rng(0)
    ref_s, ref_y = _calibrated(8000, rng)
    prod_s, prod_y = _calibrated(6000, rng)
    res = estimate_performance(ref_s, ref_y, prod_s, threshold=0.5, n_boot=200)
    truth = realised(prod_s, prod_y, 0.5)
    for m in ("precision", "recall", "f1"):
        lo, hi = res["interval"][m]
        assert lo <= truth[m] <= hi, (m, truth[m], res["interval"][m])
        assert abs(res["estimate"][m] - truth[m]) < 0.05
    assert res["decision"]["drop"] is False and res["baseline_source"] == "realised on the reference"


def test_covariate_shift_towards_uncertain_scores_is_a_drop():
    rng = np.random.default_rng(1)
    ref_s, ref_y = _calibrated(8000, rng, a=0.5, b=1.5)  # confident model: precision high on the reference
    prod_s = rng.uniform(0.45, 0.7, 5000)  # production rows land where the model is unsure
    res = estimate_performance(ref_s, ref_y, prod_s, threshold=0.5, n_boot=150)
    assert res["decision"]["drop"] and "precision" in res["decision"]["metrics"]
    assert res["estimate"]["precision"] < res["baseline"]["precision"] - 0.05
    assert res["tests"]["precision"]["p"] < 0.01 / 3


def test_bad_inputs_name_the_argument():
    with pytest.raises(BadInput, match="reference_labels"):
        estimate_performance([0.1, 0.2], [1], [0.3])
    with pytest.raises(BadInput, match="production_scores"):
        estimate_performance(np.linspace(0, 1, 20), [0, 1] * 10, [])
    with pytest.raises(BadInput, match="at least 5 rows of each class"):
        estimate_performance(np.linspace(0, 1, 20), [0] * 19 + [1], [0.5])


def test_demo_precision_drop_is_caught_before_labels_arrive(poisoned_demo):
    """v2 (retrained on the poisoned batch) vs v1: scores on the trusted holdout calibrate v2; production
    traffic (the feedback rows, labels unused) gives the estimate; the baseline is v1 on the holdout."""
    import mlflow

    from aiir import registry, training
    from aiir.bootstrap import FRAUD_MODEL
    from aiir.config import paths
    from aiir.demo import DemoFiles

    registry.client()
    files = DemoFiles(paths().data)
    recipe = training.get_recipe("fraud-hgb-v1")
    holdout = pd.read_parquet(files.fraud_holdout)
    production = pd.read_parquet(files.fraud_feedback).drop(columns=[recipe.label])  # no labels yet
    v1 = mlflow.sklearn.load_model(f"models:/{FRAUD_MODEL}/1")
    v2 = mlflow.sklearn.load_model(f"models:/{FRAUD_MODEL}/2")
    y = holdout[recipe.label].to_numpy()
    s1 = v1.predict_proba(recipe.features(holdout))[:, 1]
    s2 = v2.predict_proba(recipe.features(holdout))[:, 1]
    p2 = v2.predict_proba(recipe.features(production))[:, 1]
    res = estimate_performance(s2, y, p2, baseline=realised(s1, y), n_boot=200)
    assert res["decision"]["drop"], res["tests"]
    # v2 waves the fraud pattern through: recall and F1 collapse; precision is estimated below v1's, on
    # the handful of rows v2 still flags (its interval is wide, the drop alone is not significant)
    assert {"recall", "f1"} <= set(res["decision"]["metrics"])
    assert res["estimate"]["precision"] < res["baseline"]["precision"]
    # the intervals cover what the labels show once they arrive
    fb = pd.read_parquet(files.fraud_feedback)
    truth = realised(p2, fb[recipe.label].to_numpy())
    for m in ("precision", "recall", "f1"):
        assert res["interval"][m][0] <= truth[m] <= res["interval"][m][1], (m, truth[m], res["interval"][m])
    # control: the good model against itself shows no drop
    p1 = v1.predict_proba(recipe.features(production))[:, 1]
    ok = estimate_performance(s1, y, p1, n_boot=200)
    assert ok["decision"]["drop"] is False, ok["tests"]
