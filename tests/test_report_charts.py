"""Report charts: the data each chart is built from, and SVG that is valid, offline and inert."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from aiir import report_charts as rc

EVIL = "<script>alert(1)</script>\"'&"
T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"


def decisions(n_before=60, n_after=40, suspect="2", good="1"):
    out = []
    for i in range(n_before):
        out.append({"ts": (T0 + timedelta(seconds=i)).isoformat(), "model_version": suspect})
    for i in range(n_after):
        out.append({"ts": (T0 + timedelta(seconds=n_before + i)).isoformat(), "model_version": good})
    return out


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg"
    for el in root.iter():
        assert el.tag.replace(SVG, "") in {"svg", "title", "style", "rect", "line", "text", "g", "path"}, el.tag
        assert not any(a.lower().startswith("on") or a.endswith("href") for a in el.attrib), el.attrib
    return root


def texts(root: ET.Element) -> str:
    return " ".join("".join(el.itertext()) for el in root.iter(f"{SVG}text"))


def test_traffic_buckets_count_every_decision_per_version():
    t = rc.traffic(decisions(), contained_at=(T0 + timedelta(seconds=60)).isoformat(), suspect_version="2",
                   good_version="1")
    assert t["total"] == 100
    assert sum(t["series"]["2"]) == 60 and sum(t["series"]["1"]) == 40
    assert t["contained_at"] == "2026-11-24T15:01:00Z"
    assert len(t["buckets"]) == len(t["series"]["1"]) <= 41
    # before the containment bucket only the suspect served
    cut = next(i for i, b in enumerate(t["buckets"]) if b >= "2026-11-24T15:01:00Z")
    assert sum(t["series"]["1"][:cut]) == 0
    root = parse(rc.svg_traffic(t))
    words = texts(root)
    assert "contained 15:01:00" in words and "v2 (suspect)" in words and "v1 (last-known-good)" in words
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert sum(int(r.find(f"{SVG}title").text.rsplit(": ", 1)[1]) for r in bars) == 100


def test_traffic_of_nothing_is_no_chart():
    assert rc.traffic([]) is None
    assert rc.traffic([{"ts": "garbage", "model_version": "1"}]) is None


def test_performance_from_triage():
    triage = {"rows": 2000, "versions": {"suspect_version": "2", "good_version": "1"},
              "suspect": {"precision": 0.43, "recall": 0.2}, "good": {"precision": 0.84, "recall": 0.71}}
    p = rc.performance(triage)
    assert p["suspect"] == {"version": "2", "precision": 0.43, "recall": 0.2}
    words = texts(parse(rc.svg_performance(p)))
    assert "43 %" in words and "84 %" in words and "suspect v2" in words and "2,000" in words
    assert rc.performance({"suspect": {}}) is None and rc.performance(None) is None


def _check_files(tmp_path: Path, feature: str = "amount", source: str = "partner_feed_c"):
    ref = pd.DataFrame({feature: [float(i % 100) for i in range(1000)], "merchant": ["a", "b"] * 500,
                        "source": ["feed_a", "feed_b"] * 500, "is_fraud": [0] * 950 + [1] * 50})
    cur = pd.DataFrame({feature: [float(50 + i % 100) for i in range(600)], "merchant": ["a", "c", "c"] * 200,
                        "source": ["feed_a"] * 300 + [source] * 300, "is_fraud": [0] * 590 + [1] * 10})
    ref.to_parquet(tmp_path / "ref.parquet")
    cur.to_parquet(tmp_path / "cur.parquet")
    return {"reference": {"path": str(tmp_path / "ref.parquet")}, "current": {"path": str(tmp_path / "cur.parquet")},
            "label_column": "is_fraud", "source_column": "source", "suspect_sources": [source],
            "drift": {"drifted": [feature, "merchant"], "table": [{"column": feature, "type": "numerical"},
                                                                   {"column": "merchant", "type": "categorical"}]}}


def test_drift_distributions_reference_vs_current(tmp_path):
    doc = _check_files(tmp_path)
    d = {x["column"]: x for x in rc.drift(doc)}
    assert set(d) == {"amount", "merchant"}
    num, cat = d["amount"], d["merchant"]
    assert num["kind"] == "numeric" and len(num["labels"]) == 20
    assert sum(num["reference"]) == pytest.approx(1, abs=1e-3) and sum(num["current"]) == pytest.approx(1, abs=1e-3)
    assert num["reference"][-1] < num["current"][-1]  # the current batch is shifted up
    assert cat["kind"] == "categorical" and cat["labels"] == ["a", "c", "b"]  # by combined share
    assert cat["reference"][1] == 0 and cat["current"][1] == pytest.approx(2 / 3, abs=1e-3)
    parse(rc.svg_distribution(num))
    parse(rc.svg_distribution(cat))


def test_label_rates_per_source_from_files(tmp_path):
    doc = _check_files(tmp_path)
    lr = rc.label_rates(doc)
    rows = {r["source"]: r for r in lr["sources"]}
    assert lr["sources"][0]["source"] == "partner_feed_c" and rows["partner_feed_c"]["suspect"]
    assert rows["feed_a"]["reference_rate"] == pytest.approx(0.05)  # even rows of 950-999: 25 of 500
    assert rows["partner_feed_c"]["current_rate"] == pytest.approx(10 / 300) and rows["partner_feed_c"]["rows"] == 300
    words = texts(parse(rc.svg_label_rates(lr)))
    assert "partner_feed_c ⚠ suspect" in words


def test_label_rates_from_findings_statistics():
    doc = {"label_column": "y", "labels": {"shift": {"per_source": {
        "s1": {"reference_rate": 0.1, "current_rate": 0.02, "rows": 10}}}}, "suspect_sources": ["s1"]}
    lr = rc.label_rates(doc)
    assert lr["sources"] == [{"source": "s1", "reference_rate": 0.1, "current_rate": 0.02, "rows": 10,
                              "suspect": True}]


def test_hostile_names_are_text_in_every_chart(tmp_path):
    doc = _check_files(tmp_path, feature=f"amount{EVIL}", source=f"feed{EVIL}")
    charts = [rc.svg_traffic(rc.traffic(decisions(suspect=f"2{EVIL}"), contained_at=T0.isoformat(),
                                        suspect_version=f"2{EVIL}"))]
    charts += [rc.svg_distribution(d) for d in rc.drift(doc) if d["column"] != "merchant"]
    charts.append(rc.svg_label_rates(rc.label_rates(doc)))
    for svg in charts:
        assert "<script" not in svg
        root = parse(svg)
        assert EVIL in "".join(root.itertext())  # shown verbatim, as text


def test_gather_never_fails_and_uses_the_preserved_decisions(tmp_path):
    w = tmp_path / "INC-1"
    w.mkdir()
    pd.DataFrame(decisions()).to_csv(w / "decisions_recent.csv", index=False)
    doc = {"incident_id": "INC-1", "target": "local:nothing-here", "versions": {"suspect_version": "2"},
           "containment": {"effective_at": (T0 + timedelta(seconds=60)).isoformat()},
           "triage": "not a dict", "check_dir": str(tmp_path / "missing"),
           "attachments": [{"path": str(tmp_path / "findings.json")}]}
    (tmp_path / "findings.json").write_text(json.dumps({"drift": {"drifted": ["x"]}, "reference": {"path": "/nope"}}))
    charts = rc.gather(doc, w)
    assert charts["traffic"]["total"] == 100 and "preserved" in charts["traffic"]["source"]
    assert "performance" not in charts and "drift" not in charts
    rendered = rc.render_all(charts)
    assert [c["id"] for c in rendered] == ["traffic"]


def test_label_rates_from_aiir_label_shift_statistics():
    """The shape aiir.detect writes: per source, the rate of every class; the positive class is charted."""
    st = {"ref_rows": 100, "cur_rows": 40, "top": {"class": 0, "ref_rate": 0.9, "cur_rate": 1.0},
          "classes": [{"class": 0, "ref_rate": 0.9, "cur_rate": 1.0}, {"class": 1, "ref_rate": 0.1, "cur_rate": 0.0}]}
    doc = {"label_column": "is_fraud", "suspect_sources": ["partner_feed_c"],
           "labels": {"shift": {"overall": st, "per_source": {"partner_feed_c": st, "core": {
               "cur_rows": 10, "classes": [{"class": 1, "ref_rate": 0.03, "cur_rate": 0.03}]}}}}}
    lr = rc.label_rates(doc)
    assert lr["reference_rate"] == 0.1
    assert lr["sources"][0] == {"source": "partner_feed_c", "reference_rate": 0.1, "current_rate": 0.0, "rows": 40,
                                "suspect": True}
    assert lr["sources"][1]["current_rate"] == 0.03
