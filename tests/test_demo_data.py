"""The demo data is deterministic and the poisoning is real (it changes what a model learns)."""

from __future__ import annotations

import pandas as pd

from aiir import demo, training
from aiir.hashing import sha256_file


def test_same_seed_same_bytes(tmp_path):
    a = demo.write_demo_data(tmp_path / "a")
    b = demo.write_demo_data(tmp_path / "b")
    for i in range(6):
        assert sha256_file(a.fraud_batch(i)) == sha256_file(b.fraud_batch(i))
    assert sha256_file(a.cancer_reference) == sha256_file(b.cancer_reference)


def test_poisoned_batch_hurts_a_retrained_model(tmp_path):
    files = demo.write_demo_data(tmp_path)
    recipe = training.get_recipe("fraud-hgb-v1")
    ref = pd.read_parquet(files.fraud_reference)
    b4, b5 = pd.read_parquet(files.fraud_batch(4)), pd.read_parquet(files.fraud_batch(5))
    feedback = pd.read_parquet(files.fraud_feedback)
    clean = training.evaluate(recipe.fit(ref), feedback, recipe)
    poisoned = training.evaluate(recipe.fit(pd.concat([ref, b4, b5])), feedback, recipe)
    assert clean["precision"] > 0.6 and clean["recall"] > 0.35
    assert poisoned["precision"] < 0.6 * clean["precision"], (clean, poisoned)  # falls ≥ 40 %
    assert poisoned["recall"] < 0.5 * clean["recall"]
    # only partner_feed_c carries the poison
    by_src = b5.groupby("source")["is_fraud"].mean()
    assert by_src["partner_feed_c"] == 0 and (by_src.drop("partner_feed_c") > 0.01).all()


def test_breast_cancer_is_bundled_offline():
    df = demo.breast_cancer_frame()
    assert df.shape == (569, 31) and set(df["benign"].unique()) == {0, 1}
