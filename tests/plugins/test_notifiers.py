"""The SIEM notifier and the containment pager, called as Airflow calls them (with a task context)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest

from aiir_airflow.notifiers import SiemNotifier, page_on_failure


def _context(exc: Exception | None = None) -> dict:
    ti = SimpleNamespace(dag_id="incident_data_poisoning", task_id="isolate_endpoint", try_number=4,
                         xcom_pull=lambda task_ids: {"incident_id": "INC-TEST-1"})
    return {"ti": ti, "run_id": "INC-TEST-1", "params": {}, "exception": exc}


@pytest.fixture
def pager():
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_port}/page", got
    srv.shutdown()


def test_failed_containment_pages_siem_and_webhook(aiir_home, monkeypatch, pager):
    url, got = pager
    monkeypatch.setenv("AIIR_PAGER_WEBHOOK", url)
    page_on_failure(_context(RuntimeError("gateway at http://127.0.0.1:9 is unreachable")))
    lines = (aiir_home / "siem" / "ecs.jsonl").read_text().splitlines()
    ecs = json.loads(lines[-1])
    assert ecs["event"]["outcome"] == "failure" and ecs["event"]["action"] == "containment_failed"
    assert "unreachable" in json.dumps(ecs)
    assert len(got) == 1 and got[0]["event"]["action"] == "containment_failed"


def test_pager_webhook_down_does_not_mask_the_failure(aiir_home, monkeypatch, capsys):
    monkeypatch.setenv("AIIR_PAGER_WEBHOOK", "http://127.0.0.1:9/page")
    page_on_failure(_context(RuntimeError("boom")))  # must not raise
    assert "pager webhook" in capsys.readouterr().out
    assert (aiir_home / "siem" / "ecs.jsonl").exists()


def test_siem_notifier_emits_one_phase_event(aiir_home):
    SiemNotifier("contain", "endpoint_isolated").notify(_context())
    ecs = [json.loads(x) for x in (aiir_home / "siem" / "ecs.jsonl").read_text().splitlines()]
    hec = [json.loads(x) for x in (aiir_home / "siem" / "hec.jsonl").read_text().splitlines()]
    assert len(ecs) == 1 and len(hec) == 1
    assert ecs[0]["event"]["action"] == "endpoint_isolated" and "INC-TEST-1" in json.dumps(ecs[0])
    assert hec[0]["sourcetype"] == "aiir:incident"
