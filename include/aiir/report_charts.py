"""Charts of the incident report: data gathered from the workspace, drawn as inline SVG.

No JavaScript, no CDN, no external font: each ``svg_*`` function returns one ``<svg>`` element as a
string that opens offline and prints. Every text that came from data (a model version, a feature or a
source name, a category value) goes through :func:`esc`; numbers are formatted by this module.

Chart data (what ``report.json`` carries under ``charts`` and Markdown shows as tables):

    traffic      {"buckets": [ISO start], "bucket_s", "series": {version: [count]}, "contained_at",
                  "recovered_at", "suspect_version", "good_version", "total", "source"}
    performance  {"suspect": {"version", "precision", "recall"}, "good": {...}, "rows"}
    drift        [{"column", "kind": "numeric"|"categorical", "labels": [str], "reference": [share],
                   "current": [share], "statistic": {"name", "value"}}]
    label_rates  {"label", "reference_rate", "sources": [{"source", "reference_rate", "current_rate",
                   "rows", "suspect"}]}

:func:`gather` builds them from what exists: the decision log (the target's ``decisions()``, else the
workspace's preserved ``decisions_recent.csv``), ``triage.json`` (via the report document), and the
integrity check's ``findings.json`` with the reference and current files it names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

PALETTE = ("#1f6fb2", "#b8860b", "#6a3d9a", "#2e8b57", "#8b4513", "#4682b4", "#708090")
SUSPECT = "#c62828"
GOOD = "#2e7d32"
REF = "#7f8c99"
CUR = "#c62828"
W, H = 680, 240
MAX_DRIFT_CHARTS = 4
MAX_CATEGORIES = 8
MAX_SOURCES = 12


def esc(value: Any) -> str:
    """Text or attribute value for SVG/HTML: ``& < > " '`` escaped, control characters dropped."""
    text = "".join(ch for ch in str(value) if ch in "\t" or ord(ch) >= 32 and ord(ch) != 127)
    return escape(text, quote=True)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.0f} %" if abs(v) >= 0.1 else f"{v * 100:.1f} %"


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat(timespec="seconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------ data
def traffic(decisions: Iterable[dict[str, Any]], *, contained_at: Any = None, recovered_at: Any = None,
            suspect_version: Any = None, good_version: Any = None, buckets: int = 40,
            source: str = "") -> dict[str, Any] | None:
    """Decisions per model version per time bucket. ``decisions``: dicts with ``ts`` and ``model_version``."""
    rows = []
    for d in decisions:
        t = _time(d.get("ts"))
        if t is not None:
            rows.append((t, str(d.get("model_version") if d.get("model_version") is not None else "?")))
    if not rows:
        return None
    rows.sort()
    start, end = rows[0][0], rows[-1][0]
    span = max((end - start).total_seconds(), 1.0)
    step = _nice_step(span / max(1, buckets))
    n = int(span // step) + 1
    versions = sorted({v for _, v in rows}, key=lambda v: (len(v), v))
    series = {v: [0] * n for v in versions}
    for t, v in rows:
        series[v][min(n - 1, int((t - start).total_seconds() // step))] += 1
    return {"buckets": [_iso(start + timedelta(seconds=i * step)) for i in range(n)], "bucket_s": step,
            "series": series, "contained_at": _iso(_time(contained_at)), "recovered_at": _iso(_time(recovered_at)),
            "suspect_version": None if suspect_version is None else str(suspect_version),
            "good_version": None if good_version is None else str(good_version), "total": len(rows),
            "source": source}


def _nice_step(seconds: float) -> float:
    for s in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if seconds <= s:
            return float(s)
    return float(math.ceil(seconds / 86400) * 86400)


def performance(triage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(triage, dict):
        return None
    out: dict[str, Any] = {"rows": triage.get("rows")}
    versions = triage.get("versions") if isinstance(triage.get("versions"), dict) else {}
    for role in ("suspect", "good"):
        m = triage.get(role)
        if not isinstance(m, dict):
            return None
        out[role] = {"version": versions.get(f"{role}_version"), "precision": _num(m.get("precision")),
                     "recall": _num(m.get("recall"))}
    if all(out[r][k] is None for r in ("suspect", "good") for k in ("precision", "recall")):
        return None
    return out


def _histogram(ref, cur, kind: str) -> tuple[list[str], list[float], list[float]]:
    import numpy as np
    import pandas as pd

    if kind == "numeric":
        r = pd.to_numeric(ref, errors="coerce").to_numpy(dtype=float)
        c = pd.to_numeric(cur, errors="coerce").to_numpy(dtype=float)
        r, c = r[np.isfinite(r)], c[np.isfinite(c)]
        both = np.concatenate([r, c])
        if both.size == 0:
            return [], [], []
        lo, hi = np.quantile(both, [0.005, 0.995])
        if hi <= lo:
            lo, hi = float(both.min()), float(both.max()) + 1e-9
        edges = np.linspace(lo, hi, 21)
        rc = np.histogram(np.clip(r, lo, hi), edges)[0]
        cc = np.histogram(np.clip(c, lo, hi), edges)[0]
        labels = [_short(edges[i]) for i in range(len(edges) - 1)]
        return labels, (rc / max(rc.sum(), 1)).round(4).tolist(), (cc / max(cc.sum(), 1)).round(4).tolist()
    rv = ref.astype(str).value_counts(normalize=True)
    cv = cur.astype(str).value_counts(normalize=True)
    top = (rv.add(cv, fill_value=0)).sort_values(ascending=False).index[:MAX_CATEGORIES]
    return ([str(k) for k in top], [round(float(rv.get(k, 0.0)), 4) for k in top],
            [round(float(cv.get(k, 0.0)), 4) for k in top])


def _short(x: float) -> str:
    a = abs(x)
    if a >= 1e6:
        return f"{x / 1e6:.1f}M"
    if a >= 1e3:
        return f"{x / 1e3:.1f}k"
    if a >= 10:
        return f"{x:.0f}"
    return f"{x:.2g}"


def drift(findings_doc: dict[str, Any] | None, *, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Reference vs current distributions of the drifted features named in ``findings.json``."""
    if not isinstance(findings_doc, dict):
        return []
    d = findings_doc.get("drift") if isinstance(findings_doc.get("drift"), dict) else {}
    table = {str(r.get("column")): r for r in d.get("table") or [] if isinstance(r, dict)}
    wanted = [str(c) for c in (columns or d.get("drifted") or [])][:MAX_DRIFT_CHARTS]
    ref_path = (findings_doc.get("reference") or {}).get("path") if isinstance(findings_doc.get("reference"), dict) else None
    cur_path = (findings_doc.get("current") or {}).get("path") if isinstance(findings_doc.get("current"), dict) else None
    if not wanted or not ref_path or not cur_path or not Path(ref_path).exists() or not Path(cur_path).exists():
        return []
    from aiir.tabular import read_table

    ref_df, cur_df = read_table(ref_path), read_table(cur_path)
    out = []
    for col in wanted:
        if col not in ref_df.columns or col not in cur_df.columns:
            continue
        row = table.get(col, {})
        kind = "categorical" if str(row.get("type") or "").startswith("cat") or ref_df[col].dtype == object \
            else "numeric"
        labels, r, c = _histogram(ref_df[col], cur_df[col], kind)
        if labels:
            out.append({"column": col, "kind": kind, "labels": labels, "reference": r, "current": c,
                        "statistic": {"name": row.get("test") or row.get("statistic_name"),
                                      "value": _num(row.get("statistic") if not isinstance(row.get("statistic"), dict)
                                                    else row["statistic"].get("value"))}})
    return out


def label_rates(findings_doc: dict[str, Any] | None, suspect_sources: Iterable[str] = ()) -> dict[str, Any] | None:
    """Positive-label rate per source, reference vs current, from ``findings.json`` (or its data files)."""
    if not isinstance(findings_doc, dict):
        return None
    suspects = {str(s) for s in suspect_sources} | {str(s) for s in findings_doc.get("suspect_sources") or []}
    labels = findings_doc.get("labels") if isinstance(findings_doc.get("labels"), dict) else {}
    shift = labels.get("shift") if isinstance(labels.get("shift"), dict) else {}
    per = shift.get("per_source") if isinstance(shift.get("per_source"), dict) else {}
    rows = []
    for name, st in per.items():
        if not isinstance(st, dict):
            continue
        rate = _positive_class(st)
        rows.append({"source": str(name), "reference_rate": _num(rate.get("reference_rate", rate.get("ref_rate"))),
                     "current_rate": _num(rate.get("current_rate", rate.get("cur_rate"))),
                     "rows": st.get("rows", st.get("cur_rows", st.get("current_rows"))),
                     "suspect": str(name) in suspects})
    if not rows or all(r["current_rate"] is None for r in rows):
        rows = _label_rates_from_files(findings_doc, suspects)
    if not rows:
        return None
    rows.sort(key=lambda r: (not r["suspect"], -(r["current_rate"] or 0)))
    overall = _positive_class(shift.get("overall") if isinstance(shift.get("overall"), dict) else {})
    return {"label": findings_doc.get("label_column"),
            "reference_rate": _num(shift.get("reference_rate", overall.get("ref_rate"))),
            "sources": rows[:MAX_SOURCES]}


def _positive_class(st: dict[str, Any]) -> dict[str, Any]:
    """The rates of the positive class (label 1/true) from aiir's label-shift statistics, else ``st``."""
    classes = [c for c in st.get("classes") or [] if isinstance(c, dict)]
    for c in classes:
        if str(c.get("class")).lower() in ("1", "true", "1.0", "yes", "fraud"):
            return c
    top = st.get("top")
    if isinstance(top, dict):
        return top
    return st


def _label_rates_from_files(doc: dict[str, Any], suspects: set[str]) -> list[dict[str, Any]]:
    label, source = doc.get("label_column"), doc.get("source_column")
    ref_path = (doc.get("reference") or {}).get("path") if isinstance(doc.get("reference"), dict) else None
    cur_path = (doc.get("current") or {}).get("path") if isinstance(doc.get("current"), dict) else None
    if not (label and source and ref_path and cur_path and Path(ref_path).exists() and Path(cur_path).exists()):
        return []
    import pandas as pd

    from aiir.tabular import read_table

    ref, cur = read_table(ref_path), read_table(cur_path)
    if label not in cur.columns or source not in cur.columns:
        return []

    def rate(df: pd.DataFrame) -> pd.Series:
        y = pd.to_numeric(df[label], errors="coerce")
        return y.groupby(df[source].astype(str)).mean()

    r = rate(ref) if source in ref.columns and label in ref.columns else pd.Series(dtype=float)
    c = rate(cur)
    n = cur[source].astype(str).value_counts()
    return [{"source": str(s), "reference_rate": _num(r.get(s)), "current_rate": _num(c.get(s)),
             "rows": int(n.get(s, 0)), "suspect": str(s) in suspects} for s in c.index]


def gather(doc: dict[str, Any], workdir: Path | None = None) -> dict[str, Any]:
    """Every chart's data for the report document ``doc`` (playbook.report's document)."""
    charts: dict[str, Any] = {}
    versions = doc.get("versions") if isinstance(doc.get("versions"), dict) else {}
    contain = doc.get("containment") if isinstance(doc.get("containment"), dict) else {}
    recovery = doc.get("recovery") if isinstance(doc.get("recovery"), dict) else {}
    decisions, source = _decisions(doc, workdir)
    t = traffic(decisions, contained_at=None if contain.get("dry_run") else contain.get("effective_at"),
                recovered_at=recovery.get("promoted_at"), suspect_version=versions.get("suspect_version"),
                good_version=versions.get("good_version"), source=source)
    if t:
        charts["traffic"] = t
    p = performance(doc.get("triage"))
    if p:
        charts["performance"] = p
    fdoc = _findings_doc(doc)
    try:
        dr = drift(fdoc)
    except Exception as exc:  # a chart must never stop the report
        dr, charts["errors"] = [], [f"drift distributions: {type(exc).__name__}: {exc}"]
    if dr:
        charts["drift"] = dr
    try:
        lr = label_rates(fdoc, doc.get("suspect_sources") or [])
    except Exception as exc:
        lr = None
        charts.setdefault("errors", []).append(f"label rates: {type(exc).__name__}: {exc}")
    if lr:
        charts["label_rates"] = lr
    return charts


def _findings_doc(doc: dict[str, Any]) -> dict[str, Any] | None:
    for key in ("check_dir",):
        if doc.get(key) and (Path(str(doc[key])) / "findings.json").exists():
            return json.loads((Path(str(doc[key])) / "findings.json").read_text())
    for a in doc.get("attachments") or []:
        if isinstance(a, dict) and str(a.get("path") or "").endswith("findings.json") and Path(a["path"]).exists():
            return json.loads(Path(a["path"]).read_text())
    return None


def _log_reachable(kind: str, name: str) -> bool:
    """The local gateway's log is read only when it is on this machine (no HTTP from a report)."""
    if kind != "local":
        return True
    from aiir import config
    from aiir.gateway import DECISIONS_FILE

    return (config.paths().gateway / name / DECISIONS_FILE).exists()


def _decisions(doc: dict[str, Any], workdir: Path | None) -> tuple[list[dict[str, Any]], str]:
    """The served decisions: from the target's decision log, else the workspace's preserved copy."""
    if isinstance(doc.get("decisions"), list):
        return doc["decisions"], "report document"
    target = doc.get("target")
    kind, _, name = str(target or "").partition(":")
    if workdir is not None and kind and name and _log_reachable(kind, name):
        try:
            from aiir.targets import get_target

            tgt = get_target(kind, name)
            try:
                rows = tgt.decisions(limit=200_000)
            finally:
                close = getattr(tgt, "close", None)
                if close:
                    close()
            if rows:
                return [{"ts": r.get("ts"), "model_version": r.get("model_version")} for r in rows], \
                    f"decision log of {kind}:{name}"
        except Exception:  # the target may be gone; fall back to the preserved copy
            pass
    if workdir is not None and (workdir / "decisions_recent.csv").exists():
        import csv

        with open(workdir / "decisions_recent.csv", newline="", encoding="utf-8") as fh:
            rows = [{"ts": r.get("ts"), "model_version": r.get("model_version")} for r in csv.DictReader(fh)]
        return rows, "decisions preserved with the evidence (decisions_recent.csv)"
    return [], ""


# ------------------------------------------------------------------------------------------ SVG
def _svg_open(title: str, w: int = W, h: int = H) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="100%" '
            f'style="max-width:{w}px" role="img" aria-label="{esc(title)}" class="chart">',
            f"<title>{esc(title)}</title>",
            '<style>text{font:12px system-ui,sans-serif;fill:currentColor}.ax{stroke:#888;stroke-width:1}'
            '.gr{stroke:#8884;stroke-width:1}</style>']


def _axis_y(x0: int, y0: int, y1: int, vmax: float, fmt, ticks: int = 4) -> list[str]:
    out = [f'<line class="ax" x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}"/>']
    for i in range(ticks + 1):
        v = vmax * i / ticks
        y = y0 - (y0 - y1) * i / ticks
        out.append(f'<line class="gr" x1="{x0}" y1="{y:.1f}" x2="{W - 10}" y2="{y:.1f}"/>')
        out.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{esc(fmt(v))}</text>')
    return out


def _legend(items: list[tuple[str, str]], x: int, y: int) -> list[str]:
    out = []
    for label, color in items:
        out.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{x + 14}" y="{y}">{esc(label)}</text>')
        x += 22 + 7 * len(label)
    return out


def _version_colors(t: dict[str, Any]) -> dict[str, str]:
    colors, i = {}, 0
    for v in t["series"]:
        if v == t.get("suspect_version"):
            colors[v] = SUSPECT
        elif v == t.get("good_version"):
            colors[v] = GOOD
        else:
            colors[v] = PALETTE[i % len(PALETTE)]
            i += 1
    return colors


def svg_traffic(t: dict[str, Any]) -> str:
    """Stacked bars of decisions per version over time; containment (and recovery) marked."""
    n = len(t["buckets"])
    x0, x1, y0, y1 = 56, W - 10, H - 46, 30
    tot = [sum(s[i] for s in t["series"].values()) for i in range(n)]
    vmax = max(tot) or 1
    bw = (x1 - x0) / n
    colors = _version_colors(t)
    out = _svg_open("Traffic by model version over time")
    out += _axis_y(x0, y0, y1, vmax, lambda v: f"{v:.0f}")
    for i in range(n):
        base = 0.0
        for v, counts in t["series"].items():
            c = counts[i]
            if not c:
                continue
            h = (y0 - y1) * c / vmax
            y = y0 - (y0 - y1) * base / vmax - h
            out.append(f'<rect x="{x0 + i * bw + 0.5:.1f}" y="{y:.1f}" width="{max(bw - 1, 0.5):.1f}" '
                       f'height="{h:.1f}" fill="{colors[v]}"><title>{esc(t["buckets"][i])} v{esc(v)}: {c}</title></rect>')
            base += c
    start = _time(t["buckets"][0])
    span = t["bucket_s"] * n

    def xpos(iso: str | None) -> float | None:
        dt = _time(iso)
        if dt is None or start is None:
            return None
        return x0 + (x1 - x0) * min(max((dt - start).total_seconds() / span, 0), 1)

    for key, label, color in (("contained_at", "contained", SUSPECT), ("recovered_at", "recovered", GOOD)):
        x = xpos(t.get(key))
        if x is not None:
            out.append(f'<line x1="{x:.1f}" y1="{y1 - 8}" x2="{x:.1f}" y2="{y0}" stroke="{color}" '
                       f'stroke-width="2" stroke-dasharray="5 3"/>')
            when = _time(t[key])
            right = x > x0 + (x1 - x0) * 0.7  # near the right edge the label goes left of the line
            out.append(f'<text x="{x - 4 if right else x + 4:.1f}" y="{y1 - 10 + (12 if key == "recovered_at" else 0)}" '
                       f'text-anchor="{"end" if right else "start"}" style="fill:{color};font-weight:700">'
                       f'{esc(label)} {esc(when.strftime("%H:%M:%S") if when else "")}</text>')
    for i in sorted({0, n // 2, n - 1}):
        dt = _time(t["buckets"][i])
        anchor = "end" if i == n - 1 and n > 1 else ("middle" if i else "start")
        x = x0 + (i + 1) * bw if anchor == "end" else x0 + i * bw
        out.append(f'<text x="{x:.1f}" y="{y0 + 16}" text-anchor="{anchor}">'
                   f'{esc(dt.strftime("%H:%M:%S") if dt else "")}</text>')
    out.append(f'<text x="{x0}" y="{H - 6}">UTC, {esc(_dur(t["bucket_s"]))} buckets — decisions per bucket</text>')
    items = []
    for v in t["series"]:
        role = " (suspect)" if v == t.get("suspect_version") else (" (last-known-good)" if v == t.get("good_version")
                                                                   else "")
        items.append((f"v{v}{role}", colors[v]))
    out += _legend(items, x0 + 4, 16)
    out.append("</svg>")
    return "".join(out)


def _dur(s: float) -> str:
    return f"{s:g} s" if s < 60 else (f"{s / 60:g} min" if s < 3600 else f"{s / 3600:g} h")


def svg_performance(p: dict[str, Any]) -> str:
    """Precision and recall on labelled feedback: suspect vs last-known-good."""
    out = _svg_open("Suspect vs last-known-good: precision and recall", h=200)
    x0, y0, y1 = 56, 200 - 34, 30
    out += [s.replace(f'x2="{W - 10}"', 'x2="420"') for s in _axis_y(x0, y0, y1, 1.0, lambda v: f"{v * 100:.0f} %")]
    groups = (("precision", "precision"), ("recall", "recall"))
    gx = x0 + 20
    for key, label in groups:
        for role, color in (("suspect", SUSPECT), ("good", GOOD)):
            v = p[role][key]
            h = (y0 - y1) * (v or 0)
            out.append(f'<rect x="{gx}" y="{y0 - h:.1f}" width="60" height="{h:.1f}" fill="{color}"/>')
            out.append(f'<text x="{gx + 30}" y="{y0 - h - 4:.1f}" text-anchor="middle" style="font-weight:700">'
                       f'{esc(_pct(v))}</text>')
            gx += 64
        out.append(f'<text x="{gx - 96}" y="{y0 + 16}" text-anchor="middle">{esc(label)}</text>')
        gx += 40
    sv, gv = p["suspect"].get("version"), p["good"].get("version")
    out += _legend([(f"suspect v{sv}" if sv else "suspect", SUSPECT),
                    (f"last-known-good v{gv}" if gv else "last-known-good", GOOD)], 440, 60)
    if p.get("rows"):
        rows = f"{int(p['rows']):,}"
        out.append(f'<text x="440" y="90">on {esc(rows)} labelled</text>'
                   f'<text x="440" y="106">feedback rows</text>')
    out.append("</svg>")
    return "".join(out)


def svg_distribution(d: dict[str, Any]) -> str:
    """Reference vs current distribution of one feature (shares per bin or category)."""
    labels, ref, cur = d["labels"], d["reference"], d["current"]
    n = len(labels)
    x0, x1, y0, y1 = 56, W - 10, H - 50, 30
    vmax = max(max(ref or [0]), max(cur or [0])) or 1
    bw = (x1 - x0) / max(n, 1)
    out = _svg_open(f"Distribution of {d['column']}: reference vs current")
    out += _axis_y(x0, y0, y1, vmax, lambda v: f"{v * 100:.0f} %")
    for i in range(n):
        for j, (vals, color) in enumerate(((ref, REF), (cur, CUR))):
            h = (y0 - y1) * vals[i] / vmax
            x = x0 + i * bw + j * bw / 2 + 0.5
            out.append(f'<rect x="{x:.1f}" y="{y0 - h:.1f}" width="{max(bw / 2 - 1, 0.5):.1f}" height="{h:.1f}" '
                       f'fill="{color}"><title>{esc(labels[i])}: {esc(_pct(vals[i]))}</title></rect>')
    every = 1 if d["kind"] == "categorical" else max(1, n // 5)
    for i in range(0, n, every):
        lab = labels[i] if len(labels[i]) <= 14 else labels[i][:13] + "…"
        out.append(f'<text x="{x0 + i * bw + (bw / 2 if d["kind"] == "categorical" else 0):.1f}" y="{y0 + 16}" '
                   f'text-anchor="{"middle" if d["kind"] == "categorical" else "start"}">{esc(lab)}</text>')
    st = d.get("statistic") or {}
    stat = f" · {st.get('name')} = {st.get('value'):.3g}" if st.get("name") and st.get("value") is not None else ""
    out.append(f'<text x="{x0}" y="{H - 8}">{esc(d["column"])} ({esc(d["kind"])}){esc(stat)}</text>')
    out += _legend([("reference (trusted)", REF), ("current batch", CUR)], x0 + 4, 16)
    out.append("</svg>")
    return "".join(out)


def svg_label_rates(lr: dict[str, Any]) -> str:
    """Positive-label rate per source: reference vs current; suspect sources marked."""
    rows = lr["sources"]
    row_h = 26
    h = 40 + row_h * len(rows) + 24
    x0, x1 = 200, W - 70
    vmax = max([r["reference_rate"] or 0 for r in rows] + [r["current_rate"] or 0 for r in rows]) or 1
    out = _svg_open(f"Label rate per source ({lr.get('label') or 'label'})", h=h)
    out += _legend([("reference", REF), ("current batch", CUR)], x0, 16)
    y = 36
    for r in rows:
        name = r["source"] if len(r["source"]) <= 26 else r["source"][:25] + "…"
        mark = " ⚠ suspect" if r["suspect"] else ""
        out.append(f'<text x="{x0 - 6}" y="{y + 14}" text-anchor="end" '
                   f'style="{"font-weight:700;fill:" + SUSPECT if r["suspect"] else ""}">{esc(name)}{esc(mark)}'
                   f'<title>{esc(r["source"])}</title></text>')
        for j, (key, color) in enumerate((("reference_rate", REF), ("current_rate", CUR))):
            v = r[key]
            w = (x1 - x0) * (v or 0) / vmax
            out.append(f'<rect x="{x0}" y="{y + j * 10}" width="{w:.1f}" height="9" fill="{color}"/>')
            out.append(f'<text x="{x0 + w + 4:.1f}" y="{y + j * 10 + 9}" style="font-size:10px">{esc(_pct(v))}</text>')
        y += row_h
    out.append("</svg>")
    return "".join(out)


def render_all(charts: dict[str, Any]) -> list[dict[str, str]]:
    """``[{"id", "title", "caption", "svg"}]`` in reading order (only the charts with data)."""
    out = []
    t = charts.get("traffic")
    if t:
        out.append({"id": "traffic", "title": "Traffic by model version",
                    "caption": f"{t['total']:,} decisions from the {t.get('source') or 'decision log'}; "
                               "the dashed line marks containment.", "svg": svg_traffic(t)})
    p = charts.get("performance")
    if p:
        out.append({"id": "performance", "title": "Suspect vs last-known-good",
                    "caption": "Precision and recall on labelled feedback (triage).", "svg": svg_performance(p)})
    for d in charts.get("drift") or []:
        out.append({"id": f"drift-{d['column']}", "title": f"Drifted feature: {d['column']}",
                    "caption": "Share of rows per bin, trusted reference vs the checked batch.",
                    "svg": svg_distribution(d)})
    lr = charts.get("label_rates")
    if lr:
        out.append({"id": "label-rates", "title": "Label rate per source",
                    "caption": "Positive-label rate per data source, reference vs the checked batch.",
                    "svg": svg_label_rates(lr)})
    return out
