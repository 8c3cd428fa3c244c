"""The console plugin: what Airflow's plugin manager sees, its import cost, and the operator extra links."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_plugin_registers_the_app_and_views_without_importing_the_app():
    code = (
        "import sys, json\n"
        "import aiir_console_plugin as m\n"
        "p = m.AiirConsolePlugin\n"
        "print(json.dumps({'apps': [(a['url_prefix'], repr(a['app'])) for a in p.fastapi_apps],\n"
        "  'views': [(v['name'], v['destination'], v['href'], v['url_route']) for v in p.external_views],\n"
        "  'loaded': [x for x in ('fastapi', 'aiir_airflow.ui.app', 'aiir.console', 'pandas') if x in sys.modules]}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True,
                         env={"PYTHONPATH": f"{REPO / 'include'}:{REPO / 'plugins'}", "PATH": "/usr/bin:/bin",
                              "AIRFLOW_HOME": str(REPO / ".aiir-test-airflow-home-unused")})
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["apps"] == [["/aiir", "aiir_airflow.ui.app:create_app (lazy)"]]
    assert ["Incidents", "nav", "/aiir/incidents", "aiir-incidents"] in got["views"]
    assert ["Incident", "dag_run", "/aiir/runs/{DAG_ID}/{RUN_ID}", "aiir-incident"] in got["views"]
    assert got["loaded"] == []  # workers load plugins too: nothing heavy on that path


def test_airflowignore_keeps_the_plugin_scan_to_the_entry_module():
    assert "aiir_airflow/" in (REPO / "plugins" / ".airflowignore").read_text().splitlines()


def test_operators_carry_console_links():
    from aiir_airflow import links, operators

    names = {cls.__name__: {link.name for link in cls.operator_extra_links}
             for cls in (operators.DataIntegrityCheckOperator, operators.PreserveEvidenceOperator,
                         operators.PlaybookStepOperator, operators.IsolateEndpointOperator,
                         operators.OpenIncidentOperator, operators.RecoveryStepOperator)}
    assert names["DataIntegrityCheckOperator"] == {"Check findings (findings.json)", "Evidently drift report",
                                                   "Incident console"}
    assert names["PreserveEvidenceOperator"] == {"Evidence bundle", "Incident console"}
    assert names["PlaybookStepOperator"] == {"Incident report", "Incident console"}
    assert all("Incident console" in v for v in names.values())
    assert len({link.xcom_key for link in (cls() for cls in links.LINK_CLASSES)}) == len(links.LINK_CLASSES)


def test_console_url_encodes_run_ids(monkeypatch):
    from aiir_airflow.links import console_url

    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8280/")
    url = console_url("incident_data_poisoning", "manual__2026-11-24T15:00:00+00:00/../x", "report")
    assert url == ("http://127.0.0.1:8280/aiir/runs/incident_data_poisoning/"
                   "manual__2026-11-24T15%3A00%3A00%2B00%3A00%2F..%2Fx/report")
    monkeypatch.delenv("AIRFLOW__API__BASE_URL")
    assert console_url("d", "r", "evidence") == "/aiir/runs/d/r/evidence"
