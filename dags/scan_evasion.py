"""
### Evasion scan

Runs every **15 minutes** (`AIIR_EVASION_SCHEDULE`: a cron expression, or `none` for manual runs only) over
the serving target's decisions of the last `since` (default 1 h): near-duplicate probing, scores at the
decision boundary, decision flips, out-of-distribution inputs and unusual rates, per client, per input
cluster and across clients (`aiir scan-evasion`, [docs/evasion.md]). On a finding it **opens an incident by
itself** and triggers `incident_adversarial_evasion` with it (run id = incident id; a scan whose suspects an
open incident already covers is reported as a duplicate and opens nothing). The gateway's inline guard
reacts within the serving path; this DAG is the second line, for attacks slower than the guard's windows.
With `labels` (a file of delayed labels of served decisions: chargebacks, analyst review) it also flags
clients whose let-through decisions were later labelled positive far more often than other clients' — the
one sign a transfer attack leaves, as late as the label feed (set `since` to cover the labelled decisions).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag

from aiir_airflow.assets import INCIDENTS
from aiir_airflow.evasion import EvasionScanOperator
from aiir_airflow.notifiers import SiemNotifier
from aiir_airflow.operators import TriggerPlaybookOperator
from aiir_airflow.params import target_kinds

SCHEDULE = os.environ.get("AIIR_EVASION_SCHEDULE", "*/15 * * * *")


@dag(
    dag_id="scan_evasion",
    schedule=None if SCHEDULE == "none" else CronTriggerTimetable(SCHEDULE, timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "ml-security", "retries": 1, "retry_delay": pendulum.duration(seconds=30)},
    tags=["aiir", "detect", "evasion"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    params={
        "model_name": Param("fraud-detector", type="string", title="Registered model"),
        "target_kind": Param("local", type="string", enum=target_kinds()),
        "target_name": Param("fraud-detector", type="string", title="Serving target"),
        "since": Param("1h", type="string", title="Decisions of the last (15m, 2h, 7d, or an ISO time)"),
        "reference": Param("", type="string", title="Reference data or profile (empty: the model's profile)"),
        "labels": Param("", type="string", title="Delayed labels file (CSV/Parquet: decision_id, label; "
                                                 "chargebacks). Empty: the label signal is off"),
    },
)
def scan_evasion():
    scan = EvasionScanOperator(
        task_id="scan",
        model_name="{{ params.model_name }}",
        target_kind="{{ params.target_kind }}",
        target_name="{{ params.target_name }}",
        since="{{ params.since }}",
        reference="{{ params.reference }}",
        labels="{{ params.labels }}",
        on_success_callback=SiemNotifier("detect", "evasion_scan_completed"),
    )
    trigger = TriggerPlaybookOperator(
        task_id="trigger_incident_playbook",
        # skips itself unless the scan opened an incident (playbook, run id = incident id, conf from its summary)
        from_summary="{{ ti.xcom_pull(task_ids='scan') }}",
        skip_when_already_exists=True,
        outlets=[INCIDENTS],
        # the alert goes out only when an incident really opened (never for a clean scan)
        on_success_callback=SiemNotifier("detect", "incident_opened"),
    )
    scan >> trigger


scan_evasion()
