"""Test DAG for the SageMaker operators: snapshot the endpoint into the evidence bucket, then isolate it."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag

from aiir_airflow.sagemaker import SageMakerIsolateOperator, SageMakerSnapshotOperator


@dag(schedule=None, catchup=False, render_template_as_native_obj=True, default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
     params={"endpoint": Param("", type="string"), "model": Param("", type="string"),
             "incident": Param("", type="string"), "evidence_uri": Param("", type="string")})
def sagemaker_ops():
    snapshot = SageMakerSnapshotOperator(task_id="snapshot", endpoint_name="{{ params.endpoint }}",
                                         model_name="{{ params.model }}", incident_id="{{ params.incident }}",
                                         evidence_uri="{{ params.evidence_uri }}", retain_days=1)
    isolate = SageMakerIsolateOperator(task_id="isolate", endpoint_name="{{ params.endpoint }}",
                                       model_name="{{ params.model }}", reason="incident {{ params.incident }}",
                                       poll_interval=0.5, wait_timeout=120)
    snapshot >> isolate


sagemaker_ops()
