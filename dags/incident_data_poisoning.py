"""
### Incident: data poisoning

Opened by `data_integrity_check` or by a person (**Trigger DAG w/ config**: model, target, severity,
dry run, approval). The conf is validated by the Params schema when the run is triggered, and again
by the first tasks before they act. Tasks follow the NIST SP 800-61r3 /
CSF 2.0 lifecycle and are idempotent (re-running any of them changes nothing):

| phase | task | effect |
|---|---|---|
| Contain (RS.MI) | `isolate_endpoint` | first task: all traffic to last-known-good, or quarantine (503); pages on failure |
| Detect | `open_incident` | save the record, pin suspect + last-known-good versions (right after containment) |
| Analyse (RS.AN) | `preserve_evidence` | signed, write-once evidence bundle with SHA-256 manifest and custody chain |
| Analyse (RS.AN) | `triage` | precision/recall vs labelled feedback + label-free estimate |
| Analyse (RS.AN) | `forensics` | poisoned batch/source/pattern, blast radius per client |
| Eradicate (RS.MI) | `eradicate` | quarantine list |
| Recover (RC.RP) | `retrain_from_clean_data` | clean retrain, gate, promote (separate DAG, waited on) |
| Report (RS.CO) | `report` | HTML/JSON/Markdown report, ATLAS/OWASP, regulatory deadlines |

Every phase change is emitted to the SIEM (ECS + Splunk HEC). Runs are serialised
(`max_active_runs=1`): two incidents on the same model never act on it at once.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import TaskGroup, TriggerRule, dag

from aiir_airflow.notifiers import SiemNotifier, page_on_failure
from aiir_airflow.operators import (
    IsolateEndpointOperator,
    OpenIncidentOperator,
    PlaybookStepOperator,
    PreserveEvidenceOperator,
    TriggerPlaybookOperator,
)
from aiir_airflow.params import incident_params


@dag(
    dag_id="incident_data_poisoning",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "incident-response", "retries": 2, "retry_delay": pendulum.duration(seconds=5)},
    tags=["aiir", "incident", "poisoning", "AML.T0020", "OWASP-ML02"],
    doc_md=__doc__,
    params=incident_params(),
    render_template_as_native_obj=True,
)
def incident_data_poisoning():
    opened = OpenIncidentOperator(task_id="open_incident", retries=0,
                                  on_success_callback=SiemNotifier("detect", "incident_opened"))
    with TaskGroup("contain", prefix_group_id=False, tooltip="NIST RS.MI — containment, first and fast"):
        isolate = IsolateEndpointOperator(
            task_id="isolate_endpoint", retries=3, retry_delay=pendulum.duration(seconds=2),
            priority_weight=100, on_failure_callback=page_on_failure,
            on_success_callback=SiemNotifier("contain", "endpoint_isolated"))
    with TaskGroup("analyse", prefix_group_id=False, tooltip="NIST RS.AN — evidence, triage, forensics"):
        preserve = PreserveEvidenceOperator(
            task_id="preserve_evidence", on_success_callback=SiemNotifier("preserve", "evidence_sealed"))
        triage = PlaybookStepOperator(task_id="triage", step="triage",
                                      on_success_callback=SiemNotifier("analyse", "signal_triaged"))
        forensics = PlaybookStepOperator(task_id="forensics", step="forensics",
                                         on_success_callback=SiemNotifier("analyse", "poison_localised"))
    with TaskGroup("eradicate_recover", prefix_group_id=False, tooltip="NIST RS.MI / RC.RP"):
        eradicate = PlaybookStepOperator(task_id="eradicate", step="eradicate",
                                         on_success_callback=SiemNotifier("eradicate", "poison_quarantined"))
        retrain = TriggerPlaybookOperator(
            task_id="retrain_from_clean_data",
            trigger_dag_id="retrain_from_clean_data",
            trigger_run_id="{{ ti.xcom_pull(task_ids='open_incident')['incident_id'] }}-retrain",
            conf="{{ ti.xcom_pull(task_ids='eradicate')['retrain_conf'] }}",
            wait_for_completion=True, poke_interval=3, skip_when_already_exists=False,
            on_success_callback=SiemNotifier("recover", "model_recovered"),
        )
    report = PlaybookStepOperator(task_id="report", step="report", trigger_rule=TriggerRule.ALL_DONE,
                                  on_success_callback=SiemNotifier("report", "report_published"))

    # Containment first: isolate_endpoint is the run's only first task, so nothing (not even the
    # MLflow import of open_incident) competes with it for a CPU.
    isolate >> opened >> [preserve, triage]
    preserve >> forensics >> eradicate >> retrain >> report
    triage >> forensics


incident_data_poisoning()
