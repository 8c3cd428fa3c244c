"""The playbook trigger of the detection DAGs, executed as the task runner executes it (rendered fields set)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, DagRunTriggerException

from aiir_airflow.operators import LatencyProbeOperator, TriggerPlaybookOperator


def _trigger(summary):
    op = TriggerPlaybookOperator(task_id="trigger_incident_playbook", from_summary="{{ ti.xcom_pull(task_ids='check') }}")
    op.from_summary = summary  # what native rendering of the check's XCom gives
    return op


def _ctx():
    return {"ti": SimpleNamespace(dag_id="data_integrity_check", task_id="trigger_incident_playbook")}


@pytest.mark.parametrize("status", ["clean", "duplicate", "already_quarantined", "too_few_rows"])
def test_no_incident_opened_skips_the_trigger(status):
    with pytest.raises(AirflowSkipException, match=f"no incident opened: status {status}"):
        _trigger({"status": status, "incident": None, "reason": "same batch as INC-1"}).execute(_ctx())


def test_an_opened_incident_triggers_its_playbook_with_its_id_and_conf():
    conf = {"incident_id": "INC-20261201-ab12", "model_name": "fraud-detector", "notes": ""}
    op = _trigger({"status": "incident", "playbook_dag_id": "incident_data_poisoning",
                   "incident": {"incident_id": "INC-20261201-ab12"}, "conf": conf})
    with pytest.raises(DagRunTriggerException) as got:
        op.execute(_ctx())
    assert got.value.trigger_dag_id == "incident_data_poisoning"
    assert got.value.dag_run_id == "INC-20261201-ab12"
    assert got.value.conf == conf and got.value.conf["notes"] == ""  # "" stays "" (not None)
    assert op.trigger_run_id == "INC-20261201-ab12"  # what the incident_opened notifier reads


def test_a_missing_summary_fails_rather_than_skipping_an_incident():
    with pytest.raises(AirflowFailException, match="summary"):
        _trigger(None).execute(_ctx())
    with pytest.raises(AirflowFailException, match="summary"):
        _trigger("{'status': 'incident'}").execute(_ctx())  # not rendered natively
    with pytest.raises(AirflowFailException, match="playbook_dag_id"):
        _trigger({"status": "incident", "incident": {"incident_id": "INC-1"}}).execute(_ctx())


def test_trigger_needs_a_target():
    with pytest.raises(ValueError, match="from_summary"):
        TriggerPlaybookOperator(task_id="t")


def test_latency_probe_does_nothing():
    assert LatencyProbeOperator(task_id="probe").execute({}) is None
