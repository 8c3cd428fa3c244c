"""The real `aiir check` command: exit codes, one-line errors, JSON on stdout."""

from __future__ import annotations

import json
import subprocess

from tests.detect.detect_data import AIIR


def aiir_check(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(AIIR), "check", *args], capture_output=True, text=True, timeout=180, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("aiir: error: ") and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""


def test_missing_file(data_dir, tmp_path):
    missing = tmp_path / "nope.csv"
    proc = aiir_check("--reference", str(data_dir / "reference.parquet"), "--current", str(missing),
                      "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, str(missing), "current file not found")


def test_corrupt_parquet(data_dir, tmp_path):
    bad = tmp_path / "corrupt.parquet"
    bad.write_bytes(b"PAR1" + b"\x00garbage" * 50)
    proc = aiir_check("--reference", str(bad), "--current", str(data_dir / "clean.csv"), "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, str(bad), "cannot read reference as parquet")


def test_empty_csv(data_dir, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    proc = aiir_check("--reference", str(data_dir / "reference.parquet"), "--current", str(empty),
                      "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, str(empty), "current file is empty")


def test_unknown_label_column(data_dir, tmp_path):
    proc = aiir_check("--reference", str(data_dir / "reference.parquet"), "--current", str(data_dir / "clean.csv"),
                      "--out", str(tmp_path / "o"), "--label-column", "fraud_flag")
    assert_one_line_error(proc, "--label-column 'fraud_flag' is not a column", "reference.parquet")


def test_malformed_contract_and_thresholds(data_dir, tmp_path):
    contract = tmp_path / "contract.json"
    contract.write_text('{"expectations": [{"type": 42}]}')
    proc = aiir_check("--reference", str(data_dir / "reference.parquet"), "--current", str(data_dir / "clean.csv"),
                      "--out", str(tmp_path / "o"), "--contract", str(contract))
    assert_one_line_error(proc, str(contract), "expectation #1")
    th = tmp_path / "th.toml"
    th.write_text("[duplicates]\nnear_bins = 'many'\n")
    proc = aiir_check("--reference", str(data_dir / "reference.parquet"), "--current", str(data_dir / "clean.csv"),
                      "--out", str(tmp_path / "o"), "--thresholds", str(th))
    assert_one_line_error(proc, str(th), "near_bins must be int")


def test_clean_batch_exits_0(data_dir, tmp_path):
    out = tmp_path / "clean"  # CSV reference, Parquet batch; no label (the in-process tests cover labels)
    proc = aiir_check("--reference", str(data_dir / "small_reference.csv"), "--current",
                      str(data_dir / "small_clean.parquet"), "--out", str(out), "--source-column", "source",
                      "--no-html")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "clean" and summary["suspect_sources"] == []
    assert (out / "findings.json").exists() and (out / "contract.json").exists() and (out / "gx_validation.json").exists()
    assert not (out / "drift_report.html").exists()
    assert "· " in proc.stderr  # progress on stderr, JSON alone on stdout


def test_poisoned_batch_exits_3(data_dir, tmp_path):
    th = tmp_path / "t.toml"  # an override that only opens incidents at "critical" still opens this one
    th.write_text('[incident]\nopen_incident_at = "critical"\n')
    proc = aiir_check("--reference", str(data_dir / "reference.parquet"), "--current", str(data_dir / "flipped.parquet"),
                      "--out", str(tmp_path / "o"), "--label-column", "is_fraud", "--source-column", "source",
                      "--no-html", "--thresholds", str(th))
    assert proc.returncode == 3, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "incident" and summary["suspect_sources"] == ["partner_feed_c"]
    kinds = {(f["kind"], tuple(f["sources"])) for f in summary["findings"]}
    assert ("label_shift", ("partner_feed_c",)) in kinds and ("source_anomaly", ("partner_feed_c",)) in kinds
    doc = json.loads((tmp_path / "o" / "findings.json").read_text())
    assert doc["thresholds"]["incident"]["open_incident_at"] == "critical"
    # label flipping alone (no injected rows): no duplicate finding; the labels contradict the features
    # in partner_feed_c only
    assert "duplicates" not in {f["kind"] for f in doc["findings"]}
    groups = doc["labels"]["consistency"]["groups"]
    assert groups["partner_feed_c"]["observed_positives"] < groups["partner_feed_c"]["expected_positives"] / 3
    assert all(groups[s]["severity"] is None for s in ("bank_core", "partner_feed_a", "partner_feed_b"))


def test_ignore_column_leaves_provenance_out(tmp_path):
    """A batch-id column takes a new value in every batch by design; --ignore-column keeps it out."""
    import numpy as np
    import pandas as pd

    from tests.conftest import run_aiir

    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"x": rng.normal(size=400).round(6), "batch": ["b0"] * 400})
    cur = pd.DataFrame({"x": rng.normal(size=400).round(6), "batch": ["b9"] * 400})
    ref.to_csv(tmp_path / "ref.csv", index=False)
    cur.to_csv(tmp_path / "cur.csv", index=False)
    flagged = run_aiir("check", "--reference", str(tmp_path / "ref.csv"), "--current", str(tmp_path / "cur.csv"),
                       "--out", str(tmp_path / "a"), "--no-html")
    assert "batch" in (tmp_path / "a" / "findings.json").read_text()
    ok = run_aiir("check", "--reference", str(tmp_path / "ref.csv"), "--current", str(tmp_path / "cur.csv"),
                  "--out", str(tmp_path / "b"), "--no-html", "--ignore-column", "batch")
    assert ok.returncode == 0, ok.stderr
    assert '"batch"' not in (tmp_path / "b" / "findings.json").read_text().split('"thresholds"')[0]
    bad = run_aiir("check", "--reference", str(tmp_path / "ref.csv"), "--current", str(tmp_path / "cur.csv"),
                   "--out", str(tmp_path / "c"), "--no-html", "--ignore-column", "nope")
    assert bad.returncode == 2 and "--ignore-column 'nope'" in bad.stderr
    assert flagged.returncode in (0, 3)
