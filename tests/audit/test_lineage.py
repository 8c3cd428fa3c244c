"""OpenLineage out: file transport by default, HTTP to a real server when configured, never fatal."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

from aiir.audit import lineage


def _emit(tmp_path):
    f = tmp_path / "train.parquet"
    f.write_bytes(b"PAR1 not really")
    return lineage.emit_training(
        model="diag", version="4", run_id="r1", recipe="cancer-logreg-v1", started_at=datetime.now(UTC),
        datasets=[{"path": str(f), "sha256": "a" * 64, "signature": str(f) + ".sig", "signature_sha256": "b" * 64,
                   "key_id": "c" * 64, "method": "key"}],
        model_record={"artifact_sha256": "d" * 64, "signature": "/m.sig", "signature_sha256": "e" * 64},
        git_commit="f" * 40, stage="candidate", incident_id="INC-1")


def test_file_transport_is_the_default(aiir_home, tmp_path, monkeypatch):
    for k in ("AIIR_LINEAGE", "AIIR_LINEAGE_URL", "OPENLINEAGE_URL", "AIIR_LINEAGE_FILE"):
        monkeypatch.delenv(k, raising=False)
    res = _emit(tmp_path)
    assert res["emitted"] == 2 and res["transport"] == "file" and res["error"] is None
    events = [json.loads(x) for x in (aiir_home / "lineage" / "openlineage.jsonl").read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"] == res["run_id"]
    inp = events[1]["inputs"][0]
    assert inp["namespace"] == "file" and inp["facets"]["aiirIntegrity"]["sha256"] == "a" * 64
    assert inp["facets"]["aiirIntegrity"]["_schemaURL"] == lineage.FACET_SCHEMA
    assert events[1]["outputs"][0]["name"] == "models:/diag/4"
    assert events[1]["run"]["facets"]["aiirTraining"]["incidentId"] == "INC-1"


def test_http_transport_posts_to_a_real_endpoint(aiir_home, tmp_path, monkeypatch):
    got: list[tuple[str, dict]] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.path, json.loads(body)))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        monkeypatch.setenv("AIIR_LINEAGE_URL", f"http://127.0.0.1:{srv.server_port}")
        monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "retrain_from_clean_data")
        monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "train_candidate")
        res = _emit(tmp_path)
    finally:
        srv.shutdown()
        srv.server_close()
    assert res["emitted"] == 2 and res["transport"] == "http", res
    assert [p for p, _ in got] == ["/api/v1/lineage"] * 2
    assert got[1][1]["run"]["facets"]["aiirAirflow"]["dagId"] == "retrain_from_clean_data"
    assert not (aiir_home / "lineage").exists()


def test_unreachable_endpoint_or_off_never_fails(aiir_home, tmp_path, monkeypatch):
    from tests.gateway.gwkit import free_port

    monkeypatch.setenv("AIIR_LINEAGE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AIIR_LINEAGE_TIMEOUT", "1")
    monkeypatch.setenv("AIIR_LINEAGE_RETRIES", "0")
    res = _emit(tmp_path)
    assert res["emitted"] == 0 and res["error"]
    monkeypatch.setenv("AIIR_LINEAGE", "off")
    assert _emit(tmp_path)["transport"] == "off"
