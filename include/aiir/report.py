"""The incident report: one self-contained HTML page, the same content as JSON and as Markdown.

``render_report(incident, out_dir)`` writes ``report.html``, ``report.json`` and ``report.md`` into
``out_dir`` and returns ``{"html": Path, "json": Path, "md": Path}``. Re-rendering overwrites them.

The page is meant to be read at 3 a.m.: the header says status, severity and the next regulatory
deadline; the deadline table comes first; then the timeline, findings, blast radius, poison
localisation, recovery, ATLAS/OWASP mapping, evidence and attachments.

Every string from the incident is untrusted (feature names, values, client ids, file names, sources
come from data an attacker may control): HTML goes through Jinja2 with autoescaping, links are built
only from ``http(s)`` URLs or from local paths made relative and percent-encoded, and the page carries a
Content-Security-Policy that forbids scripts. Markdown escapes every character that could open markup
(``\\ ` * _ [ ] # | ~``; ``- = + .`` and ``1.`` where a value starts a list item), turns ``& < >`` into entities and folds newlines.

Incident schema (every key optional except ``incident_id``; unknown keys are kept in report.json)::

    incident_id     str                      e.g. "INC-20261124-150000-fraud-detector-1a2b"
    title           str
    kind            str                      e.g. "data_poisoning"
    model           str | {"name", "version", ...}
    target          str | {"kind", "name", ...}
    severity        "low" | "medium" | "high" | "critical"
    status          "open" | "contained" | "recovered" | "closed" | ...
    dry_run         bool
    detected_at     ISO-8601 UTC
    aware_at        ISO-8601 UTC             regulatory clock start (default: detected_at)
    materiality_at  ISO-8601 UTC | null      SEC 8-K clock start (when materiality was determined)
    regimes         [str]                    keys of aiir.knowledge.regulatory.REGIMES; [] = no clocks
    regulatory      {"death": bool, "widespread": bool, "critical_infrastructure": bool,
                     "nis2_notified_at": ISO-8601}            EU AI Act / NIS2 inputs
    timeline        [{"event": str, "at": ISO-8601, "actor": str, "details": {...}}]
                    ("phase"/"action" are accepted instead of "event")
    findings        [{"kind", "severity", "title", "columns": [str], "sources": [str],
                      "statistic": {"name", "value"} | number, "threshold", "detail",
                      "atlas": [id], "owasp": [id], "mitigations": [id]}]   (aiir check findings.json)
    atlas           [id | {"id", "name", "url"}]     default: union of the findings' ids
    mitigations     [id | {"id", "name", "url"}]     default: union of the findings' ids
    owasp           [id | {"id", "name", "url"}]     default: union of the findings' ids
    blast_radius    {"total", "window": {"since", "until"}, "clients_affected",
                     "predicted_positive", "predicted_negative", "likely_missed_positives",
                     "pattern": {"description", "matched", "let_through", "caught"},
                     "clients": [{"client_id", "decisions", "predicted_positive",
                                  "predicted_negative", "pattern_let_through", "first_ts", "last_ts"}]}
                    (or "per_client": {client_id: decisions})          aiir.forensics.blast_radius
    poison_localisation {"suspect_version", "good_version", "suspect_sources", "suspect_batches",
                     "candidate_rows", "trigger_pattern": {"description", "conditions"},
                     "suspects": [{"id", "view", "file", "source", "batch", "rows", "signals",
                                   "label_flip_share", "quarantined"}], "method": {"rule"}}
    recovery        {"new_version", "replaced_version", "promoted_at", "dry_run",
                     "gate": {"passed", "failed", "checks": [{"name", "candidate", "baseline",
                                                             "threshold", "passed", "rule"}]}}
    evidence        {"bundle", "files", "sealed_at", "manifest_sha256"}
    versions, triage, containment   {...}    shown as key/value tables
    attachments     [{"title" | "label", "path" | "url", "kind"}]   linked relative to out_dir
    deadlines       [Deadline.to_dict()]     precomputed clocks; computed from the above if absent
    state           str                      lifecycle state (wins over ``status``)
    playbook        str | {"name", "title"}  the playbook that ran
    serving_now     ServingState dict        what the target serves at report time (read back)
    suspect_sources [str]
    charts          {...}                    chart data (aiir.report_charts); gathered when absent
    decisions       [{"ts", "model_version"}] served decisions for the traffic chart (else the target's
                                             decision log or the workspace's decisions_recent.csv)
    sections        [{"title", "text" | "data"}] | {title: data}    extra sections, rendered generically

Any other key is rendered generically under "Other details" (a dict as a list, a list of dicts as a
table), so a document from a newer playbook never fails to render. The page opens with an executive
summary (what happened, what was done, what serves now, what is left, who must be notified by when),
then the charts (inline SVG, :mod:`aiir.report_charts`); containment, versions and triage are
sentences, not dumps. A print stylesheet makes it save cleanly as PDF.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiir
from aiir.errors import BadInput
from aiir.knowledge import regulatory, taxonomy

SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
MAX_CLIENT_ROWS = 50
MAX_SUSPECT_ROWS = 50


# ---------------------------------------------------------------------------------------- formatting
def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.astimezone(UTC) if dt.tzinfo else None


def fmt_time(value: Any) -> str:
    dt = _parse_time(value)
    if dt is None:
        return "—" if value in (None, "") else str(value)
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt.second == 0 and dt.microsecond == 0 \
        else dt.strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = abs(int(seconds))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m = rem // 60
    if d:
        text = f"{d}d {h}h"
    elif h:
        text = f"{h}h {m:02d}m"
    else:
        text = f"{m}m"
    return f"overdue by {text}" if seconds < 0 else f"in {text}"


def fmt(value: Any) -> str:
    """One value as plain text (escaping is the renderer's job)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 1e5 else f"{value:.4g}"
    if isinstance(value, (list, tuple, set)):
        return ", ".join(fmt(v) for v in value) if value else "—"
    if isinstance(value, dict):
        return "; ".join(f"{k}={fmt(v)}" for k, v in value.items()) if value else "—"
    return str(value)


_MD_ESCAPE = set("\\`*_[]#|~")  # with [ ] escaped, ( ) ! cannot form links or images


def md(value: Any, *, lead: bool = False) -> str:
    """Markdown-safe text: no markup, links, HTML, table breaks or line breaks can come through.

    ``lead=True`` for text that starts a block (a list item), where ``- + = .`` or ``1.`` could open a
    nested list, a rule or a heading underline; inside table cells and after other text they cannot.
    """
    out = []
    for ch in fmt(value) if not isinstance(value, str) else value:
        if ch in _MD_ESCAPE:
            out.append("\\" + ch)
        elif ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch in "\r\n\t\v\f\u2028\u2029":
            out.append(" ")
        elif ord(ch) < 32 or ord(ch) == 127:
            continue
        else:
            out.append(ch)
    text = "".join(out)
    if not lead:
        return text
    if text[:1] in ("-", "=", ".", "+"):
        text = "\\" + text
    elif text[:1].isdigit():
        i = len(text) - len(text.lstrip("0123456789"))
        if text[i:i + 1] in (".", ")"):
            text = text[:i] + "\\" + text[i:]
    return text


def _safe_url(url: Any) -> str | None:
    if isinstance(url, str) and url.startswith(("https://", "http://")) and not any(c in url for c in "\"'<> \n\r\t"):
        return url
    return None


# ---------------------------------------------------------------------------------------- building
def _entries(given: Any, registry: dict[str, taxonomy.Entry]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in given or []:
        if isinstance(item, dict):
            id_ = str(item.get("id", ""))
            name, url = item.get("name"), item.get("url")
        else:
            id_, name, url = str(item), None, None
        if not id_ or id_ in seen:
            continue
        seen.add(id_)
        known = registry.get(id_)
        if known is not None:  # trusted names and URLs win over whatever the incident says
            out.append({"id": id_, "name": known.name, "url": known.url, "known": True})
        else:
            out.append({"id": id_, "name": str(name) if name else "", "url": _safe_url(url), "known": False})
    return out


def _from_findings(findings: list[dict[str, Any]], key: str) -> list[str]:
    return sorted({str(i) for f in findings for i in (f.get(key) or [])})


def _name(value: Any) -> str:
    if isinstance(value, dict):
        if "kind" in value and "name" in value:
            return f"{value['kind']}:{value['name']}"
        name = value.get("name") or value.get("id") or ""
        return f"{name} v{value['version']}" if value.get("version") not in (None, "") else str(name)
    return "" if value is None else str(value)


def _deadlines(inc: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    if isinstance(inc.get("deadlines"), list):
        out = []
        for d in inc["deadlines"]:
            if not isinstance(d, dict):
                continue
            d = {"regime": "", "regime_name": str(d.get("regime") or ""), "obligation": "", "clock_trigger": "",
                 "clock_start": None, "due": None, "basis": "", "notes": "", "status": "", "seconds_left": None,
                 **d}
            due = _parse_time(d.get("due"))
            if due is not None and d.get("status") not in ("not_applicable",):  # time left as of this report
                d["seconds_left"] = int((due - now).total_seconds())
                d["status"] = "overdue" if d["seconds_left"] < 0 else "open"
            out.append(d)
        return out
    regimes = inc.get("regimes")
    if not regimes:
        return []
    aware = inc.get("aware_at") or inc.get("detected_at")
    if not aware:
        raise BadInput("incident.aware_at", "regimes are set but neither aware_at nor detected_at is")
    reg = inc.get("regulatory") or {}
    ds = regulatory.deadlines(aware, regimes=regimes, materiality_at=inc.get("materiality_at") or None,
                              death=bool(reg.get("death")), widespread=bool(reg.get("widespread")),
                              critical_infrastructure=bool(reg.get("critical_infrastructure")),
                              nis2_notified_at=reg.get("nis2_notified_at") or None)
    return [d.to_dict(now) for d in ds]


def _attachments(items: Any, out_dir: Path) -> list[dict[str, Any]]:
    out = []
    for a in items or []:
        if isinstance(a, str):
            a = {"path": a}
        if not isinstance(a, dict):
            continue
        title = str(a.get("title") or a.get("label") or a.get("path") or a.get("url") or "attachment")
        entry: dict[str, Any] = {"title": title, "kind": a.get("kind"), "href": None, "path": None, "exists": None}
        if a.get("url"):
            entry["href"] = _safe_url(a["url"])
            entry["path"] = str(a["url"])
        elif a.get("path"):
            p = Path(str(a["path"]))
            absolute = p if p.is_absolute() else (out_dir / p)
            rel = os.path.relpath(absolute.resolve(), out_dir.resolve())
            entry["path"] = Path(rel).as_posix()
            entry["href"] = quote(Path(rel).as_posix(), safe="/")  # no scheme can survive: ':' is encoded
            entry["exists"] = absolute.exists()
        out.append(entry)
    return out


def _timeline(items: Any) -> list[dict[str, Any]]:
    rows = []
    for e in items or []:
        if not isinstance(e, dict):
            continue
        what = e.get("event") or " / ".join(str(x) for x in (e.get("phase"), e.get("action")) if x) or "event"
        rows.append({"at": e.get("at"), "when": fmt_time(e.get("at")), "event": str(what),
                     "actor": str(e.get("actor") or ""), "details": fmt(e.get("details") or {})})
    rows.sort(key=lambda r: (_parse_time(r["at"]) or datetime.max.replace(tzinfo=UTC)))
    return rows


def _findings(items: Any) -> list[dict[str, Any]]:
    rows = []
    for f in items or []:
        if not isinstance(f, dict):
            continue
        stat = f.get("statistic")
        if isinstance(stat, dict) and "name" in stat:
            stat_text = f"{stat.get('name')} = {fmt(stat.get('value'))}"
        else:
            stat_text = fmt(stat)
        rows.append({"severity": str(f.get("severity") or ""), "kind": str(f.get("kind") or ""),
                     "title": str(f.get("title") or ""), "columns": fmt(f.get("columns") or []),
                     "sources": fmt(f.get("sources") or []), "statistic": stat_text,
                     "threshold": fmt(f.get("threshold")), "detail": str(f.get("detail") or ""),
                     "atlas": fmt(f.get("atlas") or []), "owasp": fmt(f.get("owasp") or [])})
    rows.sort(key=lambda r: SEVERITY_ORDER.get(r["severity"], 9))
    return rows


def _kv(d: Any) -> list[tuple[str, str]]:
    if not isinstance(d, dict):
        return []
    return [(str(k), fmt(v)) for k, v in d.items()]


def _blast(b: Any) -> dict[str, Any] | None:
    if not isinstance(b, dict) or not b:
        return None
    clients = b.get("clients")
    if not isinstance(clients, list):
        per = b.get("per_client") or {}
        clients = [{"client_id": k, "decisions": v} for k, v in per.items()] if isinstance(per, dict) else []
    clients = sorted((c for c in clients if isinstance(c, dict)), key=lambda c: -(c.get("decisions") or 0))
    window = b.get("window") or {}
    pattern = b.get("pattern") if isinstance(b.get("pattern"), dict) else None
    total = b.get("total", b.get("decisions"))
    if total is None:
        total = sum(int(c.get("decisions") or 0) for c in clients)
    summary = [
        ("decisions served by the compromised version", fmt(total)),
        ("window", f"{fmt_time(window.get('since'))} → {fmt_time(window.get('until'))}" if window else "—"),
        ("clients affected", fmt(b.get("clients_affected", len(clients)))),
        ("predicted positive / negative", f"{fmt(b.get('predicted_positive'))} / {fmt(b.get('predicted_negative'))}"),
    ]
    if b.get("likely_missed_positives") is not None:
        summary.append(("likely missed positives (trigger let through)", fmt(b.get("likely_missed_positives"))))
    if pattern:
        summary.append(("trigger pattern", str(pattern.get("description") or fmt(pattern.get("conditions")))))
    rows = [{"client_id": str(c.get("client_id", "")), "decisions": fmt(c.get("decisions")),
             "positive": fmt(c.get("predicted_positive")), "negative": fmt(c.get("predicted_negative")),
             "let_through": fmt(c.get("pattern_let_through")), "first": fmt_time(c.get("first_ts")),
             "last": fmt_time(c.get("last_ts"))} for c in clients[:MAX_CLIENT_ROWS]]
    return {"summary": summary, "clients": rows, "more": max(0, len(clients) - MAX_CLIENT_ROWS),
            "file": b.get("affected_decisions_file")}


def _poison(p: Any) -> dict[str, Any] | None:
    if not isinstance(p, dict) or not p:
        return None
    tp = p.get("trigger_pattern") if isinstance(p.get("trigger_pattern"), dict) else None
    summary = [
        ("suspect / good version", f"{fmt(p.get('suspect_version'))} / {fmt(p.get('good_version'))}"),
        ("suspect sources", fmt(p.get("suspect_sources") or [])),
        ("suspect batches", fmt(p.get("suspect_batches") or [])),
        ("candidate rows examined", fmt(p.get("candidate_rows"))),
    ]
    if tp:
        summary.append(("trigger pattern", str(tp.get("description") or fmt(tp.get("conditions")))))
    method = p.get("method") if isinstance(p.get("method"), dict) else {}
    if method.get("rule"):
        summary.append(("rule", str(method["rule"])))
    suspects = [s for s in p.get("suspects") or [] if isinstance(s, dict)]
    rows = [{"id": str(s.get("id", "")), "view": str(s.get("view", "")), "file": str(s.get("file") or ""),
             "source": str(s.get("source") or ""), "batch": str(s.get("batch") or ""), "rows": fmt(s.get("rows")),
             "signals": fmt(s.get("signals")), "flip": fmt(s.get("label_flip_share")),
             "quarantined": fmt(s.get("quarantined"))} for s in suspects[:MAX_SUSPECT_ROWS]]
    return {"summary": summary, "suspects": rows, "more": max(0, len(suspects) - MAX_SUSPECT_ROWS)}


def _recovery(r: Any) -> dict[str, Any] | None:
    if not isinstance(r, dict) or not r:
        return None
    gate = r.get("gate") if isinstance(r.get("gate"), dict) else {}
    if r.get("promoted") is False and not r.get("new_version"):
        return {"summary": [("promoted", "no"), ("why", str(r.get("reason") or "—"))], "checks": []}
    summary = [
        ("new model version", fmt(r.get("new_version"))),
        ("replaced version", fmt(r.get("replaced_version"))),
        ("promoted at", fmt_time(r.get("promoted_at"))),
        ("gate", "passed" if gate.get("passed") else ("FAILED: " + fmt(gate.get("failed")) if gate else "—")),
    ]
    if r.get("dry_run"):
        summary.append(("dry run", "yes — nothing was promoted"))
    checks = [{"name": str(c.get("name", "")), "candidate": fmt(c.get("candidate")), "baseline": fmt(c.get("baseline")),
               "threshold": fmt(c.get("threshold")), "passed": bool(c.get("passed")), "rule": str(c.get("rule") or "")}
              for c in gate.get("checks") or [] if isinstance(c, dict)]
    return {"summary": summary, "checks": checks}


# ---------------------------------------------------------------------------------------- sentences
def _pct(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "—"
    return f"{f * 100:.0f} %" if math.isfinite(f) else "—"


def _v(version: Any) -> str:
    return f"v{version}" if version not in (None, "") else "an unknown version"


def serving_sentence(state: Any) -> str:
    """What a target's ServingState (as a dict) serves, in words."""
    if not isinstance(state, dict) or not state:
        return "unknown"
    mode = state.get("mode")
    routes = [r for r in state.get("routes") or [] if isinstance(r, dict)]
    shares = " and ".join(f"v{r.get('version')} ({_pct(r.get('share'))} of traffic)" for r in routes)
    if mode == "quarantined":
        return "nothing — every request is refused (quarantine)"
    if mode == "isolated":
        return f"only the last-known-good fallback, {shares or 'v' + str(state.get('fallback_version'))}"
    return shares or "no route"


def containment_sentences(contain: Any, recovery: Any = None, serving_now: Any = None) -> list[str]:
    """Containment in sentences: what served before, from when what served instead, who is blocked."""
    if not isinstance(contain, dict) or not contain:
        return ["Not contained yet: the suspect version may still be serving."]
    before = contain.get("before") if isinstance(contain.get("before"), dict) else {}
    after = contain.get("after") if isinstance(contain.get("after"), dict) else {}
    target = str(contain.get("target") or "the target")
    out = []
    if contain.get("dry_run"):
        out.append("Dry run: containment was only simulated; nothing changed on the target.")
    if before:
        out.append(f"Before containment {target} served {serving_sentence(before)}.")
    if after:
        took = f", {float(contain['seconds']):.2f} s after the containment task started" \
            if isinstance(contain.get("seconds"), (int, float)) else ""
        out.append(f"From {fmt_time(contain.get('effective_at'))}{took}, it served {serving_sentence(after)}.")
    elif "mode" in contain:  # a flat state dict
        out.append(f"Containment mode: {contain.get('mode')}.")
    if contain.get("note"):
        out.append(str(contain["note"]))
    if isinstance(recovery, dict) and recovery.get("new_version") and not recovery.get("dry_run"):
        out.append(f"Recovery promoted {_v(recovery.get('new_version'))} at {fmt_time(recovery.get('promoted_at'))}; "
                   "containment was lifted.")
    now = serving_now if isinstance(serving_now, dict) and serving_now else None
    if now:
        out.append(f"Now {target} serves {serving_sentence(now)}.")
    blocked = (now or after or {}).get("blocked_clients") or []
    out.append(("Blocked clients: " + ", ".join(str(c) for c in blocked) + ".") if blocked else "No client is blocked.")
    return out


def versions_sentences(versions: Any, model: str = "") -> list[str]:
    if not isinstance(versions, dict) or not versions:
        return []
    m = f"{model} " if model else ""
    out = []
    if versions.get("suspect_version") is not None:
        out.append(f"Suspect: {m}{_v(versions['suspect_version'])} (champion when the incident opened).")
    if versions.get("good_version") is not None:
        out.append(f"Last-known-good: {m}{_v(versions['good_version'])} (the fallback and the gate's baseline).")
    if versions.get("pinned_at"):
        out.append(f"Pinned at {fmt_time(versions['pinned_at'])}: later alias moves do not change this incident.")
    rest = {k: v for k, v in versions.items() if k not in ("suspect_version", "good_version", "pinned_at",
                                                           "incident_id", "model")}
    out += [f"{k}: {fmt(v)}." for k, v in rest.items()]
    return out


def triage_sentences(triage: Any) -> list[str]:
    if not isinstance(triage, dict) or not triage:
        return []
    s = triage.get("suspect") if isinstance(triage.get("suspect"), dict) else None
    g = triage.get("good") if isinstance(triage.get("good"), dict) else None
    vs = triage.get("versions") if isinstance(triage.get("versions"), dict) else {}
    out = []
    if s and g:
        rows = f" on {fmt(triage['rows'])} labelled feedback rows" if triage.get("rows") is not None else ""
        out.append(f"Precision{rows}: {_pct(g.get('precision'))} for last-known-good {_v(vs.get('good_version'))}, "
                   f"{_pct(s.get('precision'))} for the suspect {_v(vs.get('suspect_version'))}; recall "
                   f"{_pct(g.get('recall'))} vs {_pct(s.get('recall'))}.")
    if triage.get("precision_drop") is not None or triage.get("recall_drop") is not None:
        out.append(f"Relative drop: precision {_pct(triage.get('precision_drop'))}, recall "
                   f"{_pct(triage.get('recall_drop'))}.")
    if "confirmed" in triage:
        out.append("The signal is confirmed." if triage.get("confirmed") else
                   "The signal is NOT confirmed by the labelled feedback.")
        if not (s and g):  # a triage of its own kind (e.g. evasion: per client lines): its other facts too
            out += _facts(triage, skip=("confirmed", "precision_drop", "recall_drop", "rows"))
    return out or _facts(triage)


def _facts(d: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    """``key: value.`` for each plain value of ``d`` (nested dicts and lists are shown elsewhere)."""
    return [f"{k}: {fmt(v)}." for k, v in d.items() if k not in skip and not isinstance(v, (dict, list))]


_EVENT_WORDS = {
    "detected": "Detected",
    "contained": "Contained",
    "evidence_sealed": "Evidence sealed",
    "triaged": "Triaged",
    "forensics_done": "Forensics done",
    "eradicated": "Poison quarantined",
    "recovered": "Recovered",
    "reported": "Report written",
    "closed": "Closed",
    "false_positive": "Closed as a false positive",
}


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def executive_summary(inc: dict[str, Any], r: dict[str, Any]) -> list[dict[str, Any]]:
    """Five short paragraphs: what happened, what was done, what serves now, what is left, who to notify."""
    findings = r["findings"]
    serious = [f for f in findings if f["severity"] in ("critical", "high")] or findings
    happened = []
    what = r["kind"].replace("_", " ") if r["kind"] else "incident"
    happened.append(f"{what.capitalize()} on {r['model'] or 'the model'} ({r['target'] or 'target unknown'}), "
                    f"severity {r['severity']}, detected {fmt_time(r['detected_at'])}"
                    + (f" by {inc['opened_by']}" if inc.get("opened_by") else "") + ".")
    if serious:
        happened.append("Findings: " + "; ".join(_short(f["title"] or f["kind"], 110) for f in serious[:3])
                        + (f" (+{len(findings) - 3} more)" if len(findings) > 3 else "") + ".")
    loc = inc.get("poison_localisation") if isinstance(inc.get("poison_localisation"), dict) else {}
    if loc:
        src = fmt(loc.get("suspect_sources") or [])
        bat = fmt(loc.get("suspect_batches") or [])
        tp = loc.get("trigger_pattern") if isinstance(loc.get("trigger_pattern"), dict) else {}
        happened.append(f"The poisoned data came from source {src} in batch {bat}"
                        + (f"; trigger pattern: {tp.get('description')}" if tp.get("description") else "") + ".")
    happened += triage_sentences(inc.get("triage"))[:1]
    b = inc.get("blast_radius") if isinstance(inc.get("blast_radius"), dict) else {}
    if b:
        total = b.get("total", b.get("decisions"))
        happened.append(f"The suspect version served {fmt(total)} decisions to {fmt(b.get('clients_affected'))} "
                        "clients before containment"
                        + (f"; about {fmt(b['likely_missed_positives'])} fraudulent ones were likely let through"
                           if b.get("likely_missed_positives") is not None else "") + ".")
    done = []
    for e in r["timeline"]:
        if e["event"] == "detected":
            continue
        label = _EVENT_WORDS.get(e["event"], e["event"].replace("_", " ").capitalize())
        done.append(f"{label} at {e['when']}" + (f" by {e['actor']}" if e["actor"] else "") + ".")
    contain = inc.get("containment") if isinstance(inc.get("containment"), dict) else {}
    recovery = inc.get("recovery") if isinstance(inc.get("recovery"), dict) else {}
    serves = []
    now = inc.get("serving_now") if isinstance(inc.get("serving_now"), dict) else None
    if now:
        serves.append(f"{r['target'] or 'The target'} serves {serving_sentence(now)}.")
    elif recovery.get("new_version") and not recovery.get("dry_run") and (recovery.get("gate") or {}).get("passed", True):
        serves.append(f"{_v(recovery['new_version'])}, retrained on clean data and past the gate, serves all traffic "
                      f"since {fmt_time(recovery.get('promoted_at'))}.")
    elif contain.get("after") and not contain.get("dry_run"):
        serves.append(f"{r['target'] or 'The target'} serves {serving_sentence(contain['after'])}.")
    else:
        serves.append("Not contained: the suspect version may still be serving.")
    left = []
    state = r["status"]
    if r["dry_run"]:
        left.append("This was a dry run: nothing was changed. Run the playbook again without dry run to act.")
    if not contain and state not in ("closed", "false_positive"):
        left.append("Contain now: isolate the endpoint (all traffic to last-known-good).")
    gate = recovery.get("gate") if isinstance(recovery.get("gate"), dict) else {}
    if recovery and gate and not gate.get("passed", True):
        left.append("The clean retrain failed its gate: last-known-good keeps serving; fix and retrain.")
    elif not recovery and state not in ("recovered", "closed", "false_positive"):
        left.append("Recover: retrain from clean data, pass the gate, promote (approval may be required).")
    pending = [d for d in r["deadlines"] if d.get("due") and d.get("status") not in ("overdue", "not_applicable")]
    if recovery.get("promoted") is False:
        left.append(f"Not recovered: {recovery.get('reason') or 'nothing was promoted'}.")
    if r["overdue"]:
        left.append(f"{len(r['overdue'])} regulatory notification(s) are OVERDUE.")
    if pending:
        left.append(f"{len(pending)} regulatory notification(s) to file (below).")
    if b and b.get("total"):
        left.append(f"Review the {fmt(b.get('total'))} decisions the suspect version served and tell the "
                    f"{fmt(b.get('clients_affected'))} affected clients.")
    if state not in ("closed", "false_positive"):
        left.append("Close the incident once all of the above is done (or close it as a false positive).")
    notify = []
    def regime(d: dict[str, Any]) -> str:
        return str(d.get("regime_name") or d.get("regime") or "").split(" — ")[0]

    for d in r["overdue"] + pending:
        left_text = fmt_duration(d.get("seconds_left"))
        notify.append(f"{left_text[0].upper() + left_text[1:]} — {regime(d)}: {d.get('obligation')} "
                      f"(due {fmt_time(d.get('due'))})" + (f"; {d['applies']}" if d.get("applies") else "") + ".")
    for d in r["deadlines"]:
        if d.get("status") == "not_applicable":
            notify.append(f"Not applicable — {regime(d)}: {d.get('applies') or d.get('obligation')}.")
        elif not d.get("due"):
            notify.append(f"Clock not started — {regime(d)}: {d.get('obligation')} "
                          f"(starts at the {d.get('clock_trigger') or 'trigger'}"
                          + (f"; set {d['waiting_on']}" if d.get("waiting_on") else "") + ").")
    if not r["deadlines"]:
        notify.append("No regulatory regime selected for this incident.")
    return [{"heading": "What happened", "lines": happened},
            {"heading": "What was done", "lines": done or ["Nothing yet."]},
            {"heading": "What serves now", "lines": serves},
            {"heading": "What is left", "lines": left or ["Nothing."]},
            {"heading": "Who must be notified, by when", "lines": notify}]


# ---------------------------------------------------------------------------------------- generic sections
KNOWN_KEYS = {"incident_id", "title", "kind", "model", "target", "severity", "status", "state", "dry_run",
              "detected_at", "aware_at", "materiality_at", "regimes", "regulatory", "timeline", "findings", "atlas",
              "mitigations", "owasp", "blast_radius", "poison_localisation", "recovery", "evidence", "versions",
              "triage", "containment", "attachments", "deadlines", "playbook", "serving_now", "suspect_sources",
              "charts", "decisions", "sections", "opened_by", "check_dir"}
MAX_GENERIC_ROWS = 50


def _generic(title: Any, data: Any, text: Any = None) -> dict[str, Any]:
    """A section of any shape: text paragraphs, key/value pairs, a table or a list."""
    sec: dict[str, Any] = {"title": str(title), "text": [], "pairs": [], "headers": [], "rows": [], "bullets": []}
    if isinstance(text, str) and text:
        sec["text"].append(text)
    elif isinstance(text, list):
        sec["text"] += [str(t) for t in text]
    if isinstance(data, dict):
        sec["pairs"] = [(str(k), fmt(v)) for k, v in data.items()]
    elif isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        headers: list[str] = []
        for row in data:
            for k in row:
                if str(k) not in headers and len(headers) < 12:
                    headers.append(str(k))
        sec["headers"] = headers
        sec["rows"] = [[fmt(row.get(h, row.get(h))) for h in headers] for row in data[:MAX_GENERIC_ROWS]]
        sec["more"] = max(0, len(data) - MAX_GENERIC_ROWS)
    elif isinstance(data, (list, tuple, set)):
        sec["bullets"] = [fmt(x) for x in list(data)[:MAX_GENERIC_ROWS]]
    elif data not in (None, ""):
        sec["text"].append(fmt(data))
    return sec


def _sections(inc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    given = inc.get("sections")
    if isinstance(given, dict):
        given = [{"title": k, "data": v} for k, v in given.items()]
    for i, s in enumerate(given or []):
        if isinstance(s, str):  # a section name (the playbook's report_sections): built-in, already rendered
            continue
        if isinstance(s, dict):
            title = s.get("title") or s.get("name") or s.get("id") or f"Section {i + 1}"
            data = s.get("data", s.get("items", s.get("rows", {k: v for k, v in s.items()
                                                            if k not in ("title", "name", "id", "text", "summary")})))
            out.append(_generic(title, data, s.get("text", s.get("summary"))))
        else:
            out.append(_generic(f"Section {i + 1}", s))
    for k, v in inc.items():
        if k not in KNOWN_KEYS and v not in (None, "", [], {}):
            out.append(_generic(str(k).replace("_", " ").capitalize(), v))
    return out


def _playbook(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("title") or value.get("name") or value.get("id") or "")
    return "" if value is None else str(value)


def build_report(incident: dict[str, Any], out_dir: str | Path, *, now: datetime | None = None) -> dict[str, Any]:
    """Everything the three renderings show, normalised (this is report.json)."""
    if not isinstance(incident, dict):
        raise BadInput("incident", f"expected a dict, got {type(incident).__name__}")
    if not incident.get("incident_id"):
        raise BadInput("incident.incident_id", "missing")
    out_dir = Path(out_dir)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    findings = [f for f in incident.get("findings") or [] if isinstance(f, dict)]
    deadlines = _deadlines(incident, now)
    pending = [d for d in deadlines if d.get("due") and d.get("status") not in ("overdue", "not_applicable")]
    overdue = [d for d in deadlines if d.get("status") == "overdue"]
    state = incident.get("state")
    if isinstance(state, dict):  # the lifecycle's state record
        state = state.get("state")
    r = {
        "schema": "aiir-report/1",
        "generated_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "tool": {"name": "aiir", "version": aiir.__version__},
        "incident_id": str(incident["incident_id"]),
        "title": str(incident.get("title") or f"AI incident {incident['incident_id']}"),
        "kind": str(incident.get("kind") or ""),
        "model": _name(incident.get("model")),
        "target": _name(incident.get("target")),
        "severity": str(incident.get("severity") or "unknown"),
        "status": str(state or incident.get("status") or "open"),
        "playbook": _playbook(incident.get("playbook")) or str(incident.get("kind") or ""),
        "dry_run": bool(incident.get("dry_run")),
        "detected_at": incident.get("detected_at"),
        "aware_at": incident.get("aware_at") or incident.get("detected_at"),
        "regimes": list(incident.get("regimes") or []),
        "deadlines": deadlines,
        "next_deadline": pending[0] if pending else None,
        "overdue": overdue,
        "timeline": _timeline(incident.get("timeline")),
        "findings": _findings(findings),
        "atlas": _entries(incident.get("atlas") or _from_findings(findings, "atlas"), taxonomy.ATLAS_TECHNIQUES),
        "mitigations": _entries(incident.get("mitigations") or _from_findings(findings, "mitigations"),
                                taxonomy.ATLAS_MITIGATIONS),
        "owasp": _entries(incident.get("owasp") or _from_findings(findings, "owasp"), taxonomy.OWASP_ML_TOP10),
        "blast_radius": _blast(incident.get("blast_radius")),
        "poison_localisation": _poison(incident.get("poison_localisation")),
        "recovery": _recovery(incident.get("recovery")),
        "evidence": _kv(incident.get("evidence")),
        "versions": versions_sentences(incident.get("versions"), _name(incident.get("model"))),
        "triage": triage_sentences(incident.get("triage")),
        "containment": containment_sentences(incident.get("containment"), incident.get("recovery"),
                                             incident.get("serving_now")),
        "attachments": _attachments(incident.get("attachments"), out_dir),
        "sections": _sections(incident),
        "charts": _charts(incident, out_dir),
        "incident": json.loads(json.dumps(incident, default=str)),
    }
    r["summary"] = executive_summary(incident, r)
    return r


def _charts(incident: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Chart data: the document's own ``charts``, else gathered from the workspace (never fails)."""
    from aiir import report_charts

    if isinstance(incident.get("charts"), dict):
        return incident["charts"]
    workdir = out_dir.parent if (out_dir.parent / "incident.json").exists() else None
    try:
        return report_charts.gather(incident, workdir)
    except Exception as exc:  # a chart never stops the report
        return {"errors": [f"{type(exc).__name__}: {exc}"]}


# ---------------------------------------------------------------------------------------- HTML
_CSS = """
:root{--bg:#fff;--fg:#111;--mut:#555;--line:#ccc;--bad:#b00020;--warn:#8a5a00;--ok:#0a6b2d;--hd:#f2f2f2}
@media (prefers-color-scheme:dark){:root{--bg:#111;--fg:#eee;--mut:#aaa;--line:#444;--bad:#ff6b7f;
--warn:#ffc861;--ok:#6fdc8c;--hd:#1d1d1d}}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);
font:17px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1200px;margin:0 auto;padding:16px 20px 60px}
header{border-bottom:4px solid var(--line);padding-bottom:10px;margin-bottom:12px}
header.sev-critical,header.sev-high{border-color:var(--bad)}header.sev-medium{border-color:var(--warn)}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin:1.6em 0 .4em;border-bottom:1px solid var(--line)}
.badges span{display:inline-block;font-weight:700;padding:2px 10px;margin:0 6px 6px 0;border:2px solid currentColor;
border-radius:4px;text-transform:uppercase;letter-spacing:.03em}
.bad{color:var(--bad)}.warn{color:var(--warn)}.ok{color:var(--ok)}.mut{color:var(--mut)}
.next{font-size:1.25em;font-weight:700;margin:.4em 0}
table{border-collapse:collapse;width:100%;margin:.3em 0 1em;font-size:.95em}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:var(--hd)}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.overdue td{color:var(--bad);font-weight:700}tr.soon td{color:var(--warn);font-weight:700}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:.3em 0}dt{color:var(--mut)}dd{margin:0}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;overflow-wrap:anywhere}
a{color:inherit}footer{margin-top:3em;color:var(--mut);font-size:.85em}
.summary{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:10px 24px;margin:.6em 0 1em}
.summary section{border-left:4px solid var(--line);padding:2px 12px}.summary h3{margin:.2em 0;font-size:1.02em}
.summary ul{margin:.2em 0;padding-left:1.1em}.summary li{margin:.1em 0}
.summary section.left{border-color:var(--warn)}.summary section.notify{border-color:var(--bad)}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:12px 24px}
figure{margin:0;break-inside:avoid;page-break-inside:avoid}figcaption{color:var(--mut);font-size:.9em}
figure h3{margin:.4em 0 .1em;font-size:1em}svg.chart{display:block;height:auto;color:var(--fg)}
ul.sentences{padding-left:1.1em;margin:.3em 0}
@media print{
@page{size:A4;margin:14mm 12mm}
:root{--bg:#fff;--fg:#000;--mut:#444;--line:#999;--bad:#a00018;--warn:#7a4d00;--ok:#0a5a26;--hd:#eee}
body{font-size:10.5pt;line-height:1.35}main{max-width:none;padding:0}
h2{break-after:avoid;page-break-after:avoid}table,dl,figure,.summary section{break-inside:avoid;page-break-inside:avoid}
tr{break-inside:avoid}.charts{grid-template-columns:1fr 1fr}a{text-decoration:none}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{ r.status|upper }} · {{ r.severity|upper }} · {{ r.incident_id }}</title>
<style>{{ css|safe }}</style></head>
<body><main>
<header class="sev-{{ r.severity }}">
<div class="badges"><span class="{{ status_class }}">{{ r.status }}</span><span class="{{ sev_class }}">severity {{ r.severity }}</span>{% if r.dry_run %}<span class="warn">dry run</span>{% endif %}</div>
<h1>{{ r.title }}</h1>
<dl><dt>incident</dt><dd><code>{{ r.incident_id }}</code></dd>
<dt>model</dt><dd>{{ r.model or "—" }}</dd><dt>target</dt><dd>{{ r.target or "—" }}</dd>{% if r.playbook %}<dt>playbook</dt><dd>{{ r.playbook }}</dd>{% endif %}
<dt>detected</dt><dd>{{ r.detected_at|when }}</dd><dt>report generated</dt><dd>{{ r.generated_at|when }}</dd></dl>
{% for d in r.overdue %}<p class="next bad">OVERDUE: {{ d.regime_name }} — {{ d.obligation }} (due {{ d.due|when }}, {{ d.seconds_left|left }})</p>{% endfor %}
{% if r.next_deadline %}<p class="next {{ 'bad' if r.next_deadline.seconds_left < 86400 else 'warn' }}">Next deadline: {{ r.next_deadline.regime_name }} — {{ r.next_deadline.obligation }}: {{ r.next_deadline.due|when }} ({{ r.next_deadline.seconds_left|left }})</p>{% endif %}
</header>

<h2>Executive summary</h2>
<div class="summary">{% for sec in r.summary %}<section class="{{ ['happened','done','serves','left','notify'][loop.index0] if loop.index0 < 5 else '' }}"><h3>{{ sec.heading }}</h3><ul>{% for line in sec.lines %}<li>{{ line }}</li>{% endfor %}</ul></section>{% endfor %}</div>

{% if charts %}<h2>At a glance</h2>
<div class="charts">{% for c in charts %}<figure id="chart-{{ c.id }}"><h3>{{ c.title }}</h3>{{ c.svg|safe }}<figcaption>{{ c.caption }}</figcaption></figure>{% endfor %}</div>{% endif %}

<h2>Regulatory clocks</h2>
{% if r.deadlines %}<table><tr><th>due (UTC)</th><th>time left</th><th>regime</th><th>obligation</th><th>clock starts at</th><th>basis</th><th>notes</th></tr>
{% for d in r.deadlines %}<tr class="{{ 'overdue' if d.status == 'overdue' else ('soon' if d.seconds_left is not none and d.seconds_left < 86400 else '') }}">
<td>{{ d.due|when if d.due else "clock not started" }}</td><td>{{ d.seconds_left|left }}</td><td>{{ d.regime_name }}</td><td>{{ d.obligation }}</td>
<td>{{ d.clock_trigger }}{% if d.clock_start %}: {{ d.clock_start|when }}{% endif %}</td><td>{{ d.basis }}</td><td>{{ d.notes }}</td></tr>
{% endfor %}</table>
<p class="mut">Outer limits only: each regime also requires notice without undue delay. Whether a regime applies is a legal judgement.</p>
{% else %}<p class="mut">No regulatory regime selected for this incident.</p>{% endif %}

<h2>Timeline</h2>
{% if r.timeline %}<table><tr><th>when</th><th>event</th><th>actor</th><th>details</th></tr>
{% for e in r.timeline %}<tr><td>{{ e.when }}</td><td>{{ e.event }}</td><td>{{ e.actor }}</td><td>{{ e.details }}</td></tr>
{% endfor %}</table>{% else %}<p class="mut">No events recorded.</p>{% endif %}

<h2>Findings</h2>
{% if r.findings %}<table><tr><th>severity</th><th>kind</th><th>title</th><th>columns</th><th>sources</th><th>statistic</th><th>threshold</th><th>ATLAS</th><th>OWASP</th></tr>
{% for f in r.findings %}<tr><td class="{{ 'bad' if f.severity in ('critical','high') else ('warn' if f.severity == 'medium' else '') }}">{{ f.severity }}</td><td>{{ f.kind }}</td><td>{{ f.title }}{% if f.detail %}<br><span class="mut">{{ f.detail }}</span>{% endif %}</td><td>{{ f.columns }}</td><td>{{ f.sources }}</td><td>{{ f.statistic }}</td><td>{{ f.threshold }}</td><td>{{ f.atlas }}</td><td>{{ f.owasp }}</td></tr>
{% endfor %}</table>{% else %}<p class="mut">No findings attached.</p>{% endif %}

{% if r.blast_radius %}<h2>Blast radius</h2>
<dl>{% for k, v in r.blast_radius.summary %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>
{% if r.blast_radius.clients %}<table><tr><th>client</th><th>decisions</th><th>predicted positive</th><th>predicted negative</th><th>trigger let through</th><th>first</th><th>last</th></tr>
{% for c in r.blast_radius.clients %}<tr><td><code>{{ c.client_id }}</code></td><td class="num">{{ c.decisions }}</td><td class="num">{{ c.positive }}</td><td class="num">{{ c.negative }}</td><td class="num">{{ c.let_through }}</td><td>{{ c.first }}</td><td>{{ c.last }}</td></tr>
{% endfor %}</table>{% if r.blast_radius.more %}<p class="mut">… and {{ r.blast_radius.more }} more clients{% if r.blast_radius.file %} (see {{ r.blast_radius.file }}){% endif %}.</p>{% endif %}{% endif %}
{% endif %}

{% if r.poison_localisation %}<h2>Poison localisation</h2>
<dl>{% for k, v in r.poison_localisation.summary %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>
{% if r.poison_localisation.suspects %}<table><tr><th>slice</th><th>view</th><th>file</th><th>source</th><th>batch</th><th>rows</th><th>signals</th><th>label-flip share</th><th>quarantined</th></tr>
{% for s in r.poison_localisation.suspects %}<tr><td><code>{{ s.id }}</code></td><td>{{ s.view }}</td><td><code>{{ s.file }}</code></td><td>{{ s.source }}</td><td>{{ s.batch }}</td><td class="num">{{ s.rows }}</td><td>{{ s.signals }}</td><td class="num">{{ s.flip }}</td><td>{{ s.quarantined }}</td></tr>
{% endfor %}</table>{% if r.poison_localisation.more %}<p class="mut">… and {{ r.poison_localisation.more }} more suspect slices.</p>{% endif %}{% endif %}
{% endif %}

{% if r.recovery %}<h2>Recovery</h2>
<dl>{% for k, v in r.recovery.summary %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>
{% if r.recovery.checks %}<table><tr><th>gate check</th><th>candidate</th><th>baseline</th><th>threshold</th><th>result</th><th>rule</th></tr>
{% for c in r.recovery.checks %}<tr><td>{{ c.name }}</td><td class="num">{{ c.candidate }}</td><td class="num">{{ c.baseline }}</td><td class="num">{{ c.threshold }}</td><td class="{{ 'ok' if c.passed else 'bad' }}">{{ 'pass' if c.passed else 'FAIL' }}</td><td>{{ c.rule }}</td></tr>
{% endfor %}</table>{% endif %}
{% endif %}

{% for title, lines in (("Containment", r.containment), ("Versions", r.versions), ("Triage", r.triage)) %}{% if lines %}<h2>{{ title }}</h2>
<ul class="sentences">{% for line in lines %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}{% endfor %}

{% for sec in r.sections %}<h2>{{ sec.title }}</h2>
{% for t in sec.text %}<p>{{ t }}</p>{% endfor %}
{% if sec.pairs %}<dl>{% for k, v in sec.pairs %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>{% endif %}
{% if sec.headers %}<table><tr>{% for h in sec.headers %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in sec.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>{% if sec.more %}<p class="mut">… and {{ sec.more }} more rows.</p>{% endif %}{% endif %}
{% if sec.bullets %}<ul>{% for i in sec.bullets %}<li>{{ i }}</li>{% endfor %}</ul>{% endif %}
{% endfor %}

<h2>MITRE ATLAS and OWASP ML Top 10</h2>
{% for title, items in (("ATLAS techniques", r.atlas), ("ATLAS mitigations", r.mitigations), ("OWASP ML Top 10 (2023)", r.owasp)) %}
<h3>{{ title }}</h3>{% if items %}<ul>{% for e in items %}<li><code>{{ e.id }}</code> {% if e.url %}<a href="{{ e.url }}" rel="noopener noreferrer">{{ e.name or e.id }}</a>{% else %}{{ e.name }}{% endif %}{% if not e.known %} <span class="mut">(not in aiir's taxonomy)</span>{% endif %}</li>{% endfor %}</ul>{% else %}<p class="mut">—</p>{% endif %}
{% endfor %}

<h2>Evidence</h2>
{% if r.evidence %}<dl>{% for k, v in r.evidence %}<dt>{{ k }}</dt><dd><code>{{ v }}</code></dd>{% endfor %}</dl>
<p class="mut">Check it: <code>aiir verify {{ evidence_bundle }}</code> (exit 0 intact and signed by a trusted key; 3 changed or untrusted key; elsewhere add <code>--trusted-key aiir-evidence.pub.pem</code>).</p>{% else %}<p class="mut">No evidence bundle sealed yet.</p>{% endif %}

<h2>Attachments</h2>
{% if r.attachments %}<ul>{% for a in r.attachments %}<li>{% if a.href %}<a href="{{ a.href }}">{{ a.title }}</a>{% else %}{{ a.title }}{% endif %} <code class="mut">{{ a.path }}</code>{% if a.exists == false %} <span class="warn">(missing)</span>{% endif %}</li>{% endfor %}</ul>{% else %}<p class="mut">None.</p>{% endif %}

<footer>aiir {{ r.tool.version }} · report schema {{ r.schema }} · generated {{ r.generated_at|when }}</footer>
</main></body></html>
"""


def _html(r: dict[str, Any]) -> str:
    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=False)
    env.filters["when"] = fmt_time
    env.filters["left"] = fmt_duration
    status = r["status"].lower()
    status_class = "ok" if status in ("recovered", "closed", "false_positive") else \
        ("warn" if status in ("contained", "eradicated") else "bad")
    sev_class = "bad" if r["severity"] in ("critical", "high") else ("warn" if r["severity"] == "medium" else "mut")
    bundle = dict(r["evidence"]).get("bundle", "BUNDLE")
    from aiir import report_charts

    try:
        charts = report_charts.render_all(r.get("charts") or {})
    except Exception:  # malformed chart data from a document: leave the charts out, keep the report
        charts = []
    return env.from_string(_HTML).render(r=r, css=_CSS, status_class=status_class, sev_class=sev_class,
                                         evidence_bundle=bundle, charts=charts)


# ---------------------------------------------------------------------------------------- Markdown
def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(md(c) if c != "" else " " for c in row) + " |" for row in rows]
    return out + [""]


def _markdown(r: dict[str, Any]) -> str:
    L: list[str] = []
    L.append(f"# {md(r['title'])}")
    L.append("")
    L.append(f"**Status: {md(r['status'].upper())}** · **Severity: {md(r['severity'].upper())}**"
             + (" · **DRY RUN**" if r["dry_run"] else ""))
    L.append("")
    L.append(f"- Incident: {md(r['incident_id'])}")
    L.append(f"- Model: {md(r['model'] or '—')}")
    L.append(f"- Target: {md(r['target'] or '—')}")
    L.append(f"- Detected: {fmt_time(r['detected_at'])}")
    L.append(f"- Report generated: {fmt_time(r['generated_at'])}")
    for d in r["overdue"]:
        L.append(f"- **OVERDUE: {md(d['regime_name'])} — {md(d['obligation'])}** (due {fmt_time(d['due'])}, "
                 f"{fmt_duration(d['seconds_left'])})")
    if r["next_deadline"]:
        d = r["next_deadline"]
        L.append(f"- **Next deadline: {md(d['regime_name'])} — {md(d['obligation'])}: {fmt_time(d['due'])} "
                 f"({fmt_duration(d['seconds_left'])})**")
    L.append("")
    L += ["## Executive summary", ""]
    for sec in r["summary"]:
        L += [f"### {md(sec['heading'])}", ""] + [f"- {md(line, lead=True)}" for line in sec["lines"]] + [""]
    L += _markdown_charts(r.get("charts") or {})
    L.append("## Regulatory clocks")
    L.append("")
    if r["deadlines"]:
        L += _table(["due (UTC)", "time left", "regime", "obligation", "clock starts at", "basis", "notes"],
                    [[fmt_time(d["due"]) if d.get("due") else "clock not started", fmt_duration(d.get("seconds_left")),
                      d.get("regime_name", d.get("regime")), d.get("obligation"),
                      f"{d.get('clock_trigger', '')}: {fmt_time(d.get('clock_start'))}" if d.get("clock_start")
                      else d.get("clock_trigger", ""), d.get("basis"), d.get("notes")] for d in r["deadlines"]])
    else:
        L += ["No regulatory regime selected for this incident.", ""]
    L.append("## Timeline")
    L.append("")
    L += _table(["when", "event", "actor", "details"],
                [[e["when"], e["event"], e["actor"], e["details"]] for e in r["timeline"]]) if r["timeline"] \
        else ["No events recorded.", ""]
    L.append("## Findings")
    L.append("")
    L += _table(["severity", "kind", "title", "columns", "sources", "statistic", "threshold", "ATLAS", "OWASP"],
                [[f["severity"], f["kind"], f["title"], f["columns"], f["sources"], f["statistic"], f["threshold"],
                  f["atlas"], f["owasp"]] for f in r["findings"]]) if r["findings"] else ["No findings attached.", ""]
    if r["blast_radius"]:
        b = r["blast_radius"]
        L += ["## Blast radius", ""] + [f"- {md(k, lead=True)}: {md(v)}" for k, v in b["summary"]] + [""]
        if b["clients"]:
            L += _table(["client", "decisions", "predicted positive", "predicted negative", "trigger let through",
                         "first", "last"],
                        [[c["client_id"], c["decisions"], c["positive"], c["negative"], c["let_through"], c["first"],
                          c["last"]] for c in b["clients"]])
            if b["more"]:
                L += [f"… and {b['more']} more clients.", ""]
    if r["poison_localisation"]:
        p = r["poison_localisation"]
        L += ["## Poison localisation", ""] + [f"- {md(k, lead=True)}: {md(v)}" for k, v in p["summary"]] + [""]
        if p["suspects"]:
            L += _table(["slice", "view", "file", "source", "batch", "rows", "signals", "label-flip share",
                         "quarantined"],
                        [[s["id"], s["view"], s["file"], s["source"], s["batch"], s["rows"], s["signals"], s["flip"],
                          s["quarantined"]] for s in p["suspects"]])
    if r["recovery"]:
        rc = r["recovery"]
        L += ["## Recovery", ""] + [f"- {md(k, lead=True)}: {md(v)}" for k, v in rc["summary"]] + [""]
        if rc["checks"]:
            L += _table(["gate check", "candidate", "baseline", "threshold", "result", "rule"],
                        [[c["name"], c["candidate"], c["baseline"], c["threshold"], "pass" if c["passed"] else "FAIL",
                          c["rule"]] for c in rc["checks"]])
    for title, lines in (("Containment", r["containment"]), ("Versions", r["versions"]), ("Triage", r["triage"])):
        if lines:
            L += [f"## {title}", ""] + [f"- {md(line, lead=True)}" for line in lines] + [""]
    for sec in r["sections"]:
        L += [f"## {md(sec['title'])}", ""]
        L += [md(t, lead=True) + "\n" for t in sec["text"]]
        L += [f"- {md(k, lead=True)}: {md(v)}" for k, v in sec["pairs"]] + ([""] if sec["pairs"] else [])
        if sec["headers"]:
            L += _table(sec["headers"], sec["rows"])
        L += [f"- {md(i, lead=True)}" for i in sec["bullets"]] + ([""] if sec["bullets"] else [])
    L += ["## MITRE ATLAS and OWASP ML Top 10", ""]
    for title, items in (("ATLAS techniques", r["atlas"]), ("ATLAS mitigations", r["mitigations"]),
                         ("OWASP ML Top 10 (2023)", r["owasp"])):
        L += [f"### {title}", ""]
        for e in items:
            name = md(e["name"] or e["id"])
            L.append(f"- {md(e['id'], lead=True)} " + (f"[{name}](<{e['url']}>)" if e["url"] else name))
        L += [""] if items else ["—", ""]
    L += ["## Evidence", ""]
    if r["evidence"]:
        L += [f"- {md(k, lead=True)}: {md(v)}" for k, v in r["evidence"]]
        L += ["", f"Check it: aiir verify {md(dict(r['evidence']).get('bundle', 'BUNDLE'))} (exit 0 intact and signed by a trusted key; 3 changed or untrusted key; elsewhere add --trusted-key aiir-evidence.pub.pem)", ""]
    else:
        L += ["No evidence bundle sealed yet.", ""]
    L += ["## Attachments", ""]
    for a in r["attachments"]:
        title = md(a["title"])
        link = f"[{title}](<{a['href']}>)" if a["href"] else title
        L.append(f"- {link}" + (" (missing)" if a["exists"] is False else ""))
    if not r["attachments"]:
        L.append("None.")
    L += ["", f"_aiir {md(r['tool']['version'])} · generated {fmt_time(r['generated_at'])}_", ""]
    return "\n".join(L)


def _markdown_charts(charts: dict[str, Any]) -> list[str]:
    """The charts' data as tables (the same content as the HTML's SVG)."""
    L: list[str] = []
    t, p, lr = charts.get("traffic"), charts.get("performance"), charts.get("label_rates")
    drift = charts.get("drift") or []
    if not (t or p or lr or drift):
        return L
    L += ["## At a glance", ""]
    if t:
        from aiir.report_charts import _time

        cut = [x for x in (_time(t.get("contained_at")), _time(t.get("recovered_at"))) if x]
        L += [f"### Traffic by model version ({fmt(t['total'])} decisions, {md(t.get('source') or 'decision log')})", ""]
        heads = ["version", "before containment", "contained → recovered", "after recovery", "total"]
        rows = []
        for v, counts in t["series"].items():
            parts = [0, 0, 0]
            for iso, c in zip(t["buckets"], counts, strict=False):
                at = _time(iso)
                k = 0 if not cut or (at and at < cut[0]) else (1 if len(cut) < 2 or (at and at < cut[1]) else 2)
                parts[k] += c
            rows.append([f"v{v}", fmt(parts[0]), fmt(parts[1]), fmt(parts[2]), fmt(sum(counts))])
        L += _table(heads, rows)
        if t.get("contained_at"):
            L += [f"Contained at {fmt_time(t['contained_at'])}"
                  + (f"; recovered at {fmt_time(t['recovered_at'])}" if t.get("recovered_at") else "") + ".", ""]
    if p:
        L += ["### Suspect vs last-known-good", ""]
        L += _table(["model", "precision", "recall"],
                    [[f"{role} v{p[role].get('version')}", _pct(p[role].get("precision")), _pct(p[role].get("recall"))]
                     for role in ("suspect", "good")])
    for d in drift:
        L += [f"### Drifted feature: {md(d['column'])}", ""]
        L += _table(["bin" if d["kind"] == "numeric" else "value", "reference", "current"],
                    [[lab, _pct(a), _pct(b)] for lab, a, b in zip(d["labels"], d["reference"], d["current"],
                                                                   strict=False)])
    if lr:
        L += [f"### Label rate per source ({md(lr.get('label') or 'label')})", ""]
        L += _table(["source", "reference", "current", "rows", "suspect"],
                    [[x["source"], _pct(x["reference_rate"]), _pct(x["current_rate"]), fmt(x.get("rows")),
                      "yes" if x["suspect"] else ""] for x in lr["sources"]])
    return L


def render_report(incident: dict[str, Any], out_dir: str | Path, *, now: datetime | None = None) -> dict[str, Path]:
    """Write report.html, report.json and report.md into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    r = build_report(incident, out_dir, now=now)
    paths = {"html": out_dir / "report.html", "json": out_dir / "report.json", "md": out_dir / "report.md"}
    texts = {"html": _html(r), "json": json.dumps(r, indent=2, ensure_ascii=False, default=str) + "\n",
             "md": _markdown(r)}
    for key, path in paths.items():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(texts[key], encoding="utf-8")
        os.replace(tmp, path)
    return paths
