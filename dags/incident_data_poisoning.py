"""
### Incident: data poisoning

Opened by `data_integrity_check` (the playbook its findings call for) or by a person (**Trigger DAG
w/ config**: model, target, severity, dry run, approval). The conf is validated by the Params schema
when the run is triggered, and again by the first tasks before they act. The tasks are the steps of the
playbook definition `aiir.playbooks.poisoning` (the same list `aiir incident run` follows), in the NIST
SP 800-61r3 / CSF 2.0 lifecycle, each idempotent (re-running any of them changes nothing):

| phase | task | effect |
|---|---|---|
| RS.MI contain | `isolate_endpoint` | first task: all traffic to last-known-good, or quarantine (503); pages on failure |
| RS.MA | `open_incident` | save the record, pin suspect + last-known-good versions (right after containment) |
| RS.AN | `preserve_evidence` | signed, write-once evidence bundle with SHA-256 manifest and custody chain |
| RS.AN | `triage` | precision/recall vs labelled feedback + label-free estimate |
| RS.AN | `forensics` | poisoned batch/source/pattern, blast radius per client |
| RS.MI eradicate | `eradicate` | quarantine list |
| RC.RP | `retrain_from_clean_data` | clean retrain, gate, promote (separate DAG, waited on) |
| RS.CO | `report` | HTML/JSON/Markdown report, ATLAS/OWASP, regulatory deadlines |

`confirm_quarantine` asks a person only when containment would take the whole service down (last-known-good
is the version serving); `confirm_incident` only when triage confirmed nothing (reject = close as a false
positive, target restored). Incidents run at once; on one model the steps that change the target or the
registry take the model's lock, so a new incident's containment never waits behind another's approval.
Every phase change is emitted to the SIEM (ECS + Splunk HEC).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from aiir_airflow.params import incident_params
from aiir_airflow.playbook_dag import playbook_tasks


@dag(
    dag_id="incident_data_poisoning",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # incidents run at once (on one model, the mutating steps take the model's lock: aiir.locks)
    max_active_runs=16,
    default_args={"owner": "incident-response", "retries": 2, "retry_delay": pendulum.duration(seconds=5)},
    tags=["aiir", "incident", "poisoning", "AML.T0020", "OWASP-ML02"],
    doc_md=__doc__,
    params=incident_params(),
    render_template_as_native_obj=True,
)
def incident_data_poisoning():
    playbook_tasks("data_poisoning")


incident_data_poisoning()
