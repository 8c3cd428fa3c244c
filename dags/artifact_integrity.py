"""
### Artifact integrity

Runs **daily** (`AIIR_ARTIFACT_INTEGRITY_SCHEDULE`: a cron expression, or `none`). Re-verifies every
registered model version (its MLflow artifact folder) and every training dataset against the
model-signing signature recorded at registration: each changed, missing or added file, a signature by
an untrusted key, or a signature file swapped for another is named in
`$AIIR_HOME/checks/artifact-integrity__<run>/findings.json` (the run's summary: XCom `summary`).

On a mismatch it **opens an incident** per affected model (playbook `artifact_integrity`; MITRE ATLAS
AML.T0010 AI Supply Chain Compromise / AML.T0018 Manipulate AI Model, OWASP ML06 / ML10) — record,
timeline, SIEM event — and triggers `incident_artifact_tampering` with it as conf (run id = incident id,
so a re-run never opens the same incident twice; several tampered models: one playbook run each). The same
mismatches seen again by a later run are reported as a duplicate of the incident that has them and open
nothing. Same code as
`aiir verify model:NAME/VERSION`; see `docs/audit.md`.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag

from aiir_airflow.assets import INCIDENTS
from aiir_airflow.audit import ArtifactIntegrityOperator
from aiir_airflow.notifiers import SiemNotifier
from aiir_airflow.operators import TriggerPlaybookOperator
from aiir_airflow.params import target_kinds

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
        "target_kind": Param("local", type="string", enum=target_kinds()),
    },
)
def artifact_integrity():
    verify_registered_artifacts = ArtifactIntegrityOperator(
        task_id="verify_registered_artifacts",
        model_name="{{ params.model_name }}",
        target_kind="{{ params.target_kind }}",
        on_success_callback=SiemNotifier("detect", "artifact_integrity_checked"),
    )
    # mapped over the incidents this run opened: none on a clean run (the task is skipped), one run each otherwise
    # (conf as one expression: rendered natively it stays the record; per-key templating would turn "" into None)
    TriggerPlaybookOperator.partial(
        task_id="trigger_incident_playbook",
        trigger_dag_id="incident_artifact_tampering",
        conf="{{ ti.xcom_pull(task_ids='verify_registered_artifacts', key='summary')['triggers'][ti.map_index]"
             "['conf'] }}",
        skip_when_already_exists=True,
        outlets=[INCIDENTS],
        on_success_callback=SiemNotifier("detect", "incident_opened"),  # only when an incident really opened
    ).expand(trigger_run_id=verify_registered_artifacts.output)


artifact_integrity()
