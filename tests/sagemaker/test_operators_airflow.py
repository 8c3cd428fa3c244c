"""The SageMaker operators in a real Airflow (scheduler, triggerer, api-server) against the extended moto server.

The connection is the amazon provider's ``aws_default`` with an ``endpoint_url`` extra (from the environment, as
``AIRFLOW_CONN_AWS_DEFAULT``); the isolate task defers to ``TargetSettledTrigger`` while the endpoint is Updating
and judges the event in ``execute_complete``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiir.evidence.s3 import verify_s3
from tests.sagemaker.conftest import make_model, target, unique

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
DAGS = Path(__file__).parent / "dags"


@pytest.fixture(scope="module")
def airflow(sim, tmp_path_factory):
    home = tmp_path_factory.mktemp("sm-af") / "aiir-home"
    extra = {"AIIR_HOME": str(home), **sim.client_env(),
             # a loaded machine's api-server can take longer than the task runner's 5 s default
             "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": os.environ.get("AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT", "30")}
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    from aiir import runtime

    af = runtime.Airflow(dags=DAGS)
    try:
        af.start()
        af.wait_for_dag("sagemaker_ops")
        yield af
    finally:
        af.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert not af.service.alive()


def _endpoint(sim, aws):
    sm = aws["sagemaker"]
    model = unique("af")
    for v in ("1", "2"):
        make_model(sm, f"{model}-v{v}", v)
    t = target(sim, f"{model}-ep", model_name=model)
    t.rollback("1")
    t.set_last_known_good("1")
    t.rollback("2")
    return model, t


def test_snapshot_then_deferred_isolation(sim, aws, airflow):
    model, t = _endpoint(sim, aws)
    bucket = f"{model}-evidence"
    aws["s3"].create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    run = airflow.trigger("sagemaker_ops", {"endpoint": f"{model}-ep", "model": model, "incident": f"INC-{model}",
                                            "evidence_uri": f"s3://{bucket}/evidence"})
    done = airflow.wait_for_run("sagemaker_ops", run["dag_run_id"], timeout=300)
    states = {ti["task_id"]: ti["state"] for ti in airflow.task_instances("sagemaker_ops", run["dag_run_id"])}
    assert done["state"] == "success", states
    iso = airflow.xcom("sagemaker_ops", run["dag_run_id"], "isolate")
    assert iso["mode"] == "isolated" and iso["settled"]
    assert {r["version"]: r["share"] for r in iso["routes"]} == {"2": 0.0, "1": 1.0}
    assert iso["waited_s"] > 0  # came back through the trigger's event
    assert t.describe().serving_versions == ["1"]
    snap = airflow.xcom("sagemaker_ops", run["dag_run_id"], "snapshot")
    res = verify_s3(snap["evidence_uri"], client=aws["s3"])
    assert res.ok, res.messages
    assert snap["evidence_uri"] == f"s3://{bucket}/evidence/INC-{model}-sagemaker"


def test_silent_rollback_fails_the_try_and_the_retry_contains(sim, aws, airflow):
    model, t = _endpoint(sim, aws)
    sim.arm_silent_rollback("UpdateEndpointWeightsAndCapacities")
    run = airflow.trigger("sagemaker_ops", {"endpoint": f"{model}-ep", "model": model, "incident": f"INC-{model}",
                                            "evidence_uri": ""})
    done = airflow.wait_for_run("sagemaker_ops", run["dag_run_id"], timeout=300)
    tis = {ti["task_id"]: ti for ti in airflow.task_instances("sagemaker_ops", run["dag_run_id"])}
    assert done["state"] == "success", {k: v["state"] for k, v in tis.items()}
    assert tis["isolate"]["try_number"] == 2  # the first try saw SageMaker roll the shift back
    first = next(Path(airflow.env["AIRFLOW_HOME"], "logs").rglob(
        f"dag_id=sagemaker_ops/run_id={run['dag_run_id']}/task_id=isolate/attempt=1.log"))
    assert "SageMaker did not keep the change" in first.read_text()
    assert t.describe().serving_versions == ["1"]
