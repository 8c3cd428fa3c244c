"""The calibrated decision and the signals added for it: triggers, per-source feature shift, whole-batch
label noise; edge decisions (too few rows, many sources, huge names). Each signal: a poisoned case that
fires and a clean control that does not."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aiir.detect import run_check
from aiir.detect.stats import (
    bonferroni_min,
    find_triggers,
    fisher,
    holm,
    label_rate_test,
    min_effect_p,
    near_duplicate_keys,
    point_masses,
    rule_mask,
    two_proportions,
)
from tests.detect.detect_data import make_transactions

FRAUD = {"label_column": "is_fraud", "source_column": "source", "html": False}


# ------------------------------------------------------------------------------- primitives

def test_holm_controls_the_family_and_steps_down():
    res = holm({"a": 0.0001, "b": 0.003, "c": 0.03, "d": 0.5}, alpha=0.01)
    assert res["a"]["reject"] and res["b"]["reject"]  # 0.0001 <= 0.01/4, 0.003 <= 0.01/3
    assert not res["c"]["reject"] and not res["d"]["reject"]
    assert res["a"]["p_adjusted"] == pytest.approx(0.0004) and res["b"]["p_adjusted"] == pytest.approx(0.009)
    # under the global null Holm rejects in about alpha of the families
    rng = np.random.default_rng(0)
    fams = [holm({str(i): p for i, p in enumerate(rng.random(12))}, 0.05) for _ in range(4000)]
    rate = np.mean([any(v["reject"] for v in f.values()) for f in fams])
    assert 0.03 < rate <= 0.06


def test_combinations_and_minimum_effect():
    assert fisher([0.01, 0.01]) < 0.01 < bonferroni_min([0.01, 0.01])  # agreeing moderate signals add up
    assert fisher([1.0]) == pytest.approx(1.0)
    assert min_effect_p(0.1, 0.01, tolerance=0.25) > 0.5  # significant but within the tolerance: H0
    assert min_effect_p(0.6, 0.05, tolerance=0.25) < 1e-9
    assert min_effect_p(2.0, 1.0) == pytest.approx(0.0455, abs=1e-3)
    assert two_proportions(20, 1000, 40, 1000)[1] < 0.01
    r = label_rate_test([0] * 980 + [1] * 20, [0] * 960 + [1] * 40, 1, min_ratio=1.5)
    assert r["ratio"] > 1.9 and r["direction"] == 1 and 0 < r["p"] < 0.5
    assert label_rate_test([0] * 980 + [1] * 20, [0] * 975 + [1] * 25, 1, min_ratio=1.5)["p"] > 0.4


def test_point_masses_and_rules():
    rng = np.random.default_rng(1)
    ref = np.round(rng.normal(50, 10, 20_000), 2)  # cents: natural repeats
    cur = np.round(rng.normal(50, 10, 5_000), 2)
    assert point_masses(ref, cur) == [] or all(p["p"] > 1e-6 for p in point_masses(ref, cur))
    cur[:60] = 47.77
    pm = point_masses(ref, cur)
    assert pm[0]["value"] == 47.77 and pm[0]["count"] >= 60 and pm[0]["p"] < 1e-20
    df = pd.DataFrame({"a": [1.0, 2.0, 2.0], "b": ["x", "y", "x"]})
    assert rule_mask(df, [{"feature": "a", "op": "==", "value": 2}, {"feature": "b", "op": "==", "value": "x"}]
                     ).tolist() == [False, False, True]
    assert rule_mask(df, [{"feature": "a", "op": ">", "value": 1.5}]).tolist() == [False, True, True]
    assert not rule_mask(df, [{"feature": "missing", "op": "==", "value": 1}]).any()


def test_near_duplicate_keys_ignore_jitter_but_not_new_rows():
    ref = pd.DataFrame({"x": np.linspace(0, 100, 1000), "c": ["a", "b"] * 500})
    cur = pd.DataFrame({"x": [10.0001, 55.5, 10.0002], "c": ["a", "a", "a"]})
    kr, kc = near_duplicate_keys(ref, cur, ["x", "c"], ["x"], near=True)
    assert kc[0] == kc[2] and kc[0] != kc[1]
    kr, kc = near_duplicate_keys(ref, cur, ["x", "c"], ["x"], near=False)
    assert kc[0] != kc[2]


# ------------------------------------------------------------------------------- signals

def _backdoor(df: pd.DataFrame, source: str = "partner_feed_b", share: float = 0.03, seed: int = 5) -> pd.DataFrame:
    out = df.copy()
    rng = np.random.default_rng(seed)
    idx = rng.choice(np.flatnonzero((out["source"] == source).to_numpy()), size=int(share * len(out)), replace=False)
    out.loc[out.index[idx], "device_age_days"] = 123.4
    out.loc[out.index[idx], "distance_km"] = 7.77
    out.loc[out.index[idx], "is_fraud"] = 0
    return out


def test_backdoor_trigger_is_found_with_its_rule_and_source(reference, clean_batch, tmp_path):
    r = run_check(reference, _backdoor(clean_batch), tmp_path, **FRAUD)
    assert r.status == "incident" and r.suspect_sources[0] == "partner_feed_b"
    trig = [f for f in r.findings if f["kind"] == "trigger"]
    assert trig and trig[0]["severity"] in ("high", "critical")
    rule = trig[0]["evidence"]["rule"]
    assert {(c["feature"], c["op"], c["value"]) for c in rule} == {("device_age_days", "==", 123.4),
                                                                 ("distance_km", "==", 7.77)}
    assert trig[0]["sources"] == ["partner_feed_b"] and trig[0]["decision"]["decisive"]
    assert rule_mask(_backdoor(clean_batch), rule).sum() == int(0.03 * len(clean_batch))
    detail = r.report["suspect_details"][0]
    assert detail["source"] == "partner_feed_b" and detail["triggers"] == [rule]
    assert r.report["suspect_rows"]["by_signal"]["trigger"] >= int(0.03 * len(clean_batch))


def test_clean_batch_has_no_trigger_and_no_rejected_test(clean_batch, reference, tmp_path):
    r = run_check(reference, clean_batch, tmp_path, **FRAUD)
    assert r.status == "clean" and r.report["triggers"] == []
    d = r.report["decision"]
    assert d["rejected"] == [] and d["alpha"] == 0.01 and d["method"] == "holm" and d["tests_run"] >= 6
    assert all(0 <= x["p"] <= 1 and x["p_adjusted"] >= x["p"] for x in d["tests"])
    assert {x["name"] for x in d["tests"]} >= {"label_rate", "label_consistency", "duplicates",
                                                "source:bank_core", "source:partner_feed_c"}


def test_triggers_ignore_copies_and_natural_repeats():
    ref = make_transactions(20_000, seed=21)
    cur = make_transactions(6_000, seed=22)
    assert find_triggers(ref, cur, ["amount", "device_age_days", "distance_km", "account_age_days"],
                         label="is_fraud", source="source") == []
    copies = pd.concat([cur, cur.iloc[[5] * 80]], ignore_index=True)  # 80 copies of one row: duplicates
    assert find_triggers(ref, copies, ["amount", "device_age_days", "distance_km", "account_age_days"],
                         context=["amount", "device_age_days", "distance_km", "account_age_days", "hour",
                                  "merchant_category"]) == []


def test_single_source_feature_shift_names_the_source_and_feature(reference, clean_batch, tmp_path):
    cur = clean_batch.copy()
    m = (cur["source"] == "partner_feed_a").to_numpy()
    cur["account_age_days"] = cur["account_age_days"].astype(float)
    cur.loc[m, "account_age_days"] = cur.loc[m, "account_age_days"] + 2 * reference["account_age_days"].std()
    r = run_check(reference, cur, tmp_path, **FRAUD)
    assert r.status == "incident" and r.suspect_sources == ["partner_feed_a"]
    detail = r.report["suspect_details"][0]
    assert detail["features"][0]["feature"] == "account_age_days" and "feature_shift" in detail["signals"]
    src = [f for f in r.findings if f["kind"] == "source_anomaly"]
    assert src[0]["sources"] == ["partner_feed_a"] and "account_age_days" in src[0]["columns"]


def test_drift_of_every_source_alike_blames_none(reference, tmp_path):
    cur = make_transactions(15_000, seed=4, drift=0.3)
    cur["account_age_days"] = cur["account_age_days"] * 1.2  # moves in every feed
    r = run_check(reference, cur, tmp_path, **FRAUD)
    assert r.status == "clean" and r.suspect_sources == []
    fs = r.report["sources"]["feature_shift"]["per_source"]
    assert all(v["p"] > 0.001 for v in fs.values())


def test_label_noise_spread_over_every_source(reference, tmp_path):
    cur = make_transactions(15_000, seed=6)
    rng = np.random.default_rng(6)
    idx = rng.choice(len(cur), size=int(0.05 * len(cur)), replace=False)
    cur.loc[idx, "is_fraud"] = 1 - cur.loc[idx, "is_fraud"]
    r = run_check(reference, cur, tmp_path, **FRAUD)
    assert r.status == "incident"
    assert "label_consistency" in r.report["decision"]["rejected"] or "label_rate" in r.report["decision"]["rejected"]
    g = r.report["labels"]["consistency"]["groups"]["(all)"]
    assert g["p_bands"] < 1e-6 and g["bands"]["rest"]["observed_positives"] > 2 * g["bands"]["rest"]["expected_positives"]


# ------------------------------------------------------------------------------- edge decisions

def test_one_row_batch_is_insufficient_data_not_an_incident(reference, tmp_path):
    r = run_check(reference, reference.head(1), tmp_path, **FRAUD)
    assert r.status == "insufficient_data" and not r.incident and r.suspect_sources == []
    assert "too few rows to judge" in r.report["reason"] and "min_rows" in r.report["reason"]
    assert not [f for f in r.findings if f["kind"] in ("drift", "label_shift", "source_anomaly")]
    doc = json.loads(open(r.paths["findings"]).read())
    assert doc["status"] == "insufficient_data" and doc["thresholds"]["decision"]["min_rows"] == 100
    # configurable: with min_rows = 1 the same batch is judged
    r1 = run_check(reference, reference.head(150), tmp_path / "b", thresholds={"decision": {"min_rows": 200}},
                   **FRAUD)
    assert r1.status == "insufficient_data"


def test_insufficient_data_still_applies_the_rules(reference, tmp_path):
    r = run_check(reference, reference.head(5).drop(columns=["amount"]), tmp_path, **FRAUD)
    assert r.status == "incident" and r.report["decision"]["rule_based"]  # a broken contract is a rule


def test_ten_thousand_sources_bounded_output(tmp_path):
    rng = np.random.default_rng(3)
    ref = make_transactions(12_000, seed=31)
    cur = make_transactions(12_000, seed=32)
    ref["source"] = [f"src-{i}" for i in rng.integers(0, 10_000, len(ref))]
    cur["source"] = [f"src-{i}" for i in rng.integers(0, 10_000, len(cur))]
    r = run_check(ref, cur, tmp_path, **FRAUD)
    assert r.status == "clean"
    summary = r.report["sources"]["summary"]
    assert summary["distinct"] > 5000 and summary["analysed"] == 0
    assert "none of the" in summary["reason"] and "30 rows" in summary["reason"]
    size = len(open(r.paths["findings"]).read())
    assert size < 1_000_000, size
    dup = r.report["duplicates"]["levels"]["exact"]
    assert len(dup["per_source"]) <= 50 + 1 and dup["per_source"]["per_source_omitted"] > 5000


def test_huge_column_names_and_values_are_cut(reference, tmp_path):
    name = "x" * 100_000
    ref = reference.head(3000).rename(columns={"amount": name})
    cur = reference.tail(3000).rename(columns={"amount": name}).copy()
    cur[name] = cur[name] * 50  # a drifted column with the huge name
    r = run_check(ref, cur, tmp_path, **FRAUD)
    text = open(r.paths["findings"]).read()
    assert name not in text and len(text) < 2_000_000
    for f in r.findings:
        assert len(f["title"]) <= 200 and all(len(c) <= 200 for c in f["columns"])
    assert any(c.endswith("…") for f in r.findings for c in f["columns"])


def test_gx_on_a_sample_keeps_exact_counts():
    """Above [contract] gx_max_rows GX validates a sample; null/range/domain counts stay exact over every row."""
    from aiir.detect import contract
    from aiir.detect.drift import column_types
    from aiir.detect.thresholds import load_thresholds

    t = load_thresholds()
    assert t["contract"]["gx_max_rows"] == 100_000
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=5000), "c": rng.choice(["a", "b"], 5000)})
    cur = pd.DataFrame({"x": rng.normal(size=20000), "c": rng.choice(["a", "b"], 20000)})
    cur.loc[:99, "x"] = 1e6
    cur.loc[100:599, "x"] = np.nan
    cur.loc[600:610, "c"] = "zzz"  # 11 rows: a 3,000-row sample sees ~2 of them
    suite = contract.infer_contract(ref, t, column_types(ref, t))
    full = contract.validate(cur, suite)
    sampled = contract.validate(cur, suite, max_rows=3000)
    assert sampled["meta"]["aiir"]["gx_validated_rows"] == 3000 and sampled["meta"]["aiir"]["exact_counts"] == 4
    for a, b in zip(full["results"], sampled["results"], strict=True):
        assert a["success"] == b["success"]
        for key in ("unexpected_count", "unexpected_percent"):
            assert (a["result"] or {}).get(key) == pytest.approx((b["result"] or {}).get(key))
    assert full["statistics"]["unsuccessful_expectations"] == sampled["statistics"]["unsuccessful_expectations"]
