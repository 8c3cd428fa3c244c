"""SIEM events: ECS 8.x and Splunk HEC shapes, the JSON-lines sink, and the optional HEC forwarder."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aiir import siem
from aiir.errors import BadInput
from aiir.knowledge.taxonomy import NIST_PHASES

ECS_CATEGORIES = {"api", "authentication", "configuration", "database", "driver", "email", "file", "host", "iam",
                  "intrusion_detection", "library", "malware", "network", "package", "process", "registry",
                  "session", "threat", "vulnerability", "web"}
ECS_TYPES = {"access", "admin", "allowed", "change", "connection", "creation", "deletion", "denied", "device", "end",
             "error", "group", "indicator", "info", "installation", "protocol", "start", "user"}
AT = "2026-11-24T15:00:00Z"


def ev(phase="contain", action="traffic_to_last_known_good", outcome="success", **kw):
    return siem.phase_event("INC-1", phase, action, outcome, at=AT, model="fraud-detector",
                            target="local:fraud-detector", **kw)


def test_phase_event_shape_and_validation():
    e = ev(details={"dag_id": "incident_data_poisoning", "run_id": "r1"}, atlas=["AML.T0020"])
    assert e["phase"] == "contain" and e["nist"] == NIST_PHASES["contain"] and e["at"] == "2026-11-24T15:00:00.000Z"
    assert e["alert"] is False and e["details"]["run_id"] == "r1" and e["atlas"] == ["AML.T0020"]
    assert ev()["id"] == ev()["id"] != ev(outcome="failure")["id"]  # deterministic: retries dedupe
    with pytest.raises(BadInput, match="phase"):
        siem.phase_event("INC-1", "panic", "x", "success")
    with pytest.raises(BadInput, match="outcome"):
        siem.phase_event("INC-1", "detect", "x", "ok")
    with pytest.raises(BadInput, match="timezone"):
        siem.phase_event("INC-1", "detect", "x", "success", at=datetime(2026, 1, 1))
    with pytest.raises(BadInput, match="severity"):
        siem.phase_event("INC-1", "detect", "x", "success", severity="apocalyptic")


@pytest.mark.parametrize("phase", list(NIST_PHASES))
def test_ecs_document_for_every_phase(phase):
    doc = siem.to_ecs(ev(phase=phase, atlas=["AML.T0020", "AML.T0010.002"]))
    assert doc["@timestamp"] == "2026-11-24T15:00:00.000Z" and doc["ecs"]["version"].startswith("8.")
    e = doc["event"]
    assert e["kind"] == ("alert" if phase == "detect" else "event")
    assert set(e["category"]) <= ECS_CATEGORIES and set(e["type"]) <= ECS_TYPES
    assert e["action"] == "traffic_to_last_known_good" and e["outcome"] == "success" and e["id"]
    assert doc["observer"]["product"] == "aiir"
    assert doc["labels"] == {"incident_id": "INC-1", "nist_phase": phase, "model": "fraud-detector",
                             "target": "local:fraud-detector"}
    t = doc["threat"]
    assert t["framework"] == "MITRE ATLAS"
    assert t["technique"]["id"] == ["AML.T0020", "AML.T0010.002"]
    assert t["technique"]["name"][0] == "Poison Training Data"
    assert t["technique"]["subtechnique"]["id"] == ["AML.T0010.002"]
    assert ("rule" in doc) == (phase == "detect")


def test_paging_failure_is_a_critical_alert():
    e = siem.phase_event("INC-1", "contain", "containment_failed", "failure", at=AT,
                         details={"error": "gateway down", "page": True})
    doc = siem.to_ecs(e)
    assert doc["event"]["kind"] == "alert" and doc["event"]["severity"] == 99 and doc["event"]["outcome"] == "failure"
    assert doc["rule"]["id"] == "aiir.contain.containment_failed"
    assert "threat" not in doc


def test_hec_payload():
    e = ev()
    h = siem.to_hec(e, host="ir-host", index="security")
    assert h["time"] == datetime(2026, 11, 24, 15, tzinfo=UTC).timestamp() == 1795532400.0
    assert h["sourcetype"] == "aiir:incident" and h["source"] == "aiir" and h["host"] == "ir-host"
    assert h["index"] == "security" and h["event"] == e
    assert h["fields"] == {"incident_id": "INC-1", "phase": "contain", "outcome": "success"}


def test_sink_appends_once_per_event(aiir_home):
    sink = siem.EventSink()
    assert sink.dir == aiir_home / "siem"
    assert sink.emit(ev())["written"] is True
    assert sink.emit(ev())["written"] is False  # a retried task
    assert sink.emit(ev(phase="recover", action="promoted"))["written"] is True
    ecs = [json.loads(x) for x in (aiir_home / "siem" / "ecs.jsonl").read_text().splitlines()]
    hec = [json.loads(x) for x in (aiir_home / "siem" / "hec.jsonl").read_text().splitlines()]
    assert [d["event"]["action"] for d in ecs] == ["traffic_to_last_known_good", "promoted"]
    assert [d["event"]["action"] for d in hec] == ["traffic_to_last_known_good", "promoted"]
    assert sink.events() == ecs


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[dict, bytes]] = []
    status = 200

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"text":"Success","code":0}' if type(self).status == 200 else b'{"text":"Invalid token"}')

    def log_message(self, *a):
        pass


@pytest.fixture
def hec_server():
    _Collector.received = []
    _Collector.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Collector
    server.shutdown()
    server.server_close()


def test_post_hec_batches_events(hec_server):
    url, coll = hec_server
    out = siem.post_hec(url, "tok-123", [ev(), ev(phase="report", action="report_published")])
    assert out["sent"] == 2 and out["answer"]["text"] == "Success"
    headers, body = coll.received[0]
    assert headers["Authorization"] == "Splunk tok-123"
    lines = [json.loads(x) for x in body.decode().splitlines()]
    assert [x["event"]["action"] for x in lines] == ["traffic_to_last_known_good", "report_published"]
    assert all(x["sourcetype"] == "aiir:incident" for x in lines)


def test_post_hec_refusal_raises_without_leaking_the_token(hec_server):
    url, coll = hec_server
    coll.status = 403
    with pytest.raises(siem.SiemError) as err:
        siem.post_hec(url, "super-secret-token", [ev()])
    assert "403" in str(err.value) and "super-secret-token" not in str(err.value)
    with pytest.raises(BadInput):
        siem.post_hec("ftp://x", "t", [ev()])


def test_sink_forwards_only_when_configured(aiir_home, hec_server, monkeypatch):
    url, coll = hec_server
    monkeypatch.delenv("AIIR_SIEM_HEC_URL", raising=False)
    monkeypatch.delenv("AIIR_SIEM_HEC_TOKEN", raising=False)
    assert siem.EventSink().emit(ev())["forwarded"] is False and coll.received == []
    monkeypatch.setenv("AIIR_SIEM_HEC_URL", url)
    monkeypatch.setenv("AIIR_SIEM_HEC_TOKEN", "tok")
    res = siem.EventSink().emit(ev(phase="preserve", action="evidence_sealed"))
    assert res["forwarded"] is True and len(coll.received) == 1
    assert coll.received[0][0]["Authorization"] == "Splunk tok"
    coll.status = 500  # the SIEM is down: the event is still on disk and nothing raises
    res = siem.EventSink().emit(ev(phase="report", action="report_published"))
    assert res["written"] is True and res["forwarded"] is False and "500" in res["forward_error"]
    assert len(siem.EventSink().events()) == 3
