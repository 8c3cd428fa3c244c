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

import pendulum
from airflow.sdk import dag

from aiir_airflow.params import retrain_params
from aiir_airflow.playbook_dag import playbook_tasks


@dag(
    dag_id="retrain_from_clean_data",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # incidents run at once (on one model, the mutating steps take the model's lock: aiir.locks)
    max_active_runs=16,
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": pendulum.duration(seconds=10)},
    tags=["aiir", "recover", "retrain"],
    doc_md=__doc__,
    params=retrain_params(),
    render_template_as_native_obj=True,
)
def retrain_from_clean_data():
    playbook_tasks("retrain_from_clean_data")


retrain_from_clean_data()
