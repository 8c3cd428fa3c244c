"""run_check on crafted cases of every finding kind, the clean controls, and the poisoning scenario."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aiir.detect import run_check
from aiir.errors import BadInput
from aiir.knowledge.taxonomy import suggest
from tests.detect.detect_data import flip_labels, inject_near_copies, make_transactions

FRAUD = {"label_column": "is_fraud", "source_column": "source", "html": False}


def kinds(result, severity_at_least: str | None = None) -> set[str]:
    order = ["low", "medium", "high", "critical"]
    return {f["kind"] for f in result.findings
            if severity_at_least is None or order.index(f["severity"]) >= order.index(severity_at_least)}


@pytest.fixture(scope="module")
def clean_result(reference, clean_batch, tmp_path_factory):
    return run_check(reference, clean_batch, tmp_path_factory.mktemp("clean"), **FRAUD)


@pytest.fixture(scope="module")
def poisoned_result(reference, clean_batch, tmp_path_factory):
    """The scenario: partner_feed_c flips 80 % of its fraud labels and injects 420 near-copies."""
    poisoned = inject_near_copies(flip_labels(clean_batch))
    return run_check(reference, poisoned, tmp_path_factory.mktemp("poisoned"), **FRAUD)


# ------------------------------------------------------------------------------------------ controls

def test_clean_new_batch_with_mild_natural_drift_is_clean(clean_result):
    assert clean_result.status == "clean"
    assert clean_result.suspect_sources == []
    assert not kinds(clean_result, "medium"), clean_result.findings
    doc = json.loads(open(clean_result.paths["findings"]).read())
    assert doc["status"] == "clean" and doc["reference"]["rows"] == 40_000 and doc["current"]["rows"] == 15_000
    assert doc["thresholds"]["incident"]["open_incident_at"] == "high"
    assert doc["drift"]["tested"] == 9  # 11 columns minus label and source; transaction_id is text


def test_natural_fraud_rate_rise_explained_by_features_is_not_an_incident(reference, tmp_path):
    # much stronger natural drift: more velocity and larger amounts raise the real fraud rate by ~40 %
    cur = make_transactions(15_000, seed=3, drift=2.0)
    r = run_check(reference, cur, tmp_path, **FRAUD)
    assert r.status == "clean", r.findings
    shifts = [f for f in r.findings if f["kind"] == "label_shift"]
    assert shifts and all(f["severity"] == "medium" for f in shifts)  # seen, but capped: the features explain it
    assert "explained by the features" in shifts[0]["detail"]
    assert r.suspect_sources == []


def test_breast_cancer_split_in_two_is_clean(tmp_path):
    from sklearn.datasets import load_breast_cancer

    df = load_breast_cancer(as_frame=True).frame
    perm = np.random.default_rng(0).permutation(len(df))
    a, b = df.iloc[perm[: len(df) // 2]], df.iloc[perm[len(df) // 2:]]
    r = run_check(a.reset_index(drop=True), b.reset_index(drop=True), tmp_path, label_column="target", html=False)
    assert r.status == "clean"
    assert not kinds(r, "medium"), r.findings
    assert r.report["drift"]["tested"] == 30


# ------------------------------------------------------------------------------------------- poison

def test_poisoned_feed_is_named(poisoned_result):
    r = poisoned_result
    assert r.status == "incident" and r.severity == "critical"
    assert r.suspect_sources[0] == "partner_feed_c" and r.suspect_sources == ["partner_feed_c"]
    by_kind = {}
    for f in r.findings:
        by_kind.setdefault(f["kind"], []).append(f)
    assert {"label_shift", "source_anomaly", "duplicates"} <= set(by_kind)
    assert all(f["sources"] == ["partner_feed_c"] for f in by_kind["label_shift"])
    src = by_kind["source_anomaly"]
    assert len(src) == 1 and src[0]["severity"] == "critical" and src[0]["sources"] == ["partner_feed_c"]
    signals = src[0]["evidence"]["signals"]
    assert {"label_shift", "label_consistency", "duplicates"} <= set(signals)
    assert src[0]["evidence"]["gain_when_removed"]["duplicates"] > 0.9
    assert by_kind["duplicates"][0]["sources"] == ["partner_feed_c"]
    for f in r.findings:  # every finding carries the taxonomy of its kind
        ids = suggest(f["kind"])
        assert f["atlas"] == ids["atlas"] and f["owasp"] == ids["owasp"] and f["mitigations"] == ids["mitigations"]
        assert {"kind", "severity", "title", "columns", "sources", "statistic", "threshold", "detail"} <= set(f)


def test_suspect_rows_point_at_the_injected_rows(poisoned_result):
    rows = poisoned_result.report["suspect_rows"]
    assert rows["by_source"]["partner_feed_c"] >= 400
    assert rows["by_source"]["partner_feed_c"] / rows["total"] > 0.95
    table = pd.read_csv(poisoned_result.paths["suspect_rows"])
    assert len(table) == rows["total"] and set(table.columns) == {"row", "source", "signals"}


def test_exact_replay_of_reference_rows(reference, clean_batch, tmp_path):
    rows = reference[reference["source"] == "partner_feed_b"].sample(300, random_state=1).copy()
    rows["transaction_id"] = [f"replay-{i}" for i in range(len(rows))]
    r = run_check(reference, pd.concat([clean_batch, rows], ignore_index=True), tmp_path, **FRAUD)
    dup = [f for f in r.findings if f["kind"] == "duplicates"]
    assert dup and "exact" in dup[0]["title"] and dup[0]["sources"] == ["partner_feed_b"]
    assert dup[0]["evidence"]["exact"]["copies_of_reference"] == 300
    assert r.suspect_sources == ["partner_feed_b"]


def test_outlier_injection(reference, clean_batch, tmp_path):
    cur = clean_batch.copy()
    idx = cur.sample(frac=0.05, random_state=3).index
    cur.loc[idx, "amount"] *= 200
    r = run_check(reference, cur, tmp_path, **FRAUD)
    out = [f for f in r.findings if f["kind"] == "outliers"]
    assert out and out[0]["severity"] in ("medium", "high") and out[0]["columns"][0] == "amount"
    assert r.report["outliers"]["columns"]["amount"]["scale_type"] == "log1p"
    assert r.suspect_sources == []  # spread over every feed: nobody to blame


def test_drift_severity_scales_with_share_of_features(reference, clean_batch):
    from aiir.detect.check import _drift_finding
    from aiir.detect.drift import drift_table
    from aiir.detect.thresholds import load_thresholds

    t = load_thresholds()
    features = ["amount", "merchant_category", "hour", "country_mismatch", "velocity_1h", "device_age_days",
                "account_age_days", "card_present", "distance_km"]
    cur = clean_batch.copy()
    for col in ("amount", "device_age_days", "distance_km", "account_age_days", "velocity_1h"):
        cur[col] = cur[col] * 1.8
    cur["merchant_category"] = np.where(np.arange(len(cur)) % 2 == 0, "crypto", cur["merchant_category"])
    many = _drift_finding(drift_table(reference, cur, features, thresholds=t), t)
    assert many["severity"] == "high" and many["statistic"]["value"] >= 0.5
    one = clean_batch.copy()
    one["device_age_days"] = one["device_age_days"] * 1.15  # exponential: ~0.15 reference std
    low = _drift_finding(drift_table(reference, one, features, thresholds=t), t)
    assert low["severity"] == "low" and low["columns"] == ["device_age_days"]
    strong = clean_batch.copy()
    strong["device_age_days"] = strong["device_age_days"] * 2  # one feature, strong effect
    assert _drift_finding(drift_table(reference, strong, features, thresholds=t), t)["severity"] == "medium"
    assert _drift_finding(drift_table(reference, clean_batch, features, thresholds=t), t) is None


def test_schema_violations(reference, clean_batch, tmp_path):
    cur = clean_batch.drop(columns=["card_present"]).copy()
    cur["hour"] = cur["hour"].astype(str)
    cur.loc[cur.index[:600], "merchant_category"] = "unseen_category"
    cur["extra"] = 1
    r = run_check(reference, cur, tmp_path, **FRAUD)
    schema = {f["title"]: f for f in r.findings if f["kind"] == "schema"}
    titles = " | ".join(schema)
    assert "card_present" in titles and "missing" in titles
    assert any("'hour' has type" in t for t in schema)
    assert any("'merchant_category'" in t and "reference domain" in t for t in schema)
    assert any("not in the contract" in t for t in schema)
    assert r.status == "incident"  # a missing column or a type change is a broken contract
    gx = json.loads(open(r.paths["gx_validation"]).read())
    assert gx["success"] is False and gx["statistics"]["unsuccessful_expectations"] >= 4


def test_contract_round_trip(reference, clean_batch, tmp_path):
    ref, cur = reference.head(10_000), clean_batch.head(5_000)
    first = run_check(ref, cur, tmp_path / "first", label_column="is_fraud", html=False)
    saved = json.loads(open(first.paths["contract"]).read())
    assert saved["expectations"] and saved["meta"]["aiir"]["rows"] == 10_000
    types = {e["type"] for e in saved["expectations"]}
    assert {"expect_table_columns_to_match_set", "expect_column_values_to_be_between",
            "expect_column_values_to_be_in_set", "expect_column_values_to_be_in_type_list"} <= types
    assert not [f for f in first.findings if f["kind"] == "schema"]
    # edit: amounts above 500 are now a violation
    for e in saved["expectations"]:
        if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == "amount":
            e["kwargs"]["max_value"] = 500.0
            e["kwargs"]["mostly"] = 1.0
    edited = tmp_path / "contract.json"
    edited.write_text(json.dumps(saved))
    second = run_check(ref, cur, tmp_path / "second", contract=edited, label_column="is_fraud", html=False)
    violations = [f for f in second.findings if f["kind"] == "schema"]
    assert len(violations) == 1 and violations[0]["columns"] == ["amount"]
    assert second.report["contract"]["inferred"] is False
    reused = json.loads(open(second.paths["contract"]).read())
    assert any(e["kwargs"].get("max_value") == 500.0 for e in reused["expectations"])


@pytest.mark.parametrize("content,needle", [
    ("{not json", "contract is not valid JSON"),
    ('{"name": "x", "expectations": [{"type": "expect_column_to_be_magic", "kwargs": {"column": "amount"}}]}',
     "not a valid Great Expectations suite"),
    ('{"name": "x", "expectations": [{"type": "expect_column_values_to_be_between", "kwargs": {"colum": "a"}}]}',
     "not a valid Great Expectations suite"),
    ('["expect_column_to_exist"]', "'expectations' list"),
])
def test_malformed_contract_is_bad_input(reference, tmp_path, content, needle):
    bad = tmp_path / "contract.json"
    bad.write_text(content)
    with pytest.raises(BadInput) as err:
        run_check(reference.head(500), reference.tail(500), tmp_path / "out", contract=bad, html=False)
    assert str(bad) in str(err.value) and needle in str(err.value)


def test_integrity_registry(tmp_path, reference):
    data = tmp_path / "train.csv"
    data.write_text("a,b\n1,2\n")
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavor: sklearn\n")
    (model / "model.pkl").write_bytes(b"\x00weights")
    from aiir.detect.integrity import verify_registry
    from aiir.hashing import sha256_file, tree_digest

    reg = tmp_path / "digests.json"
    arts = [{"name": "train", "kind": "data", "path": "train.csv", "sha256": sha256_file(data)},
            {"name": "fraud-model", "kind": "model", "path": str(model), "sha256": tree_digest(model)}]
    reg.write_text(json.dumps({"artifacts": arts}))
    assert verify_registry(reg) == []
    (model / "model.pkl").write_bytes(b"\x00backdoored")
    data.unlink()
    found = {f["title"]: f for f in verify_registry(reg)}
    assert len(found) == 2
    model_f = next(f for t, f in found.items() if "fraud-model" in t)
    assert model_f["severity"] == "critical" and "does not match" in model_f["title"]
    assert next(f for t, f in found.items() if "'train'" in t)["severity"] == "high"
    assert model_f["atlas"] == suggest("integrity")["atlas"]
    r = run_check(reference.head(2000), reference.tail(2000), tmp_path / "out", registry=reg, html=False)
    assert r.status == "incident" and {a["status"] for a in r.report["artifacts"]} == {"missing", "mismatch"}
    reg.write_text(json.dumps({"artifacts": [{"name": "x", "kind": "weights", "path": "p", "sha256": "0" * 64}]}))
    with pytest.raises(BadInput, match="'kind' must be one of data, model"):
        verify_registry(reg)


def test_html_report_and_written_files(reference, clean_batch, tmp_path):
    r = run_check(reference.head(8000), clean_batch.head(6000), tmp_path, label_column="is_fraud",
                  source_column="source", html=True)
    assert set(r.paths) >= {"findings", "contract", "gx_validation", "drift_report"}
    html = open(r.paths["drift_report"]).read()
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:2000].lower()
    assert "amount" in html and len(html) > 10_000
    assert r.report["html"]["sampled"] is True and r.report["html"]["reference_rows"] == 5000
    assert r.to_dict()["status"] == r.status


def test_bad_inputs_in_process(reference, tmp_path):
    with pytest.raises(BadInput, match="--label-column 'label' is not a column"):
        run_check(reference.head(100), reference.tail(100), tmp_path, label_column="label", html=False)
    with pytest.raises(BadInput, match="--source-column 'feed' is not a column"):
        run_check(reference.head(100), reference.tail(100), tmp_path, source_column="feed", html=False)
    with pytest.raises(BadInput, match="current DataFrame is empty"):
        run_check(reference.head(100), reference.head(0), tmp_path, html=False)
