"""Exposure (issue #10 item 7): error bodies name no server paths; exports keep the log's permissions."""

from __future__ import annotations

import json
import stat

from aiir.gateway.app import scrub_paths
from aiir.gateway.decision_log import DecisionLog


def test_401_names_no_server_path(gw):
    for path in ("/admin/state", "/admin/decisions"):
        r = gw.http.get(path)
        assert r.status_code == 401
        body = r.text
        assert str(gw.state_dir) not in body and "/" + gw.state_dir.name not in body
        assert "admin.token" in r.json()["message"]  # still says what to send and where it lives, by name
        assert not any(part.startswith("/") for part in json.loads(body)["message"].split())


def test_client_facing_messages_are_scrubbed_of_paths():
    msg = "decision log writer is down ([Errno 28] No space left on device: '/var/lib/aiir/gw/decisions.db')"
    out = scrub_paths(msg)
    assert "/var/lib" not in out and "<path>" in out and "No space left" in out
    assert scrub_paths("limited to 2 requests/s") == "limited to 2 requests/s"


def test_siem_exports_are_owner_only(gw, tmp_path):
    gw.flush()
    log = DecisionLog(gw.log_path)
    for fn, name in ((log.export_ecs, "ecs.jsonl"), (log.export_hec, "hec.jsonl")):
        out = tmp_path / name
        fn(out, limit=5)
        assert stat.S_IMODE(out.stat().st_mode) == 0o600, name
    assert stat.S_IMODE(gw.state_dir.stat().st_mode) == 0o700
