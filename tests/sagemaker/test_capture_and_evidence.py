"""Served decisions from Data Capture, and a snapshot sealed into an S3 Object Lock bucket.

InvokeEndpoint goes through the extended moto server, which forwards it to a real `aiir serve` process (a tiny
MLflow registry of our own) and writes SageMaker Data Capture JSON lines to S3 — moto alone would answer a canned
body and capture nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest
from botocore.exceptions import ClientError

from aiir.evidence import EvidenceStore, load_or_create_signing_key, public_key_pem, verify_bundle
from aiir.evidence.s3 import download_bundle, upload_bundle, verify_s3
from aiir.targets.base import DECISION_FIELDS
from tests.conftest import run_aiir
from tests.gateway.gwkit import FEATURES, MODEL, ROWS, Gateway, split
from tests.sagemaker.conftest import make_model, target, unique


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("sm-mlflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIIR_", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"))}
    r = subprocess.run([sys.executable, "-m", "aiir.gateway.synthetic", str(root), MODEL], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    home = tmp_path_factory.mktemp("sm-gw-home")
    env.update({"MLFLOW_TRACKING_URI": info["tracking_uri"], "AIIR_HOME": str(home),
                "AIIR_ARTIFACT_TRUSTED_KEYS": info["trusted_key"],
                "AIIR_GATEWAY_DIR": str(home / "gateway"), "PYTHONWARNINGS": "ignore"})
    g = Gateway(env, None, home / "serve.log").start()
    yield g
    g.stop()
    assert g.proc.poll() is not None


@pytest.fixture(scope="module")
def scene(sim, model_server):
    """An endpoint with Data Capture on, v2 serving, v1 standby; 4 decisions on v2, then isolation, then 3 on v1."""
    import boto3

    kw = {"endpoint_url": sim.url, "region_name": "us-east-1", "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    sm, s3, rt = (boto3.client(s, **kw) for s in ("sagemaker", "s3", "sagemaker-runtime"))
    model = unique("cap")
    bucket = f"{model}-data"
    s3.create_bucket(Bucket=bucket)
    for v in ("1", "2"):
        s3.put_object(Bucket=bucket, Key=f"models/v{v}/model.tar.gz", Body=f"model bytes v{v}".encode())
        make_model(sm, f"{model}-v{v}", v, data_url=f"s3://{bucket}/models/v{v}/model.tar.gz")
    sim.register_model_servers({f"{model}-v1": model_server.url, f"{model}-v2": model_server.url})
    t = target(sim, f"{model}-ep", model_name=model, data_capture_s3_uri=f"s3://{bucket}/capture",
               feature_columns=",".join(FEATURES))
    t.rollback("1", reason="deploy v1")
    t.set_last_known_good("1")
    t.rollback("2", reason="nightly deploy v2")
    answers = []

    def invoke(i):
        row = ROWS[i % len(ROWS)]
        if i % 2:
            body, ctype = ",".join(str(x) for x in row), "text/csv"
        else:
            body, ctype = json.dumps(split([row])), "application/json"
        r = rt.invoke_endpoint(EndpointName=f"{model}-ep", Body=body, ContentType=ctype, Accept="application/json",
                               CustomAttributes="client_id=merchant-17", InferenceId=f"req-{i}")
        answers.append({"variant": r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-invoked-production-variant"],
                        "body": json.loads(r["Body"].read())})

    for i in range(4):
        invoke(i)
    t.isolate(reason="incident")
    cut = dt.datetime.now(dt.UTC)
    for i in range(4, 7):
        invoke(i)
    sim.flush_capture()
    return {"target": t, "bucket": bucket, "model": model, "answers": answers, "cut": cut, "s3": s3}


def test_invocations_reach_the_real_model_server(scene):
    assert [a["variant"] for a in scene["answers"]] == ["v2"] * 4 + ["v1"] * 3
    assert all(len(a["body"]["predictions"]) == 1 and 0 <= a["body"]["scores"][0] <= 1 for a in scene["answers"])


def test_decisions_from_data_capture(scene):
    rows = scene["target"].decisions()
    assert len(rows) == 7
    assert all(set(DECISION_FIELDS) <= set(r) for r in rows)
    assert [r["model_version"] for r in rows] == ["2"] * 4 + ["1"] * 3
    assert [r["request_id"] for r in rows] == [f"req-{i}" for i in range(7)]
    assert {r["model"] for r in rows} == {scene["model"]}
    # CSV and JSON inputs both come back as named features; scores are the model's
    assert all(list(r["features"]) == FEATURES for r in rows)
    assert rows[1]["features"]["amount"] == ROWS[1][0]
    assert [r["score"] for r in rows] == pytest.approx([a["body"]["scores"][0] for a in scene["answers"]])
    assert rows == sorted(rows, key=lambda r: r["ts"])
    late = scene["target"].decisions(since=scene["cut"])
    assert [r["request_id"] for r in late] == ["req-4", "req-5", "req-6"]
    assert len(scene["target"].decisions(limit=2)) == 2


def test_decisions_need_data_capture(sim, deployed):
    from aiir.errors import TargetError

    with pytest.raises(TargetError, match="Data Capture is not enabled"):
        deployed["target"].decisions()


@pytest.fixture(scope="module")
def sealed(scene, tmp_path_factory):
    """The endpoint's snapshot, sealed as an evidence bundle."""
    base = tmp_path_factory.mktemp("sm-evidence")
    snap = base / "snapshot"
    files = scene["target"].snapshot(snap)
    store = EvidenceStore(base / "store", fsync=False)
    b = store.open_bundle("INC-SM-1", actor="test")
    b.add_tree(snap, "target_state/sagemaker", category="target_state", description="SageMaker endpoint snapshot")
    key = load_or_create_signing_key(base / "key.pem")
    b.seal(key)
    return {"bundle": b, "files": files, "snap": snap, "key": key, "base": base}


def test_snapshot_holds_descriptions_model_data_and_capture(scene, sealed):
    rel = {p.relative_to(sealed["snap"]).as_posix() for p in sealed["files"]}
    m = scene["model"]
    assert {"endpoint.json", "endpoint-tags.json", "serving-state.json", f"models/{m}-v1.json",
            f"models/{m}-v2.json", f"model-data/{m}-v1/model.tar.gz", f"model-data/{m}-v2/model.tar.gz"} <= rel
    assert any(r.startswith("endpoint-configs/") for r in rel)
    captured = [r for r in rel if r.startswith("data-capture/")]
    assert {r.split("/")[1] for r in captured} == {"v1", "v2"} and all(r.endswith(".jsonl") for r in captured)
    assert (sealed["snap"] / f"model-data/{m}-v2/model.tar.gz").read_bytes() == b"model bytes v2"
    ep = json.loads((sealed["snap"] / "endpoint.json").read_text())
    assert ep["EndpointName"] == f"{m}-ep" and "ResponseMetadata" not in ep


@pytest.fixture(scope="module")
def uploaded(sim, scene, sealed):
    s3 = scene["s3"]
    bucket = f"{scene['model']}-evidence"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    uri = f"s3://{bucket}/INC-SM-1"
    out = upload_bundle(sealed["bundle"].path, uri, client=s3, retain_days=1, signing_key=sealed["key"])
    return {"uri": uri, "bucket": bucket, "out": out, "s3": s3}


def test_upload_locks_every_object_with_its_sha256(uploaded, sealed):
    s3, bucket = uploaded["s3"], uploaded["bucket"]
    manifest = json.loads((sealed["bundle"].path / "manifest.json").read_bytes())
    assert uploaded["out"]["objects"] == manifest["file_count"] + 4
    for f in manifest["files"]:
        head = s3.head_object(Bucket=bucket, Key=f"INC-SM-1/{f['path']}", ChecksumMode="ENABLED")
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] > dt.datetime.now(dt.UTC) + dt.timedelta(hours=23)
        import base64

        assert base64.b64decode(head["ChecksumSHA256"]).hex() == f["sha256"]
    # the export is in the custody log, and the uploaded custody log carries it
    assert sealed["bundle"].custody()[-1]["action"] == "exported"


def test_deleting_a_locked_object_version_is_refused(uploaded):
    s3, bucket = uploaded["s3"], uploaded["bucket"]
    key = "INC-SM-1/manifest.json"
    version = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
    for extra in ({}, {"BypassGovernanceRetention": True}):
        with pytest.raises(ClientError) as err:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version, **extra)
        assert err.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as err:  # nor can COMPLIANCE retention be weakened
        s3.put_object_retention(Bucket=bucket, Key=key, VersionId=version,
                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": dt.datetime.now(dt.UTC)})
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    assert s3.head_object(Bucket=bucket, Key=key, VersionId=version)["VersionId"] == version


def test_upload_again_writes_only_the_grown_custody_log(uploaded, sealed, scene):
    again = upload_bundle(sealed["bundle"].path, uploaded["uri"], client=scene["s3"], retain_days=1,
                          signing_key=sealed["key"])
    assert [w["path"] for w in again["written"]] == ["custody.jsonl"]
    assert len(again["already_there"]) == uploaded["out"]["objects"] - 1


def test_verify_in_place_and_a_downloaded_copy(uploaded, sealed, scene, sim, tmp_path):
    res = verify_s3(uploaded["uri"], public_key_pem(sealed["key"]), client=scene["s3"], deep=True)
    assert res.ok, res.messages
    assert res.key_source == "caller" and res.files_checked == len(sealed["files"])
    copy = download_bundle(uploaded["uri"], tmp_path / "copy", client=scene["s3"])
    local = verify_bundle(copy, public_key_pem(sealed["key"]), record=False)
    assert local.ok, local.messages
    env = {"AWS_ENDPOINT_URL": sim.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AIIR_HOME": str(tmp_path / "verifier-home")}
    pub = tmp_path / "trusted.pub.pem"
    pub.write_bytes(public_key_pem(sealed["key"]))
    cli = run_aiir("verify", uploaded["uri"], "--trusted-key", str(pub), env=env)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert cli.stdout.startswith("INTACT:")
    cli = run_aiir("verify", uploaded["uri"], env=env)  # a key the verifier does not trust: not intact
    assert cli.returncode == 3, cli.stdout + cli.stderr
    cli = run_aiir("verify", str(copy), "--no-record", "--trusted-key", str(pub), env=env)
    assert cli.returncode == 0, cli.stdout + cli.stderr


def test_verify_in_place_names_shadowed_and_added_objects(uploaded, sealed, scene, sim, tmp_path):
    s3, bucket = scene["s3"], uploaded["bucket"]
    # copy the bundle to a second prefix, then tamper there (the locked originals cannot be changed at all)
    uri = f"s3://{bucket}/INC-SM-1-tampered"
    upload_bundle(sealed["bundle"].path, uri, client=s3, retain_days=1, signing_key=sealed["key"])
    victim = next(f for f in json.loads((sealed["bundle"].path / "manifest.json").read_bytes())["files"]
                  if f["path"].endswith("endpoint.json"))
    s3.put_object(Bucket=bucket, Key=f"INC-SM-1-tampered/{victim['path']}", Body=b'{"EndpointName": "forged"}')
    s3.put_object(Bucket=bucket, Key="INC-SM-1-tampered/files/planted.txt", Body=b"x")
    res = verify_s3(uri, client=s3)
    assert not res.ok
    assert res.changed == [victim["path"]] and res.added == ["files/planted.txt"]
    assert any("a later write shadows the sealed object" in m for m in res.messages)
    env = {"AWS_ENDPOINT_URL": sim.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AIIR_HOME": str(tmp_path / "verifier-home")}
    cli = run_aiir("verify", uri, "--allow-unknown-key", env=env)
    assert cli.returncode == 3 and "CHANGED: " + victim["path"] in cli.stdout


def test_upload_refuses_a_bucket_without_object_lock(scene, sealed):
    from aiir.errors import BadInput

    plain = f"{scene['model']}-plain"
    scene["s3"].create_bucket(Bucket=plain)
    with pytest.raises(BadInput, match="Object Lock is not enabled"):
        upload_bundle(sealed["bundle"].path, f"s3://{plain}/x", client=scene["s3"], signing_key=sealed["key"])
