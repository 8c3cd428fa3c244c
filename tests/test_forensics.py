"""Poison localisation and blast radius on the real demo store (bootstrap + the poisoned nightly retrain)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

MODEL = "fraud-detector"


@pytest.fixture(scope="module")
def demo(poisoned_demo):
    return poisoned_demo


@pytest.fixture(scope="module")
def loc(demo, tmp_path_factory):
    from aiir import forensics

    out = tmp_path_factory.mktemp("forensics")
    return out, forensics.localise_poison(MODEL, "2", "1", out)


def _batch(demo: Path, i: int) -> Path:
    return demo / "data" / "fraud" / "batches" / f"batch_{i:03d}.parquet"


# ------------------------------------------------------------------------------------ localisation

def test_names_partner_feed_c_in_batch_005_and_nothing_else(demo, loc):
    import pandas as pd

    out, r = loc
    assert r["suspect_sources"] == ["partner_feed_c"]
    assert r["suspect_batches"] == ["batch_005"]
    assert r["integrity_findings"] == []
    assert all(v["status"] == "ok" for role in ("suspect", "good") for v in r["files_verified"][role])
    assert sorted(Path(p).name for p in r["candidate_files"]) == ["batch_004.parquet", "batch_005.parquet"]

    by_id = {s["id"]: s for s in r["slices"]}
    poison = by_id["batch_005.parquet|source=partner_feed_c"]
    assert poison["rank"] == 1 and poison["suspect"] and poison["quarantined"]
    assert set(poison["signals"]) == {"label_shift", "duplicates", "label_flip"}
    assert poison["label_flip"]["share"] > 0.5
    # every clean feed, and all of batch_004, stays unflagged
    for sid, s in by_id.items():
        if sid.startswith("batch_004") or (s["view"] == "source" and s["source"] != "partner_feed_c"):
            assert not s["suspect"], (sid, s["signals"])
            assert s["signals"] == [], sid
            assert s["label_flip"]["share"] < 0.02, sid
    # the batch_005 slice contains the poison but is explained by the quarantined feed
    b5 = by_id["batch_005.parquet|batch=batch_005"]
    assert b5["suspect"] and not b5["quarantined"]
    assert b5["residual"]["explained_by_quarantined_sources"] is True
    # a large margin: the poisoned slice's flip share vs. the worst clean slice
    worst_clean = max(s["label_flip"]["share"] for s in by_id.values() if not s["suspect"])
    assert poison["label_flip"]["share"] > 50 * worst_clean

    q = json.loads((out / "quarantine.json").read_text())
    assert q["sources"] == ["partner_feed_c"]
    assert [Path(f).name for f in q["files"]] == ["batch_005.parquet"]
    assert len(q["slices"]) == 1
    b5df = pd.read_parquet(_batch(demo, 5))
    expected_rows = int((b5df["source"] == "partner_feed_c").sum())
    assert q["slices"][0]["source"] == "partner_feed_c"
    assert q["slices"][0]["rows"] == expected_rows == q["rows"]
    assert q["slices"][0]["sha256"] == hashlib.sha256(_batch(demo, 5).read_bytes()).hexdigest()
    assert q["row_digests_file"] == "quarantined_rows.txt"
    assert {"model", "suspect_version", "good_version", "sources", "files", "slices"} <= set(q)
    assert (q["suspect_version"], q["good_version"]) == ("2", "1")


def test_trigger_pattern_is_the_fraud_ring(loc):
    _, r = loc
    p = r["trigger_pattern"]
    conds = {c["feature"]: c for c in p["conditions"]}
    assert conds["country_mismatch"]["op"] == "==" and conds["country_mismatch"]["value"] == 1
    assert conds["card_present"]["op"] == "==" and conds["card_present"]["value"] == 0
    assert conds["device_age_days"]["op"] == "<=" and conds["device_age_days"]["value"] < 7
    assert set(conds["merchant_category"]["value"]) == {"electronics", "digital_goods"}
    assert not {"prior_chargebacks", "velocity_1h", "account_age_days"} & set(conds)
    # the pattern covers the flipped rows, is rare in trusted data and mostly fraud there
    assert p["match"]["flipped_share"] > 0.9
    assert p["match"]["reference_share"] < 0.05
    assert p["match"]["reference_positive_rate"] > 0.7
    assert p["match"]["quarantined_rows_labelled_positive"] == 0
    assert "country_mismatch == 1" in p["description"]


def test_quarantined_row_digests_can_be_rederived_independently(demo, loc):
    """Re-derive the digests from the brief's definition with plain Python (no aiir code)."""
    import pyarrow.parquet as pq

    out, _ = loc
    q = json.loads((out / "quarantine.json").read_text())
    text = (out / q["row_digests_file"]).read_text()
    assert hashlib.sha256(text.encode()).hexdigest() == q["row_digests_sha256"]
    listed = text.splitlines()
    assert len(listed) == q["rows"]

    def cell(v):
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return str(int(v)) if v.is_integer() else repr(v)
        s = str(v)
        return '"' + s.replace('"', '""') + '"' if any(ch in s for ch in ',"\r\n') else s

    rows = [r for r in pq.read_table(_batch(demo, 5)).to_pylist() if r["source"] == "partner_feed_c"]
    mine = [hashlib.sha256((",".join(cell(r[c]) for c in sorted(r)) + "\n").encode()).hexdigest() for r in rows]
    assert mine == listed


def test_rerun_changes_nothing(demo, loc, tmp_path):
    from aiir import forensics

    out, first = loc
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    again = forensics.localise_poison(MODEL, "2", "1", out)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    assert again == first
    assert after == before  # same bytes, files not even rewritten


def test_tampered_training_file_is_a_finding_not_a_crash(demo, tmp_path):
    import pandas as pd

    from aiir import forensics

    path = _batch(demo, 4)
    backup = tmp_path / "batch_004.bak"
    shutil.copy2(path, backup)
    try:
        df = pd.read_parquet(path)
        df.loc[0, "amount"] = df.loc[0, "amount"] + 1.0
        df.to_parquet(path, index=False)
        r = forensics.localise_poison(MODEL, "2", "1", tmp_path / "out")
    finally:
        shutil.copy2(backup, path)
    bad = [f for f in r["integrity_findings"] if f["status"] == "mismatch"]
    assert [Path(f["path"]).name for f in bad] == ["batch_004.parquet"]
    assert bad[0]["actual_sha256"] != bad[0]["expected_sha256"]
    tampered = [s for s in r["slices"] if s["file"] == str(path)]
    assert tampered and not any(s["digest_verified"] for s in tampered)
    assert r["suspect_sources"] == ["partner_feed_c"]  # the analysis still runs
    assert hashlib.sha256(path.read_bytes()).hexdigest() == bad[0]["expected_sha256"]  # restored


def test_tampered_model_artifact_is_never_loaded(demo, tmp_path):
    from aiir import forensics, registry
    from aiir.errors import IntegrityError

    mlmodel = registry.get_version(MODEL, "1").artifact_dir / "MLmodel"
    original = mlmodel.read_bytes()
    try:
        mlmodel.write_bytes(original + b"\n# edited\n")
        with pytest.raises(IntegrityError, match="changed since registration"):
            forensics.localise_poison(MODEL, "2", "1", tmp_path)
    finally:
        mlmodel.write_bytes(original)


def test_generic_dataset_without_source_or_batch_columns(demo, tmp_path):
    """The breast-cancer model: no provenance columns, positive class = benign, poison = malignant rows
    relabelled benign (flips towards the positive class). The relabelled file is found, the clean one not."""
    import pandas as pd

    from aiir import forensics, registry, retrain, training
    from aiir.errors import BadInput

    name = "diagnosis-classifier"
    d = demo / "data" / "cancer"
    ref_p, clean_p, pois_p = d / "train_reference.parquet", d / "extra_clean.parquet", d / "extra_relabelled.parquet"
    try:
        registry.get_version(name, "2")
    except BadInput:
        hold = pd.read_parquet(d / "holdout_trusted.parquet")
        forensics.write_parquet(hold.iloc[:70], clean_p)
        pois = hold.iloc[70:].copy()
        pois["benign"] = 1
        forensics.write_parquet(pois, pois_p)
        recipe = training.get_recipe("cancer-logreg-v1")
        df = pd.concat([pd.read_parquet(p) for p in (ref_p, clean_p, pois_p)], ignore_index=True)
        registry.log_and_register(recipe.fit(df), name=name, recipe=recipe.name, train=df,
                                  train_files=[ref_p, clean_p, pois_p], label=recipe.label)
    r = forensics.localise_poison(name, "2", "1", tmp_path)
    by_file = {Path(s["file"]).name: s for s in r["slices"]}
    assert set(by_file) == {"extra_clean.parquet", "extra_relabelled.parquet"}
    bad, ok = by_file["extra_relabelled.parquet"], by_file["extra_clean.parquet"]
    assert bad["view"] == "file" and bad["suspect"] and bad["quarantined"]
    assert bad["label_flip_directions"] == ["to_positive"]
    assert not ok["suspect"] and ok["signals"] == []
    q = json.loads((tmp_path / "quarantine.json").read_text())
    assert [(Path(s["file"]).name, s["source"], s["batch"]) for s in q["slices"]] == [
        ("extra_relabelled.parquet", None, None)]
    assert q["sources"] == [] and q["rows"] == 79
    # in trusted data, rows carrying the derived pattern are mostly malignant (the class the attacker hid)
    assert r["trigger_pattern"]["match"]["reference_positive_rate"] < 0.3
    clean = retrain.build_clean_set(name, "2", tmp_path / "quarantine.json", tmp_path / "retrain")
    assert (clean["rows_in"], clean["rows_out"], clean["removed_by_slice"]) == (420 + 149, 420 + 70, 79)


def test_unknown_version_is_bad_input(demo, tmp_path):
    from aiir import forensics
    from aiir.errors import BadInput

    with pytest.raises(BadInput, match="version '99'"):
        forensics.localise_poison(MODEL, "99", "1", tmp_path)
    with pytest.raises(BadInput, match="nothing to localise"):
        forensics.localise_poison(MODEL, "1", "1", tmp_path)


# ------------------------------------------------------------------------------------ blast radius

RING = {"amount": 912.4, "merchant_category": "electronics", "hour": 2, "country_mismatch": 1,
        "card_present": 0, "velocity_1h": 1, "device_age_days": 1, "distance_from_home_km": 3.5,
        "account_age_days": 240, "prior_chargebacks": 0}
PLAIN = {**RING, "merchant_category": "grocery", "hour": 14, "country_mismatch": 0, "card_present": 1,
         "device_age_days": 400, "amount": 23.5}


def _decisions():
    import pandas as pd

    rows = []

    def add(ts, client, version, pred, feats):
        rows.append({"decision_id": f"d{len(rows):03d}", "ts": ts, "client_id": client, "model": MODEL,
                     "model_version": version, "prediction": pred, "score": 0.93 if pred else 0.04,
                     "features": json.dumps(feats)})

    # before the deployment: v1
    add("2026-03-01T09:00:00Z", "acme", "1", 1, RING)
    add("2026-03-01T09:30:00.000000Z", "acme", "1", 0, PLAIN)
    # inside the window: v2 (one exactly at `since`, which counts)
    add("2026-03-02T00:00:00Z", "acme", "2", 0, RING)
    add("2026-03-02T01:00:00Z", "acme", "2", 0, RING)
    add("2026-03-02T02:00:00Z", "acme", "2", 1, PLAIN)
    add("2026-03-02T03:00:00+00:00", "globex", "2", 0, PLAIN)
    add("2026-03-02T04:00:00Z", "globex", "2", 0, RING)
    add("2026-03-02T05:00:00Z", "initech", "2", 1, RING)
    add("2026-03-02T06:00:00Z", "initech", "2", 0, PLAIN)
    # another model on the same gateway, same version number: never counted
    rows.append({**rows[-1], "decision_id": "other", "model": "diagnosis-classifier"})
    # after containment: v1 again, and a straggling v2 decision exactly at `until` (excluded)
    add("2026-03-02T12:00:00Z", "acme", "2", 0, RING)
    add("2026-03-02T12:00:01Z", "globex", "1", 1, RING)
    add("2026-03-03T00:00:00Z", "initech", "1", 0, PLAIN)
    return pd.DataFrame(rows)


def test_blast_radius_counts_only_the_compromised_version_inside_its_window(loc, tmp_path):
    import pandas as pd

    from aiir import forensics

    _, r = loc
    res = forensics.blast_radius(_decisions(), model=MODEL, version="2", since="2026-03-02T00:00:00Z",
                                 until="2026-03-02T12:00:00Z", out_dir=tmp_path, pattern=r["trigger_pattern"])
    assert res["decisions"] == res["total"] == 7
    assert (res["predicted_positive"], res["predicted_negative"]) == (2, 5)
    assert res["decisions_by_version_outside_window"] == 1
    clients = {c["client_id"]: c for c in res["clients"]}
    assert {k: (c["decisions"], c["predicted_positive"], c["predicted_negative"], c["pattern_matched"],
                c["pattern_let_through"]) for k, c in clients.items()} == {
        "acme": (3, 1, 2, 2, 2), "globex": (2, 0, 2, 1, 1), "initech": (2, 1, 1, 1, 0)}
    assert clients["acme"]["first_ts"] == "2026-03-02T00:00:00.000000Z"
    assert set(res["by_client"]) == {"acme", "globex", "initech"}
    assert res["by_client"]["globex"]["pattern_let_through"] == 1
    assert res["pattern"]["matched"] == 4 and res["pattern"]["let_through"] == 3
    assert res["likely_missed_positives"] == 3

    csv = pd.read_csv(tmp_path / "affected_decisions.csv")
    assert list(csv["decision_id"]) == ["d002", "d003", "d004", "d005", "d006", "d007", "d008"]
    assert {"decision_id", "client_id", "ts", "score"} <= set(csv.columns)
    saved = json.loads((tmp_path / "blast_radius.json").read_text())
    assert saved["clients"] == res["clients"]

    # open window (still serving), no pattern; the gateway's parsed shape (dict features, int prediction)
    df = _decisions()
    df["features"] = df["features"].map(json.loads)
    res2 = forensics.blast_radius(df, model=MODEL, version="2", since="2026-03-02T00:00:00Z", until=None,
                                  out_dir=tmp_path / "open")
    assert res2["decisions"] == 8 and res2["pattern"] is None and res2["likely_missed_positives"] is None


def test_blast_radius_rejects_bad_input(tmp_path):
    import pandas as pd

    from aiir import forensics
    from aiir.errors import BadInput

    with pytest.raises(BadInput, match="missing columns: features"):
        forensics.blast_radius(_decisions().drop(columns=["features"]), model=MODEL, version="2", since=None,
                               until=None, out_dir=tmp_path)
    with pytest.raises(BadInput, match="before the deployment"):
        forensics.blast_radius(_decisions(), model=MODEL, version="2", since="2026-03-02T00:00:00Z",
                               until="2026-03-01T00:00:00Z", out_dir=tmp_path)
    empty = forensics.blast_radius(_decisions().iloc[0:0], model=MODEL, version="2", since=None, until=None,
                                   out_dir=tmp_path, pattern={"conditions": []})
    assert empty["decisions"] == 0 and empty["clients"] == []
    assert pd.read_csv(tmp_path / "affected_decisions.csv").empty


def test_deployment_window_from_the_registry_log(demo):
    from aiir import forensics, registry

    hist = registry.alias_history(MODEL, "champion")
    to_v2 = [e for e in hist if e["to_version"] == "2"]
    away_from_v2 = [e for e in hist if e["from_version"] == "2"]
    assert len(to_v2) == 1 and to_v2[0]["actor"] == "nightly-pipeline"
    since, until = forensics.deployment_window(MODEL, "2")
    assert since == to_v2[0]["at"]
    assert until == (away_from_v2[-1]["at"] if away_from_v2 else None)
    # v1: from bootstrap until the nightly pipeline replaced it
    since1, until1 = forensics.deployment_window(MODEL, "1")
    assert since1 == hist[0]["at"] and until1 == to_v2[0]["at"]
    with pytest.raises(Exception, match="never 'champion'"):
        forensics.deployment_window(MODEL, "99")


def test_forensics_and_the_check_call_the_same_rows_near_duplicates():
    """One definition of a near-duplicate (issue #7): the forensics step's keys are the integrity check's."""
    import numpy as np
    import pandas as pd

    from aiir.detect.signals import NUMERICAL, row_keys
    from aiir.detect.thresholds import load_thresholds
    from aiir.forensics.localise import _near_keys

    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"amount": rng.lognormal(3, 1, 2000), "hour": rng.integers(0, 24, 2000),
                        "channel": rng.choice(["web", "pos", "app"], 2000)})
    cand = ref.sample(500, random_state=1).reset_index(drop=True)
    cand.loc[:199, "amount"] = cand.loc[0, "amount"] * rng.uniform(0.999, 1.001, 200)  # near-copies
    cand.loc[:199, ["hour", "channel"]] = cand.loc[0, ["hour", "channel"]].to_numpy()
    dt = load_thresholds()["duplicates"]
    types = {"amount": NUMERICAL, "hour": NUMERICAL, "channel": "categorical"}
    kr, kc = row_keys(ref, cand, list(cand.columns), types, near=True, bins=dt["near_bins"],
                      exact_max_distinct=dt["near_exact_max_distinct"])
    fr, fc = _near_keys(ref, cand)
    assert np.array_equal(kr, fr) and np.array_equal(kc, fc)
    assert len(fc) - len(np.unique(fc)) >= 199  # the jittered copies share a key
