"""The console behind Airflow's auth, and hostile names, on a real API server (no scheduler needed).

``airflow api-server`` alone, with SimpleAuthManager's login ON (``simple_auth_manager_all_admins = False``,
users admin and viewer), over a workspace whose feature, source, model and client names are XSS payloads
(each calls ``__xss(id)`` if it ever runs as script; dialogs are caught too):

* every endpoint refuses an anonymous request (401) and a forged token; a viewer reads; a viewer may not
  approve or close (403); a cross-site POST is refused even for an admin (CSRF);
* signed in (the UI's session cookie or a bearer token), the list, the incident, the evidence page, the
  report and its Markdown show the hostile strings as text and run nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from aiir.runtime import free_port, http_json, wait_until

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
TIMEOUT = float(os.environ.get("AIIR_UI_TIMEOUT", "2400"))

# Each calls the page's __xss(id) if it ever runs as script.
FEATURE = "amount\"><img src=x onerror=__xss('feature')>"
SOURCE = "<script>__xss('source')</script>feed_x"
MODEL = "fraud<svg onload=__xss('model')>"
CLIENT = "client'><iframe srcdoc=\"<script>parent.__xss('client')</script>\">"
XSS_ID = "INC-20261124-150000-xss-0001"


def _hostile_incident(home: Path) -> Path:
    """A workspace whose feature, source, model and client names are XSS payloads, with its report."""
    import pandas as pd

    from aiir.report import render_report

    w = home / "incidents" / XSS_ID
    check = home / "checks" / "xss__run"
    w.mkdir(parents=True, exist_ok=True)
    check.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({FEATURE: [float(i % 50) for i in range(400)], "src": ["feed_a", SOURCE] * 200,
                  "y": [0, 1] * 200}).to_parquet(check / "ref.parquet")
    pd.DataFrame({FEATURE: [float(20 + i % 50) for i in range(400)], "src": [SOURCE] * 400,
                  "y": [0] * 400}).to_parquet(check / "cur.parquet")
    finding = {"kind": "drift", "severity": "high", "title": f"drift in {FEATURE}", "columns": [FEATURE],
               "sources": [SOURCE], "statistic": {"name": "psi", "value": 0.4}, "atlas": ["AML.T0020"],
               "owasp": ["ML02"]}
    (check / "findings.json").write_text(json.dumps({
        "status": "incident", "label_column": "y", "source_column": "src", "suspect_sources": [SOURCE],
        "reference": {"path": str(check / "ref.parquet")}, "current": {"path": str(check / "cur.parquet")},
        "drift": {"drifted": [FEATURE], "table": [{"column": FEATURE, "type": "numerical"}]},
        "findings": [finding]}))
    record = {"incident_id": XSS_ID, "model_name": MODEL, "target_kind": "local", "target_name": MODEL,
              "detected_at": "2026-11-24T15:00:00.000Z", "severity": "critical", "regimes": ["gdpr"],
              "check_dir": str(check), "findings": [finding], "suspect_sources": [SOURCE], "opened_by": SOURCE,
              "kind": "data_poisoning", "containment": "fallback", "dry_run": False, "require_approval": False}
    (w / "incident.json").write_text(json.dumps(record))
    events = [{"event": "detected", "at": "2026-11-24T15:00:00Z", "actor": SOURCE, "details": {"by": MODEL}},
              {"event": "contained", "at": "2026-11-24T15:00:03Z", "actor": CLIENT, "details": {"f": FEATURE}}]
    (w / "timeline.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    contain = {"dry_run": False, "effective_at": "2026-11-24T15:00:03Z", "seconds": 0.1, "target": f"local:{MODEL}",
               "before": {"mode": "serving", "routes": [{"version": MODEL, "share": 1.0}]},
               "after": {"mode": "isolated", "routes": [{"version": "1", "share": 1.0}], "blocked_clients": [CLIENT]}}
    (w / "contain.json").write_text(json.dumps(contain))
    radius = {"total": 10, "clients_affected": 1, "clients": [{"client_id": CLIENT, "decisions": 10}]}
    (w / "forensics.json").write_text(json.dumps({"blast_radius": radius, "localisation": {
        "suspect_sources": [SOURCE], "suspect_batches": [FEATURE], "trigger_pattern": {"description": FEATURE}}}))
    doc = {**{k: record[k] for k in ("incident_id", "severity", "detected_at", "regimes", "findings", "kind")},
           "model": MODEL, "target": f"local:{MODEL}", "timeline": events, "containment": contain,
           "blast_radius": radius, "suspect_sources": [SOURCE], "check_dir": str(check),
           "versions": {"suspect_version": MODEL, "good_version": "1"},
           "triage": {"versions": {"suspect_version": MODEL, "good_version": "1"}, "rows": 5,
                      "suspect": {"precision": 0.4, "recall": 0.3}, "good": {"precision": 0.8, "recall": 0.7}},
           "decisions": [{"ts": f"2026-11-24T15:00:0{i}Z", "model_version": MODEL if i < 3 else "1"}
                         for i in range(6)],
           "sections": [{"title": f"Notes {SOURCE}", "data": {FEATURE: CLIENT}}]}
    render_report(doc, w / "report")
    return w




@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``airflow api-server`` (login on) over a state folder holding the hostile incident."""
    home = tmp_path_factory.mktemp("sec") / "aiir-home"
    saved = os.environ.get("AIIR_HOME")
    os.environ["AIIR_HOME"] = str(home)
    from aiir import runtime

    _hostile_incident(home)
    pw_file = home / "passwords.json"
    pw_file.write_text(json.dumps({"admin": "admin-pw", "viewer": "viewer-pw"}))
    port = free_port()
    af = runtime.Airflow(port=port, integrity_schedule="none")
    env = {**af.env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(pw_file)}
    af.env = env
    af.cli("db", "migrate", timeout=TIMEOUT)
    log = open(home / "api-server.log", "wb")
    proc = subprocess.Popen([str(runtime.VENV_BIN / "airflow"), "api-server", "--port", str(port), "--host",
                             "127.0.0.1"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is None and http_json("GET", f"{url}/api/v2/monitor/health", timeout=5),
                   timeout=min(TIMEOUT, 900), interval=1, what="the api-server with login on")
        yield {"url": url, "home": home}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        if saved is None:
            os.environ.pop("AIIR_HOME", None)
        else:
            os.environ["AIIR_HOME"] = saved


def _status(method: str, url: str, *, token: str | None = None, cookie: str | None = None,
            data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if cookie:
        req.add_header("Cookie", f"_token={cookie}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _login(url: str, user: str, password: str) -> str:
    return http_json("POST", f"{url}/auth/token", {"username": user, "password": password},
                     timeout=60)["access_token"]


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_endpoints_refuse_anonymous_requests_when_auth_is_on(server, page_factory, artifacts):
    url, iid = server["url"], XSS_ID
    paths = ["/aiir/", "/aiir/incidents", "/aiir/api/incidents", f"/aiir/incidents/{iid}", f"/aiir/api/incidents/{iid}",
             f"/aiir/incidents/{iid}/report", f"/aiir/incidents/{iid}/report.json", f"/aiir/incidents/{iid}/report.md",
             f"/aiir/incidents/{iid}/evidence", f"/aiir/incidents/{iid}/check/findings.json",
             f"/aiir/runs/incident_data_poisoning/{iid}", f"/aiir/runs/incident_data_poisoning/{iid}/report"]
    for p in paths:
        assert _status("GET", url + p) == 401, p
        assert _status("GET", url + p, token="not-a-jwt") in (401, 403), p
    for action in ("approve", "close"):
        assert _status("POST", f"{url}/aiir/incidents/{iid}/{action}", data=b"run_id=x&task_id=y&as_=resolved",
                       headers={**FORM, "Origin": url}) == 401, action
    viewer = _login(url, "viewer", "viewer-pw")
    for p in paths:
        assert _status("GET", url + p, token=viewer) in (200, 303), p
    assert _status("GET", url + "/aiir/incidents", cookie=viewer) == 200  # the UI's session cookie works too
    # a viewer reads but may not act
    assert _status("POST", f"{url}/aiir/incidents/{iid}/approve", token=viewer, data=b"dag_id=retrain_from_clean_data"
                   b"&run_id=x&task_id=y", headers={**FORM, "Origin": url}) == 403
    assert _status("POST", f"{url}/aiir/incidents/{iid}/close", token=viewer, data=b"as_=resolved&reason=x",
                   headers={**FORM, "Origin": url}) == 403
    admin = _login(url, "admin", "admin-pw")
    # an admin's POST from another site (or without an Origin) is refused: CSRF
    for origin in ({"Origin": "http://evil.example"}, {}):
        assert _status("POST", f"{url}/aiir/incidents/{iid}/close", token=admin, data=b"as_=resolved&reason=x",
                       headers={**FORM, **origin}) == 403, origin
    page, rec = page_factory()
    resp = page.goto(f"{url}/aiir/incidents", wait_until="load")
    assert resp.status == 401 and XSS_ID not in page.content()
    assert "/auth/login" in page.locator("a", has_text="Sign in").get_attribute("href")
    page.screenshot(path=str(artifacts / "anonymous_refused.png"))


def test_hostile_names_are_text_in_every_view_and_in_the_report(server, page_factory, artifacts):
    url = server["url"]
    token = _login(url, "admin", "admin-pw")
    pages = {
        "list": (f"{url}/aiir/incidents", (MODEL,)),
        "filtered": (f"{url}/aiir/incidents?model={urllib.request.quote(MODEL)}", (MODEL,)),
        "incident": (f"{url}/aiir/incidents/{XSS_ID}", (MODEL, FEATURE, SOURCE, CLIENT)),
        "evidence": (f"{url}/aiir/incidents/{XSS_ID}/evidence", (XSS_ID,)),
        "report": (f"{url}/aiir/incidents/{XSS_ID}/report", (MODEL, FEATURE, SOURCE, CLIENT)),
    }
    for name, (page_url, shown) in pages.items():
        page, rec = page_factory(extra_headers={"Authorization": f"Bearer {token}"})
        resp = page.goto(page_url, wait_until="load")
        assert resp.status == 200, (name, resp.status)
        page.wait_for_timeout(1200)
        page.screenshot(path=str(artifacts / f"xss_{name}.png"), full_page=True)
        text = page.locator("body").inner_text()
        for s in shown:
            assert s in text, (name, s)
        assert not rec.script_ran, (name, rec.markers, rec.dialogs)
        assert page.locator("img[src='x'], iframe[srcdoc], svg[onload]").count() == 0, name
        if name == "filtered":
            assert page.locator(f"tr[data-incident='{XSS_ID}']").count() == 1
    # the report's charts carry the hostile feature and source as text
    page, rec = page_factory(extra_headers={"Authorization": f"Bearer {token}"})
    page.goto(f"{url}/aiir/incidents/{XSS_ID}/report", wait_until="load")
    assert FEATURE in page.locator("figure[id^='chart-drift-']").first.inner_text()
    assert page.locator("#chart-label-rates title", has_text=SOURCE).count() >= 1
    assert page.locator("#chart-traffic title", has_text=MODEL).count() >= 1
    assert not rec.script_ran
    req = urllib.request.Request(f"{url}/aiir/incidents/{XSS_ID}/report.md",
                                 headers={"Authorization": f"Bearer {token}"})
    md = urllib.request.urlopen(req, timeout=60).read().decode()
    assert "<script>" not in md and "&lt;script&gt;" in md
