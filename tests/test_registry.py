"""MLflow registry helpers and the hash-chained alias log, on a real MLflow store."""

from __future__ import annotations

import json

import pytest

from aiir import bootstrap, registry
from aiir.errors import BadInput, IntegrityError
from aiir.hashing import tree_digest


def test_bootstrap_registers_with_lineage_and_digests(demo_home):
    v = registry.get_version("fraud-detector", alias="champion")
    assert set(v.aliases) == {"champion", "last-known-good"}
    files = json.loads(v.tags["aiir.train_files"])
    assert files and all(len(f["sha256"]) == 64 for f in files)
    assert v.artifact_dir.is_dir() and tree_digest(v.artifact_dir) == v.tags["aiir.artifact_sha256"]
    import mlflow

    run = mlflow.get_run(v.run_id)
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["train_reference.parquet"]
    digests = json.loads(bootstrap.digests_path().read_text())
    kinds = {a["kind"] for a in digests["artifacts"]}
    assert kinds == {"data", "model"}
    assert bootstrap.bootstrap()["models"]["fraud-detector"] == "1"  # idempotent


def test_alias_moves_are_logged_and_chained(demo_home):
    before = len(registry.read_alias_log())
    e = registry.set_alias("diagnosis-classifier", "champion", "1", reason="no-op")
    assert e["changed"] is False and len(registry.read_alias_log()) == before
    registry.verify_alias_log()


def test_tampered_alias_log_is_detected(demo_home, tmp_path):
    log = registry.read_alias_log()
    path = tmp_path / "log.jsonl"
    log[1]["reason"] = "edited"
    path.write_text("".join(json.dumps(x) + "\n" for x in log))
    with pytest.raises(IntegrityError, match="entry 1: content changed"):
        registry.verify_alias_log(path)
    del log[1]
    path.write_text("".join(json.dumps(x) + "\n" for x in log))
    with pytest.raises(IntegrityError, match="chain broken"):
        registry.verify_alias_log(path)


def test_unknown_alias_is_a_clear_error(demo_home):
    with pytest.raises(BadInput, match="no alias 'nope'"):
        registry.get_version("fraud-detector", alias="nope")


def test_registering_on_integer_columns_prints_no_mlflow_schema_hint(demo_home, tmp_path):
    """MLflow's 'Inferred schema contains integer column(s)' hint was printed at every registration (3x in
    `make demo`): the serving signature already declares integer columns as doubles, the dataset record
    describes the file as it is. The hint is silenced there only; the dataset is still logged."""
    import warnings

    import mlflow
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    train = pd.DataFrame({"hour": [1, 5, 9, 13, 17, 21] * 5, "amount": [float(i) for i in range(30)],
                          "is_fraud": [0, 1] * 15})
    path = tmp_path / "train_int.parquet"
    train.to_parquet(path)
    model = LogisticRegression().fit(train[["hour", "amount"]], train["is_fraud"])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        mv = registry.log_and_register(model, name="int-columns", recipe="test", train=train, train_files=[path],
                                       label="is_fraud")
    hints = [str(w.message) for w in seen if "integer column" in str(w.message)]
    assert hints == []
    run = mlflow.get_run(registry.get_version("int-columns", mv.version).run_id)
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["train_int.parquet"]
    # the signature declares the integer column as a double (clients may send 3.0 or NaN)
    inputs = mlflow.models.get_model_info(f"models:/int-columns/{mv.version}").signature.inputs.to_dict()
    assert {c["name"]: c["type"] for c in inputs} == {"hour": "double", "amount": "double"}
