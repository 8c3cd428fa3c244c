"""The incident console in a real Airflow, driven by a real (headless Debian) Chromium.

The world is the end-to-end test's (tests/e2e): a real gateway and ``airflow standalone`` (SimpleAuthManager,
all admins), the poisoned nightly retrain, the batch's Asset event, the integrity check that opens the
incident and the playbook that contains, seals, analyses, retrains and reports. Then, in the browser:

* the *Incidents* view (navigation) lists the incident with its state and next deadline;
* the *Incident* tab of the playbook run shows the timeline;
* *Approve* on a retrain waiting for a person resumes it through Airflow's HITL API, and it promotes;
* the report renders with its charts (and prints to PDF);
* hostile feature, source and model names appear as text in every view and in the report, and run nothing;
* with Airflow's auth on (a second API server on the same metadata DB), the endpoints refuse anonymous
  requests and the approve endpoint refuses a viewer.

Screenshots (and the PDF) are saved under $AIIR_TEST_ARTIFACTS (default tests/.artifacts).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from aiir.runtime import free_port, http_json, wait_until
from tests.e2e.test_poisoning_playbook_airflow import _traffic

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
#: the whole story under CI load can take far longer than on an idle machine
TIMEOUT = float(os.environ.get("AIIR_UI_TIMEOUT", "2400"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The e2e test's world (real gateway, ``airflow standalone``), with load-tolerant start timeouts."""
    home = tmp_path_factory.mktemp("ui") / "aiir-home"
    saved = {k: os.environ.get(k) for k in ("AIIR_HOME", "AIIR_GATEWAY_URL")}
    os.environ["AIIR_HOME"] = str(home)
    from aiir import bootstrap, demo, runtime
    from aiir.targets.local import LocalGatewayTarget

    bootstrap.bootstrap()
    services = []
    try:
        gw = runtime.start_gateway(bootstrap.FRAUD_MODEL, timeout=min(TIMEOUT, 600))
        services.append(gw)
        os.environ["AIIR_GATEWAY_URL"] = gw.url
        af = runtime.Airflow(integrity_schedule="none")
        af.start(timeout=min(TIMEOUT, 900))
        services.append(af.service)
        for d in ("data_integrity_check", "incident_data_poisoning", "retrain_from_clean_data"):
            af.wait_for_dag(d, timeout=min(TIMEOUT, 900))
        yield {"home": home, "gw": gw, "af": af, "target": LocalGatewayTarget(bootstrap.FRAUD_MODEL, url=gw.url),
               "files": demo.DemoFiles(home / "data")}
    finally:
        for s in reversed(services):
            s.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def incident(world):
    """The e2e story (tests/e2e): v2 retrained on the poisoned batch serves, the batch's Asset event runs the
    check, the check opens the incident, the playbook runs to the end."""
    from aiir import bootstrap

    af, target = world["af"], world["target"]
    _traffic(world, 2)
    v2 = bootstrap.nightly_retrain([4, 5])
    target.rollback(v2.version, reason="nightly deploy")
    _traffic(world, 3)
    batch = world["files"].fraud_batch(5)
    asset = af.api("GET", "/assets?name_pattern=fraud_training_batches")["assets"][0]
    af.api("POST", "/assets/events", {"asset_id": asset["id"], "extra": {"path": str(batch)}})
    check = wait_until(lambda: next((r for r in af.runs("data_integrity_check")
                                     if r["run_type"] == "asset_triggered"), None),
                       timeout=300, what="an asset-triggered data_integrity_check run", service=af.service)
    check = af.wait_for_run("data_integrity_check", check["dag_run_id"], timeout=TIMEOUT)
    summary = af.xcom("data_integrity_check", check["dag_run_id"], "check")
    incident_id = summary["incident"]["incident_id"]
    run = af.wait_for_run("incident_data_poisoning", incident_id, timeout=TIMEOUT)
    assert run["state"] == "success", run
    return {"check_run": check, "incident_id": incident_id, "run": run,
            "workdir": world["home"] / "incidents" / incident_id}

# Each calls the page's __xss(id) if it ever runs as script.
FEATURE = "amount\"><img src=x onerror=__xss('feature')>"
SOURCE = "<script>__xss('source')</script>feed_x"
MODEL = "fraud<svg onload=__xss('model')>"
CLIENT = "client'><iframe srcdoc=\"<script>parent.__xss('client')</script>\">"
XSS_ID = "INC-20261124-150000-xss-0001"


def _frame(page, title: str):
    """The content frame of the external view ``title`` inside the Airflow UI."""
    page.wait_for_selector(f"iframe[title='{title}']", timeout=60_000)
    frame = page.frame_locator(f"iframe[title='{title}']")
    frame.locator("footer").wait_for(timeout=60_000)
    return frame


def test_incidents_view_lists_the_demo_incident(world, incident, page_factory, artifacts):
    from aiir import console

    af, iid = world["af"], incident["incident_id"]
    expected = console.summary(incident["workdir"])
    assert expected["state"] == "recovered" and expected["next_deadline"], expected
    page, rec = page_factory()
    page.goto(f"{af.url}/plugin/aiir-incidents", wait_until="load")
    frame = _frame(page, "Incidents")
    row = frame.locator(f"tr[data-incident='{iid}']")
    row.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)  # let the countdown tick once
    page.screenshot(path=str(artifacts / "incidents_in_airflow.png"), full_page=True)
    cells = row.locator("td")
    assert cells.nth(0).inner_text().strip().lower() == "recovered"
    assert cells.nth(1).inner_text().strip().lower() == expected["severity"]
    assert cells.nth(3).inner_text().strip() == "fraud-detector"
    deadline = cells.nth(8).inner_text()
    nd = expected["next_deadline"]
    assert nd["regime_name"] in deadline and nd["obligation"] in deadline
    from aiir.report import fmt_time

    assert f"due {fmt_time(nd['due'])}" in deadline
    hours_left = nd["seconds_left"] // 3600
    assert f"in {hours_left}h" in deadline or f"in {hours_left - 1}h" in deadline, deadline  # counting down
    assert "verified" in cells.nth(9).inner_text()
    links = cells.nth(10)
    assert links.locator("a", has_text="report").count() == 1 and links.locator("a", has_text="bundle").count() == 1
    assert links.locator("a[href*='/dags/incident_data_poisoning/runs/']").count() == 1
    # the state filter narrows the list
    frame.locator("select[name=state]").select_option("open")
    frame.locator("button[type=submit]").click()
    frame.locator("p.empty").wait_for(timeout=30_000)
    assert not rec.script_ran and not rec.blocked, (rec.markers, rec.blocked)


def test_incident_tab_on_the_playbook_run_shows_the_timeline(world, incident, page_factory, artifacts):
    af, iid = world["af"], incident["incident_id"]
    page, rec = page_factory()
    page.goto(f"{af.url}/dags/incident_data_poisoning/runs/{iid}/plugin/aiir-incident", wait_until="load")
    frame = _frame(page, "Incident")
    frame.locator("#timeline table").wait_for(timeout=30_000)
    page.screenshot(path=str(artifacts / "incident_tab_on_run.png"), full_page=True)
    timeline = frame.locator("#timeline").inner_text()
    for event in ("detected", "contained", "evidence sealed", "forensics done", "recovered", "reported"):
        assert event in timeline, timeline
    containment = frame.locator("#containment").inner_text()
    assert "last-known-good" in containment and "No client is blocked" in containment
    assert "partner_feed_c" in frame.locator("#findings").inner_text()
    assert "decisions to" in frame.locator("#blast").inner_text()
    assert not rec.script_ran


def test_operator_extra_links_open_the_console(world, incident):
    af, iid = world["af"], incident["incident_id"]
    links = af.api("GET", f"/dags/incident_data_poisoning/dagRuns/{iid}/taskInstances/preserve_evidence/links")
    assert set(links) >= {"Evidence bundle", "Incident console"}, links
    url = links["Evidence bundle"]
    assert url.endswith(f"/aiir/runs/incident_data_poisoning/{iid}/evidence")
    with urllib.request.urlopen(url, timeout=30) as resp:  # follows the redirect to the evidence page
        body = resp.read().decode()
        assert resp.url.endswith(f"/aiir/incidents/{iid}/evidence") and "verified" in body
    check_run = incident["check_run"]["dag_run_id"]
    check_links = af.api("GET", f"/dags/data_integrity_check/dagRuns/{check_run}/taskInstances/check/links")
    with urllib.request.urlopen(check_links["Check findings (findings.json)"], timeout=30) as resp:
        assert json.loads(resp.read())["status"] == "incident"
    report_link = af.api("GET", f"/dags/incident_data_poisoning/dagRuns/{iid}/taskInstances/report/links")
    with urllib.request.urlopen(report_link["Incident report"], timeout=30) as resp:
        assert "Executive summary" in resp.read().decode()


def test_report_renders_with_its_charts(world, incident, page_factory, artifacts):
    af, iid = world["af"], incident["incident_id"]
    page, rec = page_factory(viewport=(1280, 1000))
    page.goto(f"{af.url}/aiir/incidents/{iid}/report", wait_until="load")
    page.screenshot(path=str(artifacts / "report.png"), full_page=True)
    charts = page.eval_on_selector_all("figure", "els => els.map(e => e.id)")
    assert "chart-traffic" in charts and "chart-performance" in charts, charts
    assert any(c.startswith("chart-drift-") for c in charts) and "chart-label-rates" in charts, charts
    # each chart drew something
    for cid in charts:
        assert page.locator(f"#{cid} svg rect").count() > 3, cid
    assert page.locator("#chart-traffic svg line[stroke-dasharray]").count() >= 1  # containment marked
    summary = page.locator(".summary").inner_text()
    for heading in ("What happened", "What was done", "What serves now", "What is left", "Who must be notified"):
        assert heading in summary
    page.emulate_media(media="print")
    page.pdf(path=str(artifacts / "report.pdf"), format="A4")
    assert (artifacts / "report.pdf").stat().st_size > 20_000
    assert not rec.script_ran and not rec.blocked


def test_approve_resumes_the_retrain_through_airflow_hitl(world, incident, page_factory, artifacts):
    af, iid, w = world["af"], incident["incident_id"], incident["workdir"]
    conf = json.loads((w / "eradicate.json").read_text())["retrain_conf"]
    conf["require_approval"] = True
    run_id = f"{iid}-retrain-approval"
    af.trigger("retrain_from_clean_data", conf, run_id=run_id)

    def waiting():
        tis = {t["task_id"]: t for t in af.task_instances("retrain_from_clean_data", run_id)}
        ti = tis.get("await_approval")
        if tis.get("gate", {}).get("state") == "failed":
            raise AssertionError(f"gate failed: {tis}")
        return ti if ti and ti["state"] in ("awaiting_input", "deferred") else None

    wait_until(waiting, timeout=TIMEOUT, interval=2, what="await_approval to wait for a person", service=af.service)
    page, rec = page_factory()
    page.goto(f"{af.url}/dags/retrain_from_clean_data/runs/{run_id}/plugin/aiir-incident", wait_until="load")
    frame = _frame(page, "Incident")
    button = frame.locator("button.approve")
    button.wait_for(timeout=30_000)
    page.screenshot(path=str(artifacts / "approval_waiting.png"), full_page=True)
    button.click()
    frame.locator("p.banner").wait_for(timeout=60_000)
    page.screenshot(path=str(artifacts / "approval_sent.png"), full_page=True)
    assert "Approval sent" in frame.locator("p.banner").inner_text()
    run = af.wait_for_run("retrain_from_clean_data", run_id, timeout=TIMEOUT)
    tis = {t["task_id"]: t["state"] for t in af.task_instances("retrain_from_clean_data", run_id)}
    assert run["state"] == "success" and tis["promote"] == "success", tis
    hitl = af.api("GET", f"/dags/retrain_from_clean_data/dagRuns/{run_id}/taskInstances/await_approval/-1/hitlDetails")
    assert hitl["response_received"] and hitl["chosen_options"] == ["Approve"], hitl
    from aiir import registry

    assert registry.resolve_alias("fraud-detector", "champion") == world["target"].describe().serving_versions[0]
    assert not rec.script_ran


def test_close_as_false_positive_through_the_lifecycle(world, incident, page_factory, artifacts):
    from aiir import console

    if not console.can_close():
        pytest.skip("aiir.lifecycle (the incident lifecycle's close) is not in this checkout")
    af, iid = world["af"], incident["incident_id"]
    page, rec = page_factory()
    page.goto(f"{af.url}/aiir/incidents/{iid}", wait_until="load")
    form = page.locator("form.close")
    form.locator("input[value=false_positive]").check()
    form.locator("input[name=reason]").fill("drill: the batch was a planned red-team test <b>x</b>")
    form.locator("input[name=approve]").check()
    form.locator("button.close").click()
    page.locator("p.banner").wait_for(timeout=60_000)
    page.screenshot(path=str(artifacts / "closed_false_positive.png"), full_page=True)
    assert "Incident closed" in page.locator("p.banner").inner_text()
    assert console.incident_state(incident["workdir"]) == "false_positive"
    assert "false positive" in page.locator("header .badge").first.inner_text().lower()
    assert page.locator("form.close").count() == 0
    assert world["target"].describe().mode == "serving"
    assert not rec.script_ran


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


def test_hostile_names_are_text_in_every_view_and_in_the_report(world, incident, page_factory, artifacts):
    af = world["af"]
    _hostile_incident(world["home"])
    pages = {
        "list": (f"{af.url}/aiir/incidents", (MODEL,)),
        "filtered": (f"{af.url}/aiir/incidents?model={urllib.request.quote(MODEL)}", (MODEL,)),
        "incident": (f"{af.url}/aiir/incidents/{XSS_ID}", (MODEL, FEATURE, SOURCE, CLIENT)),
        "evidence": (f"{af.url}/aiir/incidents/{XSS_ID}/evidence", ()),
        "report": (f"{af.url}/aiir/incidents/{XSS_ID}/report", (MODEL, FEATURE, SOURCE, CLIENT)),
        "in-airflow": (f"{af.url}/plugin/aiir-incidents", ()),
    }
    for name, (url, shown) in pages.items():
        page, rec = page_factory()
        page.goto(url, wait_until="load")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(artifacts / f"xss_{name}.png"), full_page=True)
        text = page.locator("body").inner_text()
        for s in shown:
            assert s in text, (name, s)
        assert not rec.script_ran, (name, rec.markers, rec.dialogs)
        assert page.locator("img[src='x'], iframe[srcdoc], script:not([src])").count() == 0, name
    # the report's charts carry the hostile feature and source as text
    page, rec = page_factory()
    page.goto(f"{af.url}/aiir/incidents/{XSS_ID}/report", wait_until="load")
    assert FEATURE in page.locator("figure[id^='chart-drift-']").first.inner_text()
    assert page.locator("#chart-label-rates title", has_text=SOURCE).count() >= 1
    md = urllib.request.urlopen(f"{af.url}/aiir/incidents/{XSS_ID}/report.md", timeout=30).read().decode()
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert not rec.script_ran


# ---------------------------------------------------------------------------------------- auth on
@pytest.fixture(scope="module")
def secured(world, incident, tmp_path_factory):
    """A second API server on the same metadata DB with SimpleAuthManager's login on (no all-admins)."""
    d = tmp_path_factory.mktemp("auth")
    pw_file = d / "passwords.json"
    pw_file.write_text(json.dumps({"admin": "admin-pw", "viewer": "viewer-pw"}))
    port = free_port()
    env = {**world["af"].env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(pw_file),
           "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}"}
    log = open(d / "api-server.log", "wb")
    proc = subprocess.Popen([str(Path(world["af"].env["PATH"].split(os.pathsep)[0]) / "airflow"), "api-server",
                             "--port", str(port), "--host", "127.0.0.1"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_json("GET", f"{url}/api/v2/monitor/health", timeout=3), timeout=180,
                   what="the secured api-server")
        yield {"url": url, "iid": incident["incident_id"]}
    finally:
        import signal

        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _status(method: str, url: str, *, token: str | None = None, cookie: str | None = None,
            data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if cookie:
        req.add_header("Cookie", f"_token={cookie}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _login(url: str, user: str, password: str) -> str:
    return http_json("POST", f"{url}/auth/token", {"username": user, "password": password})["access_token"]


def test_endpoints_refuse_anonymous_requests_when_auth_is_on(secured, page_factory, artifacts):
    url, iid = secured["url"], secured["iid"]
    paths = ["/aiir/incidents", "/aiir/api/incidents", f"/aiir/incidents/{iid}", f"/aiir/api/incidents/{iid}",
             f"/aiir/incidents/{iid}/report", f"/aiir/incidents/{iid}/report.json", f"/aiir/incidents/{iid}/evidence",
             f"/aiir/incidents/{iid}/check/findings.json", f"/aiir/runs/incident_data_poisoning/{iid}",
             f"/aiir/runs/incident_data_poisoning/{iid}/report"]
    for p in paths:
        assert _status("GET", url + p) == 401, p
        assert _status("GET", url + p, token="not-a-jwt") in (401, 403), p
    assert _status("POST", f"{url}/aiir/incidents/{iid}/approve", data=b"run_id=x&task_id=y",
                   headers={"Content-Type": "application/x-www-form-urlencoded"}) == 401
    viewer = _login(url, "viewer", "viewer-pw")
    for p in paths[:-1]:
        assert _status("GET", url + p, token=viewer) == 200, p
    assert _status("GET", url + "/aiir/incidents", cookie=viewer) == 200  # the UI's session cookie works too
    # a viewer may read but not approve
    assert _status("POST", f"{url}/aiir/incidents/{iid}/approve", token=viewer, data=b"run_id=x&task_id=y",
                   headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": url}) == 403
    assert _status("POST", f"{url}/aiir/incidents/{iid}/close", token=viewer, data=b"as_=resolved&reason=x",
                   headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": url}) == 403
    admin = _login(url, "admin", "admin-pw")
    # an admin's POST from another site is refused (CSRF), before anything is looked up
    assert _status("POST", f"{url}/aiir/incidents/{iid}/approve", token=admin, data=b"run_id=x&task_id=y",
                   headers={"Content-Type": "application/x-www-form-urlencoded",
                            "Origin": "http://evil.example"}) == 403
    page, rec = page_factory()
    resp = page.goto(f"{url}/aiir/incidents", wait_until="load")
    assert resp.status == 401 and iid not in page.content()
    page.screenshot(path=str(artifacts / "anonymous_refused.png"))
