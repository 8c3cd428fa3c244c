"""The incident console in a real Airflow, driven by a real (headless Debian) Chromium.

These tests run inside tests/e2e/test_poisoning_playbook_airflow.py, on its world and its incident (one run of
the whole story serves both; this file is not collected on its own): a real gateway and ``airflow standalone``
(SimpleAuthManager, all admins), the poisoned nightly retrain, the batch's Asset event, the integrity check that
opens the incident and the playbook that contains, seals, analyses, retrains and reports. They need the e2e
module's fixtures ``world`` and ``incident`` and the browser fixtures of tests/ui/conftest.py, which that module
imports. Then, in the browser:

* the *Incidents* view (navigation) lists the incident with its state and next deadline;
* the *Incident* tab of the playbook run shows the timeline;
* *Reject* (with a reason) on a retrain waiting for a person: nothing promoted, who and why on record;
* *Approve* on a retrain waiting for a person resumes it through Airflow's HITL API, and it promotes;
* the report renders with its charts (and prints to PDF);
* *Close incident* as a false positive goes through the lifecycle and restores the target.

Hostile names and Airflow's auth on: tests/ui/test_console_security.py (an API server alone, much lighter).

Screenshots (and the PDF) are saved under $AIIR_TEST_ARTIFACTS (default tests/.artifacts).
"""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

from aiir.runtime import wait_until
from tests.ui.conftest import launch_chromium

#: the whole story under CI load can take far longer than on an idle machine
TIMEOUT = float(os.environ.get("AIIR_UI_TIMEOUT", "2400"))


@pytest.fixture
def chromium():
    """Started and stopped per test here: Playwright's sync API holds this thread's event loop while it runs,
    and the tests after these in the e2e module replay traffic with asyncio.run."""
    yield from launch_chromium()


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
    assert cells.nth(3).inner_text().splitlines()[0].strip() == "fraud-detector"
    # every column fits the Airflow page at 1400 px: nothing hidden behind a horizontal scroll
    assert frame.locator("table#incidents").evaluate("t => t.scrollWidth <= t.ownerDocument.documentElement.clientWidth")
    deadline = cells.nth(5).inner_text()
    nd = expected["next_deadline"]
    assert nd["regime_name"] in deadline and nd["obligation"] in deadline
    from aiir.report import fmt_time

    assert f"due {fmt_time(nd['due'])}" in deadline
    hours_left = nd["seconds_left"] // 3600
    assert f"in {hours_left}h" in deadline or f"in {hours_left - 1}h" in deadline, deadline  # counting down
    assert "verified" in cells.nth(6).inner_text().lower()
    links = cells.nth(7)
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
    links = af.api("GET", f"/dags/incident_data_poisoning/dagRuns/{iid}/taskInstances/preserve_evidence/links")["extra_links"]
    assert set(links) >= {"Evidence bundle", "Incident console"}, links
    url = links["Evidence bundle"]
    assert url.endswith(f"/aiir/runs/incident_data_poisoning/{iid}/evidence")
    with urllib.request.urlopen(url, timeout=30) as resp:  # follows the redirect to the evidence page
        body = resp.read().decode()
        assert resp.url.endswith(f"/aiir/incidents/{iid}/evidence") and "verified" in body
    check_run = incident["check_run"]["dag_run_id"]
    check_links = af.api("GET", f"/dags/data_integrity_check/dagRuns/{check_run}/taskInstances/check/links")["extra_links"]
    with urllib.request.urlopen(check_links["Check findings (findings.json)"], timeout=30) as resp:
        assert json.loads(resp.read())["status"] == "incident"
    report_link = af.api("GET", f"/dags/incident_data_poisoning/dagRuns/{iid}/taskInstances/report/links")["extra_links"]
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


def _retrain_waiting_for_approval(world, incident, run_id):
    af, w = world["af"], incident["workdir"]
    conf = json.loads((w / "eradicate.json").read_text())["retrain_conf"]
    conf["require_approval"] = True
    af.trigger("retrain_from_clean_data", conf, run_id=run_id)

    def waiting():
        tis = {t["task_id"]: t for t in af.task_instances("retrain_from_clean_data", run_id)}
        ti = tis.get("await_approval")
        if tis.get("gate", {}).get("state") == "failed":
            raise AssertionError(f"gate failed: {tis}")
        return ti if ti and ti["state"] in ("awaiting_input", "deferred") else None

    wait_until(waiting, timeout=TIMEOUT, interval=2, what="await_approval to wait for a person", service=af.service)
    af.wait_for_input("retrain_from_clean_data", run_id, "await_approval", timeout=TIMEOUT)  # the pause handed back


def test_reject_with_a_reason_promotes_nothing_and_is_on_record(world, incident, page_factory, artifacts):
    from aiir import registry

    af, iid, w = world["af"], incident["incident_id"], incident["workdir"]
    champion = registry.resolve_alias("fraud-detector", "champion")
    run_id = f"{iid}-retrain-reject"
    _retrain_waiting_for_approval(world, incident, run_id)
    page, rec = page_factory()
    page.goto(f"{af.url}/dags/retrain_from_clean_data/runs/{run_id}/plugin/aiir-incident", wait_until="load")
    frame = _frame(page, "Incident")
    form = frame.locator("form.action", has=frame.locator("button.reject"))
    form.locator("button.reject").wait_for(timeout=30_000)
    form.locator("button.reject").click()  # no reason: refused, nothing sent
    frame.locator("p.banner.bad").wait_for(timeout=60_000)
    assert "needs a reason" in frame.locator("p.banner.bad").inner_text()
    hitl_url = f"/dags/retrain_from_clean_data/dagRuns/{run_id}/taskInstances/await_approval/-1/hitlDetails"
    assert not af.api("GET", hitl_url)["response_received"]
    form = frame.locator("form.action", has=frame.locator("button.reject"))
    form.locator("input[name=reason]").fill("holdout set not yet reviewed <script>alert(1)</script>")
    form.locator("button.reject").click()
    frame.locator("p.banner", has_text="Rejection sent").wait_for(timeout=60_000)
    page.screenshot(path=str(artifacts / "approval_rejected.png"), full_page=True)
    run = af.wait_for_run("retrain_from_clean_data", run_id, timeout=TIMEOUT)
    tis = {t["task_id"]: t["state"] for t in af.task_instances("retrain_from_clean_data", run_id)}
    assert tis["promote"] in ("skipped", "upstream_failed") and tis.get("canary") != "success", (run["state"], tis)
    hitl = af.api("GET", hitl_url)
    assert hitl["chosen_options"] == ["Reject"], hitl
    appr = json.loads((w / "retrain" / "approval.json").read_text())
    assert appr["approved"] is False and appr["reason"].startswith("holdout set not yet reviewed"), appr
    assert appr["by"].startswith("airflow:"), appr
    assert registry.resolve_alias("fraud-detector", "champion") == champion  # nothing promoted
    assert not rec.script_ran


def test_approve_resumes_the_retrain_through_airflow_hitl(world, incident, page_factory, artifacts):
    af, iid = world["af"], incident["incident_id"]
    run_id = f"{iid}-retrain-approval"
    _retrain_waiting_for_approval(world, incident, run_id)
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
