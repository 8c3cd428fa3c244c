"""Per-feature drift: Evidently 0.7's default test choice and statistics, reimplemented in numpy/scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from aiir.detect.drift import column_type, drift_table, js_distance, wasserstein_sorted


def _frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "num": rng.normal(shift, 1, n),
        "skewed": rng.lognormal(0, 1 + shift, n),
        "int_many": rng.integers(0, 100, n),
        "int_few": rng.integers(0, 3 + (shift > 0), n),
        "flag": rng.integers(0, 2, n),
        "low_float": rng.choice([0.0, 1.0, 2.5], n, p=[.5, .3, .2] if shift == 0 else [.35, .45, .2]),
        "cat": rng.choice(list("abcdef"), n, p=[.3, .2, .2, .1, .1, .1] if shift == 0 else [.15, .2, .2, .25, .1, .1]),
        "binary_cat": rng.choice(["x", "y"], n),
    })


def test_column_types_follow_evidently_inference():
    rng = np.random.default_rng(0)
    n = 2000
    df = pd.DataFrame({
        "f": rng.normal(size=n), "i_small": rng.integers(0, 10, n), "i_big": rng.integers(0, 1000, n),
        "ident": np.arange(n), "s": rng.choice(["a", "b"], n), "text": [f"free text {i}" for i in range(n)],
        "b": rng.random(n) < 0.5, "ts": pd.date_range("2024-01-01", periods=n, freq="min"), "empty": np.nan,
    })
    got = {c: column_type(df[c]) for c in df.columns}
    assert got == {"f": "numerical", "i_small": "categorical", "i_big": "numerical", "ident": "id",
                   "s": "categorical", "text": "text", "b": "categorical", "ts": "datetime", "empty": "empty"}


@pytest.mark.parametrize("n,expected", [
    (400, {"num": "ks", "skewed": "ks", "int_many": "ks", "int_few": "chisquare", "flag": "z",
           "low_float": "chisquare", "cat": "chisquare", "binary_cat": "z"}),
    (3000, {"num": "wasserstein", "skewed": "wasserstein", "int_many": "wasserstein", "int_few": "jensenshannon",
            "flag": "jensenshannon", "low_float": "jensenshannon", "cat": "jensenshannon",
            "binary_cat": "jensenshannon"}),
])
def test_default_test_choice_depends_on_reference_rows(n, expected):
    rows = drift_table(_frame(n, 1), _frame(n, 2))
    assert {r["column"]: r["test"] for r in rows} == expected


def test_statistics_match_scipy_definitions():
    ref, cur = _frame(400, 1), _frame(300, 2, shift=0.3)
    rows = {r["column"]: r for r in drift_table(ref, cur)}
    assert rows["num"]["statistic"] == pytest.approx(stats.ks_2samp(ref["num"], cur["num"]).pvalue, rel=1e-12)
    # chi-squared goodness of fit of current counts to the scaled reference counts (Evidently's chisquare)
    keys = sorted(set(ref["cat"]) | set(cur["cat"]))
    f_obs = np.array([(cur["cat"] == k).sum() for k in keys])
    f_exp = np.array([(ref["cat"] == k).sum() for k in keys]) * len(cur) / len(ref)
    assert rows["cat"]["statistic"] == pytest.approx(stats.chisquare(f_obs, f_exp).pvalue, rel=1e-9)
    big_ref, big_cur = _frame(5000, 3), _frame(4000, 4, shift=0.2)
    big = {r["column"]: r for r in drift_table(big_ref, big_cur)}
    expected_w = stats.wasserstein_distance(big_ref["num"], big_cur["num"]) / np.std(big_ref["num"])
    assert big["num"]["statistic"] == pytest.approx(expected_w, rel=1e-9)
    keys = sorted(set(big_ref["cat"]) | set(big_cur["cat"]))
    p = np.array([(big_ref["cat"] == k).mean() for k in keys])
    q = np.array([(big_cur["cat"] == k).mean() for k in keys])
    from scipy.spatial.distance import jensenshannon

    assert big["cat"]["statistic"] == pytest.approx(jensenshannon(p, q), rel=1e-9)


def test_wasserstein_merge_equals_scipy_with_ties_and_unequal_sizes():
    rng = np.random.default_rng(5)
    u = np.sort(rng.integers(0, 20, 1001).astype(float))
    v = np.sort(rng.integers(3, 25, 737).astype(float))
    assert wasserstein_sorted(u, v) == pytest.approx(stats.wasserstein_distance(u, v), rel=1e-12)
    assert js_distance(np.array([5, 5]), np.array([5, 5])) == 0.0


def test_drift_is_detected_only_where_it_was_injected():
    small = {r["column"]: r["drifted"] for r in drift_table(_frame(800, 1), _frame(800, 2, shift=0.4))}
    assert small["num"] and small["cat"] and small["int_few"] and small["low_float"]
    assert not small["binary_cat"] and not small["flag"]
    large = {r["column"]: r["drifted"] for r in drift_table(_frame(20000, 1), _frame(20000, 2))}
    assert not any(large.values()), large
    shifted = {r["column"]: r for r in drift_table(_frame(20000, 1), _frame(20000, 2, shift=0.2))}
    assert shifted["num"]["test"] == "wasserstein" and shifted["num"]["drifted"]  # ~0.2 std >= 0.1
    assert shifted["cat"]["test"] == "jensenshannon" and shifted["cat"]["drifted"]
    assert not shifted["binary_cat"]["drifted"] and not shifted["int_many"]["drifted"]


def test_nan_and_inf_are_dropped_and_missing_columns_skipped():
    ref, cur = _frame(3000, 1), _frame(3000, 2)
    ref.loc[:100, "num"] = np.nan
    cur.loc[:50, "num"] = np.inf
    rows = {r["column"]: r for r in drift_table(ref, cur.drop(columns=["cat"]))}
    assert rows["num"]["ref_rows"] == 3000 - 101 and rows["num"]["cur_rows"] == 3000 - 51
    assert rows["cat"]["test"] is None and rows["cat"]["skipped"] == "missing in current"


def test_agrees_with_evidently_on_every_branch():
    """The reference implementation itself, on <= 1000 and > 1000 reference rows (Evidently import ~3 s)."""
    import warnings

    warnings.simplefilter("ignore")
    from evidently import Report
    from evidently.presets import DataDriftPreset

    for n, shift in ((500, 0.25), (2500, 0.15)):
        ref, cur = _frame(n, 10), _frame(int(n * 0.8), 11, shift=shift)
        ours = {r["column"]: r for r in drift_table(ref, cur)}
        snap = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref).dict()
        values = {m["config"]["column"]: m["value"] for m in snap["metrics"]
                  if m["config"]["type"].endswith("ValueDrift")}
        assert set(values) == set(ours)
        for col, value in values.items():
            assert ours[col]["statistic"] == pytest.approx(value, rel=1e-9, abs=1e-12), (n, col)
