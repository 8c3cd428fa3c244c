"""`aiir scan-evasion` on clean traffic from dozens of clients and on real HopSkipJump queries (ART)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aiir.errors import BadInput
from aiir.evasion import scan
from aiir.evasion.config import binom_sf, critical_counts, load_config
from aiir.knowledge import taxonomy
from tests.conftest import run_aiir
from tests.evasion import evkit


@pytest.fixture(scope="module")
def w():
    X, y, model, prof = evkit.world()
    clean = evkit.clean_traffic(model)
    single = evkit.attack_single(model, prof, X)
    spread = evkit.attack_spread(model, prof, X, ids=20, seed=1)
    return {"X": X, "model": model, "prof": prof, "clean": clean, "single": single, "spread": spread}


def test_binomial_helpers():
    assert binom_sf(0, 10, 0.1) == 1.0 and binom_sf(11, 10, 0.1) == 0.0
    assert abs(binom_sf(1, 10, 0.1) - (1 - 0.9 ** 10)) < 1e-12
    assert abs(binom_sf(600, 1000, 0.5) - __import__("scipy.stats").stats.binom.sf(599, 1000, 0.5)) < 1e-12
    k = critical_counts(64, 0.02, 1e-7, 6)
    assert k[5] == 65 and 6 <= k[20] <= 20 and k[64] >= k[20]


def test_clean_traffic_is_clean(w, tmp_path):
    res = scan.run_scan(w["clean"], tmp_path, profile=w["prof"])
    assert res.status == "clean", res.report["suspect_clients"]
    assert res.report["clients"] == 40 and res.report["clean_clients"] == 40
    assert res.report["suspect_clients"] == [] and res.report["suspect_clusters"] == []
    doc = json.loads((tmp_path / "findings.json").read_text())
    assert doc["status"] == "clean" and doc["false_alarms"]["expected_false_alarms_bound"] < 1e-3


def test_single_attacker_among_clean_clients(w, tmp_path):
    res = scan.run_scan(w["clean"] + w["single"], tmp_path, profile=w["prof"])
    assert res.status == "incident"
    sus = {s["client_id"]: s for s in res.report["suspect_clients"]}
    assert set(sus) == {"attacker-1"}
    a = sus["attacker-1"]
    assert {"near_dup", "flip"} <= set(a["reasons"]) and a["score"] > 7
    assert a["signals"]["near_dup"]["rate"] > 0.5
    attack_ids = {r["decision_id"] for r in w["single"]}
    assert a["decision_ids"] and set(a["decision_ids"]) <= attack_ids
    assert {"AML.T0043", "AML.T0015", "AML.T0040"} <= set(a["techniques"])
    ids = {t["id"] for t in res.report["atlas"]}
    assert {"AML.T0043", "AML.T0015", "AML.T0040"} <= ids and all(i in taxonomy.ATLAS_TECHNIQUES for i in ids)
    assert {o["id"] for o in res.report["owasp"]} >= {"ML01"}
    assert [f["kind"] for f in res.report["findings"]][0] == "evasion"
    csv_text = (tmp_path / "suspect_decisions.csv").read_text()
    assert "attacker-1" in csv_text and "merchant-" not in csv_text


def test_attacker_spread_over_many_ids_is_caught_by_its_cluster(w, tmp_path):
    res = scan.run_scan(w["clean"] + w["spread"], tmp_path, profile=w["prof"])
    sus = {s["client_id"] for s in res.report["suspect_clients"]}
    sybils = {r["client_id"] for r in w["spread"]}
    assert len(sus & sybils) >= 0.9 * len(sybils)
    assert not {s for s in sus if s.startswith("merchant-")}
    cl = res.report["suspect_clusters"]
    assert cl and cl[0]["n_clients"] >= 10 and set(cl[0]["clients"]) <= sybils
    assert cl[0]["signals"]["flip"]["significant"] or cl[0]["signals"]["boundary"]["significant"]


def test_no_reference_still_scans_without_the_outlier_signal(w, tmp_path):
    res = scan.run_scan(w["clean"] + w["single"], tmp_path)
    assert res.status == "incident" and res.report["profile"]["outlier_model"] is False
    assert "ood" not in res.report["suspect_clients"][0]["signals"]


def test_extraction_by_rate_and_volume(w, tmp_path):
    from aiir.gateway.synthetic import synthetic_frame

    Xs, _ = synthetic_frame(1500, seed=99)
    Xs = Xs.to_numpy() * np.random.default_rng(0).uniform(0.3, 3.0, size=Xs.shape)  # sweeping the space
    p = w["model"].predict_proba(Xs)[:, 1]
    scraper = evkit.record("scraper-9", Xs, p, evkit.T0, 0.02, "scr")  # 50 queries/s
    res = scan.run_scan(w["clean"] + scraper, tmp_path, profile=w["prof"])
    sus = {s["client_id"]: s for s in res.report["suspect_clients"]}
    assert "scraper-9" in sus and "extraction" in sus["scraper-9"]["reasons"]
    assert "AML.T0024" in sus["scraper-9"]["techniques"]
    assert {f["kind"] for f in res.report["findings"]} >= {"extraction"}
    assert "ML05" in {o["id"] for o in res.report["owasp"]}


def test_cli_exit_codes_and_reference(w, tmp_path):
    ref = tmp_path / "ref.csv"
    w["X"].assign(is_fraud=0).to_csv(ref, index=False)
    attacked = evkit.write_log(tmp_path / "attacked.db", w["clean"] + w["single"])
    r = run_aiir("scan-evasion", "--decision-log", str(attacked), "--out", str(tmp_path / "o1"),
                 "--reference", str(ref))
    assert r.returncode == 3, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "incident" and out["suspect_clients"][0]["client_id"] == "attacker-1"
    doc = json.loads((tmp_path / "o1" / "findings.json").read_text())
    assert doc["profile"]["outlier_model"] is True and "is_fraud" not in doc["features"]
    clean = evkit.write_log(tmp_path / "clean.db", w["clean"])
    r = run_aiir("scan-evasion", "--decision-log", str(clean), "--out", str(tmp_path / "o2"), "--reference", str(ref))
    assert r.returncode == 0, r.stderr
    # --since keeps only the attack window's later half of the clean traffic: still clean
    r = run_aiir("scan-evasion", "--decision-log", str(attacked), "--out", str(tmp_path / "o3"),
                 "--since", "2026-11-30T12:30:00Z")
    assert r.returncode == 0 and json.loads(r.stdout)["decisions"] < len(w["clean"])
    for args, where in ((["--decision-log", str(tmp_path / "nope.db")], "nope.db"),
                        (["--decision-log", str(clean), "--reference", str(tmp_path / "no.csv")], "no.csv"),
                        (["--decision-log", str(clean), "--since", "yesterday-ish"], "--since"),
                        ([], "--decision-log")):
        r = run_aiir("scan-evasion", *args, "--out", str(tmp_path / "bad"))
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert where in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_thresholds_override_is_validated(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text("[tests]\nalpha = 1e-3\n")
    assert load_config(p)["tests"]["alpha"] == 1e-3
    p.write_text("[tests]\nbogus = 1\n")
    with pytest.raises(BadInput, match="tests.bogus"):
        load_config(p)
    p.write_text("[guard]\naction = \"shout\"\n")
    with pytest.raises(BadInput, match="guard.action"):
        load_config(p)
    for bad, field in (("global_window = 0", "guard.global_window"), ("global_window = 5000000", "guard.global_window"),
                       ("window = 0", "guard.window")):
        p.write_text(f"[guard]\n{bad}\n")
        with pytest.raises(BadInput, match=field) as e:
            load_config(p)
        assert str(p) in str(e.value) and bad.split(" = ")[1] in str(e.value)
    p.write_text("[guard]\nglobal_window = 1000000\n")
    assert load_config(p)["guard"]["global_window"] == 1_000_000
