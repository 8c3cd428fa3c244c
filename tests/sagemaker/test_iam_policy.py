"""deploy/aws/iam-policy.json is exactly what aiir's SageMaker target and evidence upload need.

A moto server of its own with IAM authorisation on (the extended server checks SageMaker calls against the real
resource ARN, see aiir.awssim): a user holding only this policy runs every operation — isolate, restore, canary,
quarantine, rollback creating an endpoint, last-known-good from the Model Registry (a model created from a
package), decisions from Data Capture, snapshot, evidence upload, verification in place, download. Every API call
is recorded by a botocore event hook on the clients; the IAM actions those calls need must equal the policy's
Allow actions — each call allowed, nothing more granted — and calls outside it are refused by the server.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from aiir.awssim import AwsSim
from aiir.evidence import EvidenceStore, load_or_create_signing_key, public_key_pem
from aiir.evidence.s3 import API_CALLS as S3_CALLS
from aiir.evidence.s3 import download_bundle, upload_bundle, verify_s3
from aiir.targets.sagemaker import API_CALLS, SageMakerTarget
from tests.sagemaker.conftest import REGION, ROLE, make_model

POLICY = Path(__file__).resolve().parents[2] / "deploy" / "aws" / "iam-policy.json"
DATA, EVIDENCE = "aiir-iam-model-data", "aiir-iam-evidence"


def iam_actions(service: str, op: str, params: dict) -> set[str]:
    """The IAM actions one API call needs (AWS's Service Authorization Reference)."""
    if service == "s3":
        base = {"HeadObject": "s3:GetObject", "GetObject": "s3:GetObject", "ListObjectsV2": "s3:ListBucket",
                "ListObjectVersions": "s3:ListBucketVersions", "PutObject": "s3:PutObject",
                "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration"}[op]
        extra = {"s3:PutObjectRetention"} if op == "PutObject" and params.get("ObjectLockMode") else set()
        return {base} | extra
    need = {f"sagemaker:{op}"}
    if op.startswith("Create") and params.get("Tags"):
        need.add("sagemaker:AddTags")  # tagging on create needs AddTags too
    if op == "CreateModel":
        need.add("iam:PassRole")  # the model's ExecutionRoleArn
    return need


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    sim = AwsSim(settle_s=0.2, log=tmp_path_factory.mktemp("iam-sim") / "awssim.log").start()
    try:
        yield _world(sim, tmp_path_factory)
    finally:  # also when the setup fails: never leave the server running
        sim.stop()


def _world(sim, tmp_path_factory):
    root = {"endpoint_url": sim.url, "region_name": REGION, "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing"}
    iam, sm, s3 = (boto3.client(s, **root) for s in ("iam", "sagemaker", "s3"))
    policy = POLICY.read_text().replace("MODEL_AND_CAPTURE_BUCKET", DATA).replace("EVIDENCE_BUCKET", EVIDENCE)
    iam.create_user(UserName="aiir-responder")
    iam.put_user_policy(UserName="aiir-responder", PolicyName="aiir", PolicyDocument=policy)
    access = iam.create_access_key(UserName="aiir-responder")["AccessKey"]
    # the world the responder acts on, made by an administrator
    s3.create_bucket(Bucket=DATA)
    s3.create_bucket(Bucket=EVIDENCE, ObjectLockEnabledForBucket=True)
    for v in ("1", "2", "3"):
        s3.put_object(Bucket=DATA, Key=f"models/v{v}.tar.gz", Body=f"v{v}".encode())
        make_model(sm, f"iam-v{v}", v, data_url=f"s3://{DATA}/models/v{v}.tar.gz")
    capture = {"EnableCapture": True, "InitialSamplingPercentage": 100, "DestinationS3Uri": f"s3://{DATA}/capture",
               "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]}
    sm.create_endpoint_config(EndpointConfigName="iam-cfg", DataCaptureConfig=capture, ProductionVariants=[
        {"VariantName": n, "ModelName": f"iam-v{v}", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large",
         "InitialVariantWeight": w} for n, v, w in (("v2", "2", 1.0), ("v1", "1", 0.0))])
    sm.create_endpoint(EndpointName="iam-ep", EndpointConfigName="iam-cfg",
                       Tags=[{"Key": "aiir:last-known-good", "Value": "1"}])
    sm.create_endpoint_config(EndpointConfigName="iam-quarantine", ProductionVariants=[
        {"VariantName": "refuse", "ModelName": "iam-v1", "InitialInstanceCount": 1, "InstanceType": "ml.t2.medium",
         "InitialVariantWeight": 1.0}])
    line = json.dumps({"captureData": {"endpointInput": {"observedContentType": "text/csv", "mode": "INPUT",
                                                         "data": "1.0,2.0", "encoding": "CSV"},
                                       "endpointOutput": {"observedContentType": "text/csv", "mode": "OUTPUT",
                                                          "data": "0.9", "encoding": "CSV"}},
                       "eventMetadata": {"eventId": "e-1", "inferenceTime": "2026-01-01T10:00:00Z"},
                       "eventVersion": "0"})
    s3.put_object(Bucket=DATA, Key="capture/iam-ep/v2/2026/01/01/10/00-00-000-x.jsonl", Body=line.encode() + b"\n")
    sm.create_model_package_group(ModelPackageGroupName="iam-pkg")
    pkgs = [sm.create_model_package(ModelPackageGroupName="iam-pkg", ModelApprovalStatus="Approved",
                                    InferenceSpecification={"Containers": [{"Image": "img", "ModelDataUrl":
                                                                            f"s3://{DATA}/models/v{v}.tar.gz"}],
                                                            "SupportedContentTypes": ["text/csv"],
                                                            "SupportedResponseMIMETypes": ["text/csv"]}
                                    )["ModelPackageArn"] for v in ("1", "2")]
    make_model(sm, "iam-pkg-m2", "2", package_arn=pkgs[1])
    sm.create_endpoint_config(EndpointConfigName="iam-pkg-cfg", ProductionVariants=[
        {"VariantName": "primary", "ModelName": "iam-pkg-m2", "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0}])
    sm.create_endpoint(EndpointName="iam-pkg-ep", EndpointConfigName="iam-pkg-cfg")
    base = tmp_path_factory.mktemp("iam-evidence")
    (base / "src").mkdir()
    (base / "src" / "note.txt").write_text("state of the endpoint\n")
    b = EvidenceStore(base / "store", fsync=False).open_bundle("INC-IAM", actor="test")
    b.add_tree(base / "src", "target_state", category="target_state")
    key = load_or_create_signing_key(base / "key.pem")
    b.seal(key)
    # from here on, every request must be signed by a known IAM user and allowed by its policies
    sim.require_iam()
    creds = {"endpoint_url": sim.url, "region_name": REGION, "aws_access_key_id": access["AccessKeyId"],
             "aws_secret_access_key": access["SecretAccessKey"]}
    return {"sim": sim, "creds": creds, "bundle": b, "base": base, "key": key}


def recorded_clients(creds, calls):
    clients = {}
    for service in ("sagemaker", "s3"):
        c = boto3.client(service, **creds)

        def record(params, model, _service=service, **_kw):
            calls.append((_service, model.name, dict(params)))

        c.meta.events.register("before-parameter-build.*.*", record)
        clients[service] = c
    return clients


def test_the_policy_allows_every_call_and_nothing_more(world, tmp_path):
    calls: list[tuple[str, str, dict]] = []
    c = recorded_clients(world["creds"], calls)

    def t(endpoint, **opts):
        return SageMakerTarget(endpoint, sagemaker_client=c["sagemaker"], s3_client=c["s3"], poll=0.05,
                               wait_timeout=30, **opts)

    main = t("iam-ep", model_name="iam", quarantine_endpoint_config="iam-quarantine")
    assert main.isolate(reason="incident").serving_versions == ["1"]
    assert main.restore().serving_versions == ["2"]
    assert {r.version: r.share for r in main.canary("3", 0.1).routes}["3"] == 0.1
    main.canary("3", 0.0)
    assert main.isolate(quarantine=True).mode == "quarantined"
    main.restore()
    assert len(main.decisions()) == 1
    assert main.snapshot(tmp_path / "snap")
    assert t("iam-new-ep", model_name="iam").rollback("1").serving_versions == ["1"]  # CreateEndpoint
    reg = t("iam-pkg-ep", model_name="iam-pkg", model_package_group="iam-pkg", execution_role_arn=ROLE)
    assert reg.isolate(reason="incident").serving_versions == ["1"]  # CreateModel from the approved package
    assert reg.snapshot(tmp_path / "snap-reg")  # DescribeModelPackage
    uri = f"s3://{EVIDENCE}/INC-IAM"
    upload_bundle(world["bundle"].path, uri, client=c["s3"], retain_days=1, signing_key=world["key"])
    assert verify_s3(uri, public_key_pem(world["key"]), client=c["s3"], deep=True).ok
    download_bundle(uri, tmp_path / "copy", client=c["s3"])

    needed = set().union(*(iam_actions(s, op, p) for s, op, p in calls))
    doc = json.loads(POLICY.read_text())
    allowed = {a for st in doc["Statement"] if st["Effect"] == "Allow" for a in st["Action"]}
    assert needed - allowed == set(), "calls the policy does not allow"
    assert allowed - needed == set(), "the policy grants more than aiir uses"
    made = {f"{s}:{op}" for s, op, _ in calls}
    declared = {f"sagemaker:{a}" for a in API_CALLS["sagemaker"]} | {f"s3:{a}" for a in API_CALLS["s3"]} \
        | {f"s3:{a}" for a in S3_CALLS}
    assert made == declared, "the API_CALLS lists in the code drifted from what the code calls"


def test_calls_outside_the_policy_are_refused(world):
    c = recorded_clients(world["creds"], [])
    t = SageMakerTarget("iam-ep", sagemaker_client=c["sagemaker"], s3_client=c["s3"])
    from aiir.errors import TargetError

    with pytest.raises(TargetError, match="DescribeEndpoint: AWS did not accept the credentials .InvalidClientTokenId"):
        SageMakerTarget("iam-ep", sagemaker_client=boto3.client("sagemaker", **{**world["creds"],
                        "aws_access_key_id": "AKIAUNKNOWN0000000000"}), s3_client=c["s3"]).describe()
    assert t.describe().settled
    for call in (lambda: c["sagemaker"].delete_endpoint(EndpointName="iam-ep"),
                 lambda: c["sagemaker"].delete_endpoint_config(EndpointConfigName="iam-cfg"),
                 lambda: c["s3"].delete_object(Bucket=EVIDENCE, Key="INC-IAM/manifest.json"),
                 lambda: c["s3"].put_object(Bucket="some-other-bucket", Key="x", Body=b"x")):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, err.value
        assert err.value.response["Error"]["Code"] in ("AccessDenied", "403"), err.value
