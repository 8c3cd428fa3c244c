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


def test_json_answers_carry_no_sniff_and_a_csp(gw):
    from tests.gateway.gwkit import ROWS, split

    for r in (gw.http.get("/ping"), gw.http.get("/admin/state"), gw.score(split(ROWS[:1]), client="hdr"),
              gw.score(b"<script>alert(1)</script>", ctype="text/html", client="hdr")):
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert r.headers["content-type"].startswith("application/json")


def test_state_folders_holding_decision_copies_are_owner_only(aiir_home):
    from aiir import config

    p = config.paths().ensure()
    for d in (p.home, p.incidents, p.evidence, p.gateway):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    p.incidents.chmod(0o755)  # loosened by hand (or made by an older aiir): tightened again
    config.paths().ensure()
    assert stat.S_IMODE(p.incidents.stat().st_mode) == 0o700
