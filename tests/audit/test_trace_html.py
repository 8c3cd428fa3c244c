"""The trace's HTML and Markdown with attacker-chosen strings in every field that comes from data: in
headless Chromium no payload runs and each is shown as text; Markdown keeps them out of markup."""

from __future__ import annotations

import copy

import pytest

from aiir.audit.trace import render_html, render_md
from tests.browserkit import PAYLOADS, payload_ids


def hostile_doc() -> dict:
    """A trace document shaped like trace()'s output, a payload in every string that comes from data."""
    P = list(PAYLOADS)

    def p(i: int) -> str:
        return P[i % len(P)]

    version = {
        "registered": True, "name": p(0), "version": p(1), "run_id": p(2), "aliases_now": [p(3)], "stage": p(4),
        "recipe": p(5), "artifact": {"path": p(6), "registered_sha256": p(7), "sha256_now": p(8)},
        "signature": {"status": p(9), "recorded": {"signature": p(10)}, "check": None},
        "integrity_ok": False, "integrity_messages": [p(11)],
        "training_run": {"run_id": p(12), "user": p(13), "start_time": p(0), "end_time": p(1),
                         "params": {p(2): p(3)}, "metrics": {p(4): 0.5}},
        "code_version": {"commit": p(5), "source": p(6)},
        "datasets": [{"path": p(7), "sha256": p(8), "signature_status": p(9), "signature_messages": [p(10)],
                      "validation_at_training": {p(11): p(12)},
                      "integrity_checks": [{"status": p(13), "checked_at": p(0), "before_training": True,
                                            "findings": [p(1)]}]}],
        "lineage": {"where": p(2)},
        "promotions": [{"at": p(3), "actor": p(4), "alias": p(5), "from_version": p(6), "to_version": p(7),
                        "reason": p(8), "incident_id": p(9)}],
        "demotions": [{"at": p(10), "actor": p(11), "alias": p(12), "to_version": p(13), "reason": p(0),
                       "incident_id": p(1)}],
    }
    entry = {
        "decision_id": p(2), "found": True, "target": p(3),
        "decision": {"ts": p(4), "client_id": p(5), "request_id": p(6), "features": {p(7): p(8), "n": 1},
                     "prediction": p(9), "score": 0.9, "encrypted_fields": [p(10)], "decrypted_fields": [p(11)]},
        "log": {"path": p(12), "ok": False, "problems": [p(13)]},
        "model": {"name": p(0), "version": p(1), "served_artifact_digest": p(2)},
        "version": version,
        "serving_at_decision": {"registry_log": {p(3): p(4)},
                                "target_state_log": {"available": True, "serving": [p(5)], "state": {p(6): p(7)},
                                                     "last_change": {"reason": p(8)}},
                                "decision_version_consistent_with_state_log": False},
        "incidents": [{"incident_id": p(9), "touches": [p(10)], "kind": p(11), "severity": p(12),
                       "detected_at": p(13), "blast_radius": [{"file": p(0)}]}],
        "problems": list(P),
    }
    missing = {"decision_id": p(4), "found": False, "problems": [p(5)]}
    return {"audit_id": p(6), "generated_at": p(7), "ok": False,
            "traced_by": {"actor": p(8), "host": p(9), "purpose": p(10)},
            "registry_log": {"ok": False, "entries": 3, "problem": p(11)},
            "access_log": {"ok": False, "entries": 2, "problem": p(12)},
            "decisions": [entry, copy.deepcopy(entry), missing]}


@pytest.mark.slow
def test_trace_html_runs_no_payload_and_shows_them_as_text(browser, tmp_path):
    html = render_html(hostile_doc())
    out = tmp_path / "trace.html"
    out.write_text(html, encoding="utf-8")
    r = browser.open(out, evaluate="document.body.innerText", screenshot=tmp_path / "trace.png")
    assert not r.script_ran, (payload_ids(r), r.summary())
    assert not r.blocked_requests, r.blocked_requests
    for p in PAYLOADS:
        assert p in r.value, p  # shown, as text
    assert "Content-Security-Policy" in html and "<script" not in html.lower().replace("&lt;script", "")


def test_trace_markdown_keeps_payloads_out_of_markup():
    md = render_md(hostile_doc())
    for line in md.splitlines():
        if line.startswith("|"):
            # every data pipe is escaped: each table row keeps its column count
            cells = line.replace("\\|", "").count("|")
            assert cells in (3, 6, 7), line
    assert "<script" not in md and "<img" not in md and "<svg" not in md and "<iframe" not in md
