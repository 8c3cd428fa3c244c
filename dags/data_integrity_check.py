"""
### Data-integrity check

Runs **hourly** (`AIIR_INTEGRITY_SCHEDULE`: a cron expression, or `none`) and **whenever a new training-data batch lands** (the `fraud_training_batches` Asset).
It checks the batch against the model's reference data — Great Expectations contract, per-feature
drift (Evidently's tests, computed by aiir), label shift overall and per source, duplicate injection,
outliers, the source that explains the anomaly, SHA-256 of every registered artifact — and writes
`findings.json`, the GX result and an Evidently drift report to `$AIIR_HOME/checks/`.

When the check fails it **opens an incident by itself**: an incident record is written and the
playbook its findings call for (`aiir.playbooks.for_findings`; poisoning findings → `incident_data_poisoning`)
is triggered with it as conf (run id = incident id, so a re-run of this DAG never opens it twice).

Same code as `aiir check` / `aiir check-batch` on the command line.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag

from aiir_airflow.assets import INCIDENTS, INTEGRITY_FINDINGS, TRAINING_BATCHES
from aiir_airflow.notifiers import SiemNotifier
from aiir_airflow.operators import DataIntegrityCheckOperator, TriggerPlaybookOperator
from aiir_airflow.params import target_kinds

# Cron expression of the periodic check; "none" leaves only the Asset trigger (tests, demo).
SCHEDULE = os.environ.get("AIIR_INTEGRITY_SCHEDULE", "@hourly")


@dag(
    dag_id="data_integrity_check",
    schedule=TRAINING_BATCHES if SCHEDULE == "none" else AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(SCHEDULE, timezone="UTC"), assets=TRAINING_BATCHES),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "ml-security", "retries": 1, "retry_delay": pendulum.duration(seconds=30)},
    tags=["aiir", "detect", "integrity"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    params={
        "model_name": Param("fraud-detector", type="string", title="Registered model"),
        "reference": Param("", type="string", title="Reference dataset (empty: the model's profile)"),
        "current": Param("", type="string", title="Batch to check (empty: Asset event or newest batch)"),
        "target_kind": Param("local", type="string", enum=target_kinds()),
        "target_name": Param("fraud-detector", type="string", title="Serving target"),
    },
)
def data_integrity_check():
    check = DataIntegrityCheckOperator(
        task_id="check",
        model_name="{{ params.model_name }}",
        reference="{{ params.reference }}",
        current="{{ params.current }}",
        target_kind="{{ params.target_kind }}",
        target_name="{{ params.target_name }}",
        outlets=[INTEGRITY_FINDINGS],
        on_success_callback=SiemNotifier("detect", "integrity_check_completed"),
    )
    trigger = TriggerPlaybookOperator(
        task_id="trigger_incident_playbook",
        # skips itself unless the check opened an incident (playbook, run id = incident id, conf from its summary)
        from_summary="{{ ti.xcom_pull(task_ids='check') }}",
        skip_when_already_exists=True,
        outlets=[INCIDENTS],
        # the alert goes out only when an incident really opened (never for a clean batch)
        on_success_callback=SiemNotifier("detect", "incident_opened"),
    )
    check >> trigger


data_integrity_check()
