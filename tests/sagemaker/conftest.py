"""Fixtures for the SageMaker tests: the extended moto server (``aiir.awssim``) as a real process.

What the server adds to moto 5.2.5, and why (see ``aiir/awssim.py``): moto has no ``UpdateEndpoint`` (rollback,
canary and isolation by config switch need it), applies ``UpdateEndpointWeightsAndCapacities`` at once (so no
caller would ever see ``Updating``), answers ``InvokeEndpoint`` with canned bodies (no Data Capture to read), and
cannot be made to throttle or roll an update back. The launcher registers those actions *inside the server
process* and leaves boto3 and the Airflow hooks talking real HTTP to it — no client is mocked.

One server per test session (endpoints get unique names); the IAM test starts its own (authorisation is
server-wide there).
"""

from __future__ import annotations

import itertools
import os

import boto3
import pytest

from aiir.awssim import AwsSim

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/aiir-sagemaker-execution"
_ids = itertools.count(1)


@pytest.fixture(scope="session")
def sim(tmp_path_factory):
    s = AwsSim(settle_s=0.4, log=tmp_path_factory.mktemp("awssim") / "awssim.log").start()
    yield s
    s.stop()
    assert s.service.proc.poll() is not None, "the AWS simulator did not stop"


@pytest.fixture
def aws(sim):
    """boto3 clients for the test's own setup (the target builds its own from options)."""
    sim.clear_faults()
    kw = {"endpoint_url": sim.url, "region_name": REGION, "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    return {"sagemaker": boto3.client("sagemaker", **kw), "s3": boto3.client("s3", **kw),
            "runtime": boto3.client("sagemaker-runtime", **kw), "kw": kw}


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid() % 1000}-{next(_ids)}"


def make_model(sm, name: str, version: str, *, data_url: str | None = None, package_arn: str | None = None):
    container = {"ModelPackageName": package_arn} if package_arn else {
        "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud:latest",
        "Environment": {"AIIR_MODEL_VERSION": version}, **({"ModelDataUrl": data_url} if data_url else {})}
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=container)
    return name


def target(sim, endpoint: str, **options):
    from aiir.targets.sagemaker import SageMakerTarget

    opts = {"region": REGION, "endpoint_url": sim.url, "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing", "poll": 0.1, "wait_timeout": 30, **options}
    return SageMakerTarget(endpoint, **opts)


@pytest.fixture
def deployed(sim, aws):
    """An endpoint serving v2 (the suspect) with v1 (last-known-good) as a zero-weight standby variant,
    two instances each — the way ``rollback`` deploys with keep_fallback_variant."""
    sm = aws["sagemaker"]
    model = unique("fraud")
    for v in ("1", "2"):
        make_model(sm, f"{model}-v{v}", v)
    sm.create_endpoint_config(EndpointConfigName=f"{model}-cfg0", ProductionVariants=[
        {"VariantName": "v1", "ModelName": f"{model}-v1", "InitialInstanceCount": 2,
         "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0}])
    ep = f"{model}-ep"
    sm.create_endpoint(EndpointName=ep, EndpointConfigName=f"{model}-cfg0")
    t = target(sim, ep, model_name=model)
    t.set_last_known_good("1")
    t.rollback("2", reason="nightly deploy")
    return {"endpoint": ep, "model": model, "target": t}
