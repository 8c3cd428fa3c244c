"""
### Retrain from clean data (post-incident recovery)

Triggered by `incident_data_poisoning` with the quarantine list (or by a person). Builds the clean
training set (the replaced model's data minus every quarantined source/row, digests verified),
validates it with Great Expectations against the trusted reference, trains with **the same recipe**
as the replaced model (MLflow lineage: datasets as inputs, incident id as tag), then gates: on the
trusted holdout at least as good as last-known-good within tolerance, and no longer fooled by the
poisoned rows. Only then — after a person approves, when `require_approval` — it moves `champion`
and `last-known-good` (hash-chained registry log) and serves the new version on the target.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.providers.standard.operators.python import BranchPythonOperator
from airflow.sdk import TriggerRule, dag

from aiir_airflow import callables
from aiir_airflow.assets import PROMOTED_MODELS
from aiir_airflow.notifiers import SiemNotifier
from aiir_airflow.operators import RecoveryStepOperator
from aiir_airflow.params import retrain_params


@dag(
    dag_id="retrain_from_clean_data",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": pendulum.duration(seconds=10)},
    tags=["aiir", "recover", "retrain"],
    doc_md=__doc__,
    params=retrain_params(),
    render_template_as_native_obj=True,
)
def retrain_from_clean_data():
    clean = RecoveryStepOperator(task_id="build_clean_set", step="build_clean_set")
    validate = RecoveryStepOperator(task_id="validate_clean_set", step="validate_clean_set")
    train = RecoveryStepOperator(task_id="train_candidate", step="train_candidate")
    gate = RecoveryStepOperator(task_id="gate", step="gate", retries=0,
                                on_success_callback=SiemNotifier("recover", "candidate_passed_gate"))
    approval_required = BranchPythonOperator(task_id="approval_required",
                                             python_callable=callables.approval_required, op_args=["{{ params }}"])
    await_approval = ApprovalOperator(task_id="await_approval", subject="Promote the retrained model?",
                                      body="Incident {{ params.incident_id }}: candidate passed the gate. "
                                           "Approve to promote it to champion and serve it.",
                                      response_timeout=timedelta(hours=12), fail_on_reject=True)
    promote = RecoveryStepOperator(task_id="promote", step="promote", outlets=[PROMOTED_MODELS],
                                   trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
                                   on_success_callback=SiemNotifier("recover", "model_promoted"))
    no_approval_needed = EmptyOperator(task_id="no_approval_needed")
    # promote joins both branches (a branch's direct downstream that it does not follow is skipped).
    clean >> validate >> train >> gate >> approval_required >> [await_approval, no_approval_needed] >> promote


retrain_from_clean_data()
