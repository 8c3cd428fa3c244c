"""Recovery on the real demo store: clean set → GX validation → same-recipe candidate → gate → promote."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

MODEL = "fraud-detector"
INCIDENT = "INC-TEST-0001"


@pytest.fixture(scope="module")
def demo(poisoned_demo):
    return poisoned_demo


@pytest.fixture(scope="module")
def work(demo, tmp_path_factory):
    """Forensics output (the quarantine) and the retrain folder, clean set already built."""
    from aiir import forensics, retrain

    fdir = tmp_path_factory.mktemp("forensics")
    forensics.localise_poison(MODEL, "2", "1", fdir)
    rdir = tmp_path_factory.mktemp("retrain")
    summary = retrain.build_clean_set(MODEL, "2", fdir / "quarantine.json", rdir)
    return {"fdir": fdir, "rdir": rdir, "summary": summary}


@pytest.fixture(scope="module")
def candidate(work):
    from aiir import retrain

    return retrain.train_candidate(MODEL, "2", work["rdir"] / "clean_train.parquet", incident_id=INCIDENT,
                                   out_dir=work["rdir"])


def _data(demo: Path) -> Path:
    return demo / "data" / "fraud"


# ------------------------------------------------------------------------------------- clean set

def test_clean_set_drops_partner_feed_c_of_batch_005_only(demo, work):
    import pandas as pd

    s = work["summary"]
    d = _data(demo)
    ref = pd.read_parquet(d / "train_reference.parquet")
    b4 = pd.read_parquet(d / "batches" / "batch_004.parquet")
    b5 = pd.read_parquet(d / "batches" / "batch_005.parquet")
    poisoned = int((b5["source"] == "partner_feed_c").sum())
    assert s["rows_in"] == len(ref) + len(b4) + len(b5)
    assert s["rows_out"] == s["rows_in"] - poisoned
    assert (s["removed_by_slice"], s["removed_by_digest"]) == (poisoned, 0)

    clean = pd.read_parquet(work["rdir"] / "clean_train.parquet")
    assert len(clean) == s["rows_out"]
    assert hashlib.sha256((work["rdir"] / "clean_train.parquet").read_bytes()).hexdigest() == s["clean_sha256"]
    counts = clean.groupby(["batch", "source"]).size()
    assert ("batch_005", "partner_feed_c") not in counts.index
    # partner_feed_c's older, clean deliveries stay; batch_005's other feeds stay
    assert counts[("batch_004", "partner_feed_c")] == int((b4["source"] == "partner_feed_c").sum())
    assert counts.loc[["batch_000", "batch_001", "batch_002", "batch_003"]].sum() == len(ref)
    for src in ("core_processor", "partner_feed_a", "partner_feed_b"):
        assert counts[("batch_005", src)] == int((b5["source"] == src).sum())
    per_file = {Path(f["path"]).name: f for f in s["files"]}
    assert per_file["batch_005.parquet"]["sources"]["partner_feed_c"] == {
        "rows_in": poisoned, "rows_out": 0, "removed_by_slice": poisoned, "removed_by_digest": 0}
    assert per_file["batch_004.parquet"]["rows_out"] == len(b4)
    removed = pd.read_parquet(work["rdir"] / "quarantined_rows.parquet")
    assert len(removed) == poisoned and set(removed["source"]) == {"partner_feed_c"}


def test_clean_set_rebuild_is_byte_identical(work):
    from aiir import retrain

    rdir = work["rdir"]
    before = {p.name: p.read_bytes() for p in rdir.iterdir() if p.suffix in (".parquet",) or p.name == "clean_set.json"}
    q = json.loads((work["fdir"] / "quarantine.json").read_text())  # the dict form, as the DAG passes it
    again = retrain.build_clean_set(MODEL, "2", q, rdir)
    after = {p.name: p.read_bytes() for p in rdir.iterdir() if p.name in before}
    assert again == work["summary"]
    assert after == before


def test_clean_set_removes_quarantined_row_digests(demo, work, tmp_path):
    import pandas as pd

    from aiir import forensics, retrain

    b4 = pd.read_parquet(_data(demo) / "batches" / "batch_004.parquet")
    pick = b4.iloc[[3, 10, 500]]
    q = {"model": MODEL, "suspect_version": "2", "good_version": "1", "sources": [], "slices": [],
         "row_digests": forensics.row_digests(pick)}
    s = retrain.build_clean_set(MODEL, "2", q, tmp_path)
    assert (s["removed_by_slice"], s["removed_by_digest"]) == (0, 3)
    assert s["rows_out"] == work["summary"]["rows_in"] - 3
    per_file = {Path(f["path"]).name: f["removed_by_digest"] for f in s["files"]}
    assert per_file == {"train_reference.parquet": 0, "batch_004.parquet": 3, "batch_005.parquet": 0}


def test_clean_set_refuses_a_tampered_training_file(demo, work, tmp_path):
    import pandas as pd

    from aiir import retrain
    from aiir.errors import IntegrityError

    path = _data(demo) / "batches" / "batch_004.parquet"
    backup = tmp_path / "bak.parquet"
    shutil.copy2(path, backup)
    try:
        df = pd.read_parquet(path)
        df.loc[df.index[:50], "is_fraud"] = 0  # quietly relabel some rows
        df.to_parquet(path, index=False)
        with pytest.raises(IntegrityError, match="batch_004.parquet"):
            retrain.build_clean_set(MODEL, "2", work["fdir"] / "quarantine.json", tmp_path / "out")
    finally:
        shutil.copy2(backup, path)
    assert not (tmp_path / "out" / "clean_train.parquet").exists()


def test_clean_set_refuses_an_edited_row_digest_list(work, tmp_path):
    from aiir import retrain
    from aiir.errors import IntegrityError

    fdir = tmp_path / "fx"
    shutil.copytree(work["fdir"], fdir)
    rows = fdir / "quarantined_rows.txt"
    rows.write_text("\n".join(rows.read_text().splitlines()[:-1]) + "\n")  # drop one digest
    with pytest.raises(IntegrityError, match="quarantined_rows.txt"):
        retrain.build_clean_set(MODEL, "2", fdir / "quarantine.json", tmp_path / "out")


def test_validate_clean_set_with_great_expectations(demo, work, tmp_path):
    import pandas as pd

    from aiir import retrain

    ref = _data(demo) / "train_reference.parquet"
    res = retrain.validate_clean_set(work["rdir"] / "clean_train.parquet", ref, work["rdir"])
    assert res["success"] is True, res["failed"]
    assert res["expectations"] >= 10 and res["failed"] == []
    assert (work["rdir"] / "clean_set_validation.json").exists()
    # a broken clean set fails: unknown feed, impossible amounts
    bad = pd.read_parquet(work["rdir"] / "clean_train.parquet")
    bad.loc[bad.index[: len(bad) // 10], "amount"] = -5000.0
    bad.loc[bad.index[: len(bad) // 10], "source"] = "rogue_feed"
    bad.to_parquet(tmp_path / "bad.parquet", index=False)
    res_bad = retrain.validate_clean_set(tmp_path / "bad.parquet", ref, tmp_path)
    assert res_bad["success"] is False
    failed = {(f["type"], f["column"]) for f in res_bad["failed"]}
    assert ("expect_column_values_to_be_between", "amount") in failed
    assert ("expect_column_values_to_be_in_set", "source") in failed


# ------------------------------------------------------------------------------------- candidate

def test_candidate_same_recipe_lineage_no_alias_moved(demo, work, candidate):
    from aiir import registry

    mv = candidate
    replaced = registry.get_version(MODEL, "2")
    assert mv.version not in ("1", "2")
    assert mv.tags["aiir.recipe"] == replaced.tags["aiir.recipe"] == "fraud-hgb-v1"
    assert mv.tags["aiir.stage"] == "candidate"
    assert mv.tags["aiir.incident_id"] == INCIDENT
    assert mv.tags["aiir.retrained_from"] == "2"
    files = json.loads(mv.tags["aiir.train_files"])
    assert [f["sha256"] for f in files] == [work["summary"]["clean_sha256"]]
    run = registry.client().get_run(mv.run_id)
    assert run.inputs.dataset_inputs, "the clean set must be logged as an MLflow input"
    assert registry.resolve_alias(MODEL, "champion") == "2"  # not moved by training
    assert registry.resolve_alias(MODEL, "last-known-good") == "1"
    rec = json.loads((work["rdir"] / "candidate.json").read_text())
    assert rec["version"] == mv.version and rec["clean_sha256"] == work["summary"]["clean_sha256"]


def test_candidate_rerun_reuses_the_registered_version(work, candidate):
    from aiir import registry, retrain

    c = registry.client()
    n_before = len(c.search_model_versions(f"name='{MODEL}'"))
    again = retrain.train_candidate(MODEL, "2", work["rdir"] / "clean_train.parquet", incident_id=INCIDENT,
                                    out_dir=work["rdir"])
    assert again.version == candidate.version
    # also without candidate.json (e.g. the task died after registering): found by its tags
    moved = work["rdir"] / "candidate.json.moved"
    (work["rdir"] / "candidate.json").rename(moved)
    try:
        third = retrain.train_candidate(MODEL, "2", work["rdir"] / "clean_train.parquet", incident_id=INCIDENT,
                                        out_dir=work["rdir"])
    finally:
        if not (work["rdir"] / "candidate.json").exists():
            moved.rename(work["rdir"] / "candidate.json")
        else:
            moved.unlink()
    assert third.version == candidate.version
    assert len(c.search_model_versions(f"name='{MODEL}'")) == n_before


# ------------------------------------------------------------------------------------------ gate

def test_gate_passes_the_clean_candidate(demo, work, candidate):
    from aiir import retrain

    res = retrain.gate(MODEL, candidate.version, "1", _data(demo) / "holdout_trusted.parquet",
                       poisoned_rows_path=work["rdir"] / "quarantined_rows.parquet", out_dir=work["rdir"])
    checks = {c["name"]: c for c in res["checks"]}
    assert res["passed"] is True, res["failed"]
    assert set(checks) == {"holdout_f1", "holdout_roc_auc", "holdout_recall",
                           "poisoned_rows_vs_baseline", "poisoned_rows_vs_compromised"}
    assert res["compromised_version"] == "2"
    assert checks["poisoned_rows_vs_baseline"]["candidate"] > 0.9
    assert checks["poisoned_rows_vs_compromised"]["compromised"] < 0.1
    assert res["poisoned_rows"]["evaluated"] > 1000
    assert res["poisoned_rows"]["labelled_negative"] == res["poisoned_rows"]["evaluated"]
    assert res["poisoned_rows"]["candidate_positive_rate"] == checks["poisoned_rows_vs_baseline"]["candidate"]
    saved = json.loads((work["rdir"] / "gate.json").read_text())
    assert saved["passed"] is True and saved["checks"] == res["checks"]


def test_gate_fails_the_poisoned_model_as_candidate(demo, work, tmp_path):
    from aiir import retrain

    res = retrain.gate(MODEL, "2", "1", _data(demo) / "holdout_trusted.parquet",
                       poisoned_rows_path=work["rdir"] / "quarantined_rows.parquet", out_dir=tmp_path)
    assert res["passed"] is False
    assert {"holdout_f1", "holdout_recall", "poisoned_rows_vs_baseline"} <= set(res["failed"])
    checks = {c["name"]: c for c in res["checks"]}
    assert checks["poisoned_rows_vs_baseline"]["candidate"] < 0.1
    assert json.loads((tmp_path / "gate.json").read_text())["passed"] is False
    # named as its own compromised version, it can never be "well above" itself
    res2 = retrain.gate(MODEL, "2", "1", _data(demo) / "holdout_trusted.parquet", compromised_version="2",
                        poisoned_rows_path=work["rdir"] / "quarantined_rows.parquet", out_dir=tmp_path)
    assert "poisoned_rows_vs_compromised" in res2["failed"]


# --------------------------------------------------------------------------------------- promote

def test_promote_moves_both_aliases_logs_them_and_is_idempotent(candidate):
    from aiir import registry, retrain

    n0 = len(registry.read_alias_log())
    entries = retrain.promote(MODEL, candidate.version, incident_id=INCIDENT, reason="clean retrain passed gate",
                              actor="test-suite")
    assert [(e["alias"], e["from_version"], e["to_version"], e["changed"]) for e in entries] == [
        ("champion", "2", candidate.version, True), ("last-known-good", "1", candidate.version, True)]
    assert all(e["incident_id"] == INCIDENT and e["actor"] == "test-suite" for e in entries)
    assert registry.resolve_alias(MODEL, "champion") == candidate.version
    assert registry.resolve_alias(MODEL, "last-known-good") == candidate.version
    log = registry.verify_alias_log()
    assert len(log) == n0 + 2
    assert [(e["alias"], e["to_version"]) for e in log[-2:]] == [("champion", candidate.version),
                                                                 ("last-known-good", candidate.version)]
    again = retrain.promote(MODEL, candidate.version, incident_id=INCIDENT, reason="retry", actor="test-suite")
    assert [e["changed"] for e in again] == [False, False]
    assert len(registry.read_alias_log()) == n0 + 2
