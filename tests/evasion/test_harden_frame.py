"""Hardening a model whose features include a categorical column (the demo's fraud model: a merchant
category): the attacks perturb the numeric features only, each attacked row keeps its category, and the
hardened clone is the same recipe refitted on the augmented frame (it was refused as "non-numeric" before)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from aiir import demo
from aiir.evasion import harden as hz
from aiir.evasion.profile import fit_profile
from aiir.training import _logreg


@pytest.fixture(scope="module")
def fraud():
    df = demo.fraud_frame(3000, seed=5)
    cols = list(demo.FEATURES)
    num = [c for c in cols if c not in demo.CATEGORICAL]
    model = _logreg(list(demo.CATEGORICAL), num).fit(df[cols], df["is_fraud"])
    return df[cols].reset_index(drop=True), df["is_fraud"].to_numpy(int), model, fit_profile(df[num].to_numpy(float), num)


def test_hsj_on_a_frame_keeps_each_rows_category_and_evades(fraud):
    X, _, model, prof = fraud
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adv = hz.hsj_examples(model, X, prof, rows=4, seed=1, max_iter=3)
    src = X.loc[adv.index]
    assert list(adv.columns) == list(X.columns) and len(adv) == 4
    assert (hz._predict(model, src) == 1).all()  # the attacked rows were declined ...
    assert (adv["merchant_category"] == src["merchant_category"]).all()  # ... keep their category ...
    moved = np.abs(adv[prof.columns].to_numpy(float) - src[prof.columns].to_numpy(float)).sum(axis=1)
    assert (moved > 0).all()  # ... and were perturbed in the numeric features
    assert (hz._predict(model, adv) == 0).sum() >= 3  # and now pass (HopSkipJump, 3 iterations)
    again = hz.hsj_examples(model, X, prof, rows=4, seed=1, max_iter=3)
    assert again.equals(adv)  # deterministic per seed


def test_playbook_harden_retrains_the_recipe_on_a_frame(fraud, aiir_home, monkeypatch):
    from aiir.evasion import playbook as ep
    from aiir.incident import validate_conf

    monkeypatch.setattr(ep, "FRAME_HELD_OUT_ROWS", 6)  # the playbook's 20 / 40 cost minutes here
    monkeypatch.setattr(ep, "FRAME_AUGMENT_ROWS", 10)

    X, y, model, _ = fraud
    record = validate_conf({"model_name": "fraud-detector", "target_name": "fraud-detector", "dry_run": True,
                            "findings": [{"kind": "evasion", "severity": "high"}]})
    record.workdir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = ep.harden(record, training=(X, y, list(X.columns)), model=model)
    assert not h.get("skipped"), h
    assert h["method"]["held_fixed"] == ["merchant_category"] and h["method"]["adversarial_rows"] > 0, h
    assert h["held_out_rows"]["hsj"] > 0 and h["before"]["robust_accuracy_hsj"] == 0.0, h
    assert h["after"]["robust_accuracy_hsj"] > h["before"]["robust_accuracy_hsj"], h
    assert h["hardened_version"] is None  # dry run: nothing registered
    assert json.loads((record.workdir / "harden.json").read_text()) == json.loads(json.dumps(h, default=str))


def test_a_model_without_numeric_features_is_reported_not_hardened(aiir_home, tmp_path, monkeypatch):
    import pandas as pd

    from aiir.evasion import playbook as ep
    from aiir.incident import validate_conf

    record = validate_conf({"model_name": "m", "target_name": "m", "findings": [{"kind": "evasion"}]})
    record.workdir.mkdir(parents=True, exist_ok=True)
    ref = tmp_path / "ref.csv"
    pd.DataFrame({"a": ["x", "y"] * 10, "label": [0, 1] * 10}).to_csv(ref, index=False)

    class Model:
        feature_names_in_ = np.array(["a"])

    monkeypatch.setattr("aiir.playbook.profile", lambda name: {"reference": str(ref), "label": "label"})
    h = ep.harden(record, model=Model())
    assert h["skipped"] and "no numeric feature" in h["reason"] and h["gate"]["passed"] is False


def test_a_hardened_histgradientboosting_pipeline_registers_signed_and_loads(demo_home):
    """The demo's fraud model (HistGradientBoosting behind a column transformer) registered as a hardened
    version: MLflow 3.17's default skops format refused its TreePredictor ("untrusted types"), which failed
    the harden step through Airflow; it is stored as aiir's registrations are (cloudpickle, integer columns
    as doubles), digest-tagged, signed, and the verified loader loads it."""
    import pandas as pd

    from aiir import config, playbook
    from aiir.models import load_verified

    v1 = load_verified("fraud-detector", "1").raw
    ref = pd.read_parquet(playbook.profile("fraud-detector")["reference"])
    X = ref[list(v1.feature_names_in_)].head(50)
    v = hz.register_hardened(v1, name="fraud-detector", X_example=X, tracking_uri=config.paths().mlflow_tracking_uri,
                             tags={"aiir.hardened_from": "1"}, source_version="1")
    again = load_verified("fraud-detector", v).raw
    rows = X.astype({c: "float64" for c in X.columns if str(X[c].dtype).startswith("int")})
    assert (again.predict(rows) == v1.predict(X)).all()
