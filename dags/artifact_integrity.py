"""
### Artifact integrity

Runs **daily** (`AIIR_ARTIFACT_INTEGRITY_SCHEDULE`: a cron expression, or `none`). Re-verifies every
registered model version (its MLflow artifact folder) and every training dataset against the
model-signing signature recorded at registration: each changed, missing or added file, a signature by
an untrusted key, or a signature file swapped for another is named in
`$AIIR_HOME/checks/artifact-integrity__<run>/findings.json`.

On a mismatch it **opens an incident** per affected model (playbook `artifact_integrity`; MITRE ATLAS
AML.T0010 AI Supply Chain Compromise / AML.T0018 Manipulate AI Model, OWASP ML06 / ML10) — record,
timeline, SIEM event — and triggers `incident_artifact_tampering` with it as conf (run id = incident id,
so a re-run never opens the same incident twice; with several tampered models, the first is triggered and
the others are listed in the run's XCom and `aiir incident list`). Same code as
`aiir verify model:NAME/VERSION`; see `docs/audit.md`.
"""

from __future__ import annotations

import os

import pendulum
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import CronTriggerTimetable, Param, dag

from aiir_airflow.assets import INCIDENTS
from aiir_airflow.audit import ArtifactIntegrityOperator, incidents_opened
from aiir_airflow.notifiers import SiemNotifier
from aiir_airflow.operators import TriggerPlaybookOperator

SCHEDULE = os.environ.get("AIIR_ARTIFACT_INTEGRITY_SCHEDULE", "@daily")


@dag(
    dag_id="artifact_integrity",
    schedule=None if SCHEDULE == "none" else CronTriggerTimetable(SCHEDULE, timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "ml-security", "retries": 1, "retry_delay": pendulum.duration(seconds=30)},
    tags=["aiir", "detect", "integrity", "audit"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    params={
        "model_name": Param("", type="string", title="Only this registered model (empty: all)"),
        "target_kind": Param("local", type="string", enum=["local", "sagemaker", "kubernetes"]),
    },
)
def artifact_integrity():
    verify_registered_artifacts = ArtifactIntegrityOperator(
        task_id="verify_registered_artifacts",
        model_name="{{ params.model_name }}",
        target_kind="{{ params.target_kind }}",
        on_success_callback=SiemNotifier("detect", "artifact_integrity_checked"),
    )
    incident_opened = ShortCircuitOperator(
        task_id="incident_opened",
        python_callable=incidents_opened,
        op_args=["{{ ti.xcom_pull(task_ids='verify_registered_artifacts') }}"],
        on_success_callback=SiemNotifier("detect", "incident_opened"),
    )
    trigger = TriggerPlaybookOperator(
        task_id="trigger_incident_playbook",
        trigger_dag_id="incident_artifact_tampering",
        trigger_run_id="{{ ti.xcom_pull(task_ids='verify_registered_artifacts')['incidents'][0]['incident_id'] }}",
        conf="{{ ti.xcom_pull(task_ids='verify_registered_artifacts')['incidents'][0]['conf'] }}",
        skip_when_already_exists=True,
        outlets=[INCIDENTS],
    )
    verify_registered_artifacts >> incident_opened >> trigger


artifact_integrity()
