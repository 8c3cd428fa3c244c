"""Incident report: content, deadlines first, relative links — and no injection through untrusted strings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from aiir.errors import BadInput
from aiir.report import md, render_report

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
EVIL = [
    "<script>alert('x')</script>",
    '"><img src=x onerror=alert(1)>',
    "col|with|pipes",
    "`rm -rf /`",
    "[click](javascript:alert(1))",
    "![img](http://evil.example/x.png)",
    "<!-- comment --> **bold** _it_ # head",
    "line\nbreak\r\n| --- |",
    "&lt;already-escaped&gt;",
]


def incident(tmp_path: Path, evil: str = "") -> dict:
    checks = tmp_path / "checks"
    checks.mkdir(exist_ok=True)
    (checks / "drift_report.html").write_text("<html></html>")
    return {
        "incident_id": "INC-20261124-150000-fraud-1a2b",
        "title": f"Poisoned retrain {evil}",
        "kind": "data_poisoning",
        "model": f"fraud-detector{evil}",
        "target": "local:fraud-detector",
        "severity": "high",
        "status": "contained",
        "detected_at": "2026-11-24T15:00:00.000Z",
        "regimes": ["gdpr", "nis2", "sec_8k", "eu_ai_act"],
        "materiality_at": "2026-11-24T15:00:00Z",
        "timeline": [
            {"event": "contained", "at": "2026-11-24T15:01:10Z", "actor": f"aiir{evil}", "details": {"mode": evil}},
            {"event": "detected", "at": "2026-11-24T15:00:00Z", "actor": "data_integrity_check",
             "details": {"findings": 2}},
        ],
        "findings": [
            {"kind": "label_shift", "severity": "high", "title": f"label rate up {evil}", "columns": [evil, "is_fraud"],
             "sources": [f"partner-{evil}"], "statistic": {"name": "chi2_p", "value": 1e-9}, "threshold": 0.001,
             "atlas": ["AML.T0020"], "owasp": ["ML02"], "mitigations": ["AML.M0007"]},
            {"kind": "drift", "severity": "medium", "title": "amount drift", "columns": ["amount"],
             "sources": [], "statistic": {"name": "psi", "value": 0.31}, "atlas": ["AML.T0059"], "owasp": ["ML08"]},
        ],
        "blast_radius": {"total": 1234, "window": {"since": "2026-11-23T02:00:00Z", "until": "2026-11-24T15:01:10Z"},
                         "clients_affected": 2, "predicted_positive": 10, "predicted_negative": 1224,
                         "likely_missed_positives": 17, "pattern": {"description": f"amount > 900 {evil}"},
                         "clients": [{"client_id": f"client-{evil}", "decisions": 1000, "predicted_positive": 8,
                                      "predicted_negative": 992},
                                     {"client_id": "bank-b", "decisions": 234}]},
        "poison_localisation": {"suspect_version": "2", "good_version": "1", "suspect_sources": [evil or "p"],
                                "suspects": [{"id": f"source={evil}", "view": "source", "file": f"{evil}.parquet",
                                              "source": evil, "rows": 5000, "signals": ["label_flip"],
                                              "label_flip_share": 0.12, "quarantined": True}]},
        "recovery": {"new_version": "3", "replaced_version": "2", "promoted_at": "2026-11-24T16:00:00Z",
                     "gate": {"passed": True, "checks": [{"name": "holdout_f1", "candidate": 0.81, "baseline": 0.8,
                                                          "threshold": 0.78, "passed": True, "rule": "f1 >= b - .02"}]}},
        "evidence": {"bundle": str(tmp_path / "evidence" / "INC-1"), "files": 12,
                     "manifest_sha256": "ab" * 32},
        "atlas": [{"id": "AML.T0020", "name": "WRONG NAME", "url": "javascript:alert(1)"},
                  {"id": "AML.T9999", "name": evil, "url": "javascript:alert(1)"}],
        "attachments": [{"title": f"drift report {evil}", "path": str(checks / "drift_report.html")},
                        {"title": "GX validation", "path": str(checks / "gx_validation.json")},
                        {"title": "ticket", "url": "javascript:alert(1)"},
                        {"title": "runbook", "url": "https://example.org/runbook"}],
    }


class Tags(HTMLParser):
    """Start tags, text, and every table as rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def cell(t: Tags, header: str, column: str, row: int = 0) -> str:
    """Text of ``column`` in data row ``row`` of the first table whose header has ``header``."""
    for table in t.tables:
        if table and header in table[0]:
            return table[1 + row][table[0].index(column)]
    raise AssertionError(f"no table with a {header!r} column")


SAFE_TAGS = {"html", "head", "meta", "title", "style", "body", "main", "header", "div", "span", "h1", "h2", "h3",
             "dl", "dt", "dd", "p", "table", "thead", "tbody", "tr", "th", "td", "code", "ul", "li", "a", "br",
             "footer", "strong", "em", "section", "figure", "figcaption",
             # inline SVG charts (aiir.report_charts)
             "svg", "g", "rect", "line", "text", "path", "polyline"}


def assert_inert(html: str) -> Tags:
    t = Tags()
    t.feed(html)
    for tag, attrs in t.tags:
        assert tag in SAFE_TAGS, f"unexpected <{tag}> in output"
        assert not any(a.startswith("on") for a in attrs), f"event handler on <{tag}>: {attrs}"
        if tag == "a":
            href = attrs.get("href") or ""
            assert href.startswith(("https://atlas.mitre.org/", "https://owasp.org/", "https://example.org/", "../")), href
    return t


def test_report_files_and_content(tmp_path):
    out = tmp_path / "report"
    paths = render_report(incident(tmp_path), out, now=NOW)
    assert set(paths) == {"html", "json", "md"} and all(p.exists() for p in paths.values())
    doc = json.loads(paths["json"].read_text())
    assert doc["incident_id"] == "INC-20261124-150000-fraud-1a2b" and doc["status"] == "contained"
    dues = [d["due"] for d in doc["deadlines"] if d["due"]]
    assert dues == sorted(dues) and dues[0] == "2026-11-25T15:00:00Z"  # NIS2 early warning
    assert doc["next_deadline"]["regime"] == "nis2"
    sec = next(d for d in doc["deadlines"] if d["regime"] == "sec_8k")
    assert sec["due"] == "2026-12-01T22:30:00Z"  # over Thanksgiving
    # trusted taxonomy names/URLs win; unknown ids are kept without a link
    atlas = {e["id"]: e for e in doc["atlas"]}
    assert atlas["AML.T0020"]["name"] == "Poison Training Data"
    assert atlas["AML.T0020"]["url"] == "https://atlas.mitre.org/techniques/AML.T0020"
    assert atlas["AML.T9999"]["url"] is None and not atlas["AML.T9999"]["known"]
    assert [e["id"] for e in doc["mitigations"]] == ["AML.M0007"]
    assert [e["id"] for e in doc["owasp"]] == ["ML02", "ML08"]
    att = {a["title"]: a for a in doc["attachments"]}
    assert att["drift report "]["href"] == "../checks/drift_report.html" and att["drift report "]["exists"]
    assert att["GX validation"]["exists"] is False
    assert att["ticket"]["href"] is None and att["runbook"]["href"] == "https://example.org/runbook"
    assert [e["event"] for e in doc["timeline"]] == ["detected", "contained"]

    html = paths["html"].read_text()
    assert "Content-Security-Policy" in html and "<script" not in html.lower()
    # 3 a.m. order: status and next deadline in the header, then the clocks, then the rest
    i_status, i_next = html.index("contained</span>"), html.index("Next deadline")
    i_clocks, i_timeline = html.index("<h2>Regulatory clocks"), html.index("<h2>Timeline")
    assert i_status < i_next < i_clocks < i_timeline < html.index("<h2>Findings")
    assert "2026-12-01 22:30 UTC" in html and "in 12h 00m" in html
    assert_inert(html)
    text = paths["md"].read_text()
    assert text.index("## Regulatory clocks") < text.index("## Timeline")
    assert "[drift report ](<../checks/drift_report.html>)" in text


@pytest.mark.parametrize("evil", EVIL)
def test_untrusted_strings_are_escaped_in_html(tmp_path, evil):
    paths = render_report(incident(tmp_path, evil), tmp_path / "r", now=NOW)
    html = paths["html"].read_text()
    t = assert_inert(html)
    text = "".join(t.text)
    # the hostile string is shown verbatim, as text
    assert evil in text or evil.replace("\r\n", "\n") in text
    assert cell(t, "columns", "columns") == f"{evil}, is_fraud".replace("\r\n", "\n")
    assert cell(t, "client", "client") == f"client-{evil}".replace("\r\n", "\n")
    assert "<img" not in html and "<script" not in html.lower() and "<!-- comment" not in html


@pytest.mark.parametrize("evil", EVIL)
def test_untrusted_strings_are_escaped_in_markdown(tmp_path, evil):
    from markdown_it import MarkdownIt

    paths = render_report(incident(tmp_path, evil), tmp_path / "r", now=NOW)
    source = paths["md"].read_text()
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(source)
    t = assert_inert(rendered.replace("<hr />", ""))
    # the hostile strings stayed inside their table cells, whole and literal
    folded = evil.replace("\r", " ").replace("\n", " ")
    assert cell(t, "columns", "columns") == f"{folded}, is_fraud", source[:3000]
    assert cell(t, "client", "client") == f"client-{folded}"
    assert cell(t, "actor", "actor", row=1) == f"aiir{folded}"
    for table in t.tables:
        assert len({len(r) for r in table}) == 1, f"a row has a different number of cells: {table}"
    for bad in ("<script", "<img", "javascript:alert(1)\"", "<a href=\"javascript"):
        assert bad not in rendered


def test_md_escape_unit():
    assert md("a|b") == "a\\|b"
    assert md("<b>&") == "&lt;b&gt;&amp;"
    assert md("[x](javascript:y)") == "\\[x\\](javascript:y)"
    assert md("two\nlines") == "two lines"
    assert md("- item", lead=True) == "\\- item" and md("1. item", lead=True) == "1\\. item"
    assert md(0.5) == "0.5" and md(1234567) == "1,234,567"


def test_minimal_incident_and_bad_input(tmp_path):
    paths = render_report({"incident_id": "INC-min"}, tmp_path / "r", now=NOW)
    html = paths["html"].read_text()
    assert "No regulatory regime selected" in html and "INC-min" in html
    with pytest.raises(BadInput):
        render_report({"title": "no id"}, tmp_path / "r")
    with pytest.raises(BadInput, match="regime"):
        render_report({"incident_id": "INC-x", "regimes": ["ccpa"], "detected_at": "2026-11-24T15:00:00Z"},
                      tmp_path / "r")


def test_overdue_deadlines_are_called_out(tmp_path):
    inc = {"incident_id": "INC-late", "detected_at": "2026-11-20T00:00:00Z", "regimes": ["gdpr"], "status": "open"}
    paths = render_report(inc, tmp_path / "r", now=NOW)
    html = paths["html"].read_text()
    assert "OVERDUE" in html and "overdue by 2d 3h" in html
    assert "OVERDUE" in paths["md"].read_text()
    assert json.loads(paths["json"].read_text())["overdue"][0]["regime"] == "gdpr"


def test_playbook_shaped_document(tmp_path):
    """The document aiir.playbook.report() builds (taxonomy entries as dicts, target 'kind:name')."""
    from aiir.knowledge import taxonomy

    doc = {"incident_id": "INC-pb", "kind": "data_poisoning", "model": "fraud-detector",
           "target": "local:fraud-detector", "severity": "critical", "status": "recovered",
           "detected_at": "2026-11-24T15:00:00.000Z", "dry_run": True, "regimes": ["gdpr", "nis2", "eu_ai_act"],
           "timeline": [{"event": "detected", "at": "2026-11-24T15:00:00.000Z", "actor": "x", "details": {}}],
           "findings": [], "atlas": [taxonomy.ATLAS_TECHNIQUES["AML.T0020"].__dict__],
           "mitigations": [taxonomy.ATLAS_MITIGATIONS["AML.M0014"].__dict__],
           "owasp": [taxonomy.OWASP_ML_TOP10["ML02"].__dict__], "versions": {"suspect_version": "2"},
           "triage": None, "containment": {"mode": "fallback"}, "evidence": None, "poison_localisation": None,
           "blast_radius": None, "recovery": None, "attachments": []}
    paths = render_report(doc, tmp_path / "r", now=NOW)
    r = json.loads(paths["json"].read_text())
    assert [e["name"] for e in r["atlas"]] == ["Poison Training Data"]
    assert r["status"] == "recovered" and r["dry_run"] is True


def test_redesigned_playbook_document(tmp_path):
    """The redesigned playbook's document: state as the lifecycle's record, section names, deadlines with
    not-applicable regimes, extra keys (approval), a recovery that did not promote."""
    doc = {"incident_id": "INC-new", "kind": "data_poisoning", "model": "fraud-detector",
           "target": "local:fraud-detector", "severity": "high", "detected_at": "2026-11-24T15:00:00Z",
           "playbook": {"kind": "data_poisoning", "title": "Data poisoning", "dag_id": "incident_data_poisoning"},
           "sections": ["summary", "deadlines", "timeline"],
           "state": {"incident_id": "INC-new", "state": "eradicated", "by": "aiir-playbook"},
           "status": "eradicated",
           "deadlines": [
               {"regime": "gdpr", "regime_name": "GDPR — Regulation (EU) 2016/679", "obligation": "Notify the DPA",
                "due": "2026-11-27T15:00:00Z", "status": "not_applicable", "seconds_left": 1,
                "applies": "no personal data affected (conf.personal_data = no)"},
               {"regime": "nis2", "regime_name": "NIS2 — Directive (EU) 2022/2555", "obligation": "Early warning",
                "due": "2026-11-25T15:00:00Z", "status": "open", "seconds_left": 999999}],
           "recovery": {"promoted": False, "reason": "promotion rejected by alice at 2026-11-24T16:00Z: not now"},
           "approval": {"approved": False, "by": "alice", "reason": "not now"}}
    paths = render_report(doc, tmp_path / "r", now=NOW)
    r = json.loads(paths["json"].read_text())
    assert r["status"] == "eradicated" and r["playbook"] == "Data poisoning"
    assert r["next_deadline"]["regime"] == "nis2" and r["next_deadline"]["seconds_left"] == 12 * 3600  # as of NOW
    assert [sec["title"] for sec in r["sections"]] == ["Approval"]  # names are not sections; extra keys are
    notify = next(s for s in r["summary"] if s["heading"].startswith("Who"))["lines"]
    assert notify[0].startswith("In 12h 00m — NIS2: Early warning")
    assert any(line.startswith("Not applicable — GDPR") for line in notify)
    left = next(s for s in r["summary"] if s["heading"] == "What is left")["lines"]
    assert any("promotion rejected by alice" in line for line in left)
    html = paths["html"].read_text()
    assert "<h2>Approval</h2>" in html and "Section 1" not in html
    assert_inert(html)
    assert "## Approval" in paths["md"].read_text()


def test_executive_summary_and_charts_come_first(tmp_path):
    paths = render_report(incident(tmp_path), tmp_path / "r", now=NOW)
    html = paths["html"].read_text()
    assert html.index("<h2>Executive summary") < html.index("<h2>Regulatory clocks") < html.index("<h2>Timeline")
    r = json.loads(paths["json"].read_text())
    heads = [s["heading"] for s in r["summary"]]
    assert heads == ["What happened", "What was done", "What serves now", "What is left",
                     "Who must be notified, by when"]
    assert "@media print" in html and "@page" in html
    text = paths["md"].read_text()
    assert text.index("## Executive summary") < text.index("## Regulatory clocks")
    # containment in words, not a dict dump
    assert "{" not in "".join(r["containment"]) and r["containment"]
