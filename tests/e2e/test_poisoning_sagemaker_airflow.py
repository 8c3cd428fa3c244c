"""``incident_data_poisoning`` end to end with ``target_kind=sagemaker`` through a real Airflow.

The demo story for SageMaker (``aiir.story_sagemaker``) in a fresh state folder: the AWS simulator (moto extended,
see tests/sagemaker/conftest.py) with real model servers behind InvokeEndpoint, the poisoned v2 deployed with v1 as
standby, ``data_integrity_check`` → ``incident_data_poisoning`` on the ``aws_default`` connection, isolation by weight
shift re-read after InService, the endpoint's snapshot in the sealed evidence, the blast radius from Data Capture,
the clean v3 promoted onto the endpoint, the bundle in an Object Lock bucket verified in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e-sm") / "aiir-home"
    saved = os.environ.get("AIIR_HOME")
    os.environ["AIIR_HOME"] = str(home)
    try:
        from aiir import story_sagemaker

        out = story_sagemaker.run(log=lambda m: print(f"\n> {m}", flush=True))
        yield {"out": out, "home": home}
    finally:
        if saved is None:
            os.environ.pop("AIIR_HOME", None)
        else:
            os.environ["AIIR_HOME"] = saved


def test_the_playbook_ran_on_the_sagemaker_endpoint(story):
    out = story["out"]
    assert out["playbook_state"] == "success", out["tasks"]
    assert out["contained_mode"] == "isolated"
    assert out["contained_routes"] == {"2": 0.0, "1": 1.0}  # the weight shift to the standby v1
    contain = json.loads((story["home"] / "incidents" / out["incident_id"] / "contain.json").read_text())
    assert contain["target"] == "sagemaker:fraud-detector"
    assert contain["after"]["settled"] and "intent_mismatch" not in contain["after"]["extra"]


def test_the_clean_version_serves_from_a_new_endpoint_config(story):
    out = story["out"]
    assert out["new_version"] and out["endpoint_now"]["mode"] == "serving"
    assert out["endpoint_now"]["routes"][str(out["new_version"])] == 1.0
    assert "-aiir-v" in out["endpoint_now"]["config"]


def test_evidence_holds_the_endpoint_snapshot_and_verifies_locally_and_in_s3(story):
    out = story["out"]
    assert out["evidence_verified"] and out["evidence_s3_verified"]
    manifest = json.loads((Path(out["evidence_bundle"]) / "manifest.json").read_text())
    paths = [f["path"] for f in manifest["files"]]
    assert any(p.endswith("endpoint.json") for p in paths)
    assert any("/data-capture/" in p and p.endswith(".jsonl") for p in paths)


def test_blast_radius_comes_from_data_capture(story):
    out = story["out"]
    workdir = story["home"] / "incidents" / out["incident_id"]
    blast = json.loads((workdir / "forensics.json").read_text())["blast_radius"]
    # the decisions v2 served through InvokeEndpoint, read back from the Data Capture JSON lines in S3
    assert blast["version"] == "2" and blast["decisions_in_log"] > 0
    assert blast["decisions"] > 0 and blast["decisions"] == blast["predicted_positive"] + blast["predicted_negative"]
    import pandas as pd

    affected = pd.read_csv(workdir / "forensics" / "affected_decisions.csv")
    recent = pd.read_csv(workdir / "decisions_recent.csv")
    assert set(recent["model_version"].astype(str)) == {"1", "2"}  # before the poisoned deploy, and after
    by_v2 = set(recent.loc[recent["model_version"].astype(str) == "2", "decision_id"])
    assert len(affected) == blast["decisions"] and set(affected["decision_id"]) <= by_v2
