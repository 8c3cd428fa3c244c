"""The delayed-label signal of `aiir scan-evasion --labels`: a transfer attacker (rows crafted on a surrogate,
invisible to every input signal) is found once chargebacks label its let-through rows; clean clients with their
genuine misses, labels of unknown ids and no labels stay clean; bad label files are refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aiir.errors import BadInput
from aiir.evasion import labels as lb
from aiir.evasion import scan
from tests.conftest import run_aiir
from tests.evasion import evkit


@pytest.fixture(scope="module")
def w():
    X, y, model, prof = evkit.world()
    clean = evkit.clean_traffic(model)
    transfer, tlabels = evkit.attack_transfer(model, prof, X)
    return {"X": X, "model": model, "prof": prof, "clean": clean, "clean_labels": evkit.clean_labels(),
            "transfer": transfer, "transfer_labels": tlabels}


def test_transfer_attacker_is_missed_without_labels_and_found_with_them(w, tmp_path):
    decisions = w["clean"] + w["transfer"]
    evaded = [r["decision_id"] for r in w["transfer"][300:] if r["prediction"] == 0]
    assert len(evaded) >= 25  # the attack works: most crafted rows pass the model
    res = scan.run_scan(decisions, tmp_path / "plain", profile=w["prof"])
    assert res.status == "clean" and res.report["labels"] is None  # no input signal sees it
    res = scan.run_scan(decisions, tmp_path / "lab", profile=w["prof"],
                        labels={**w["clean_labels"], **w["transfer_labels"]})
    assert res.status == "incident"
    sus = {s["client_id"]: s for s in res.report["suspect_clients"]}
    assert set(sus) == {"transfer-1"}  # and no clean client, with all their genuine misses labelled
    t = sus["transfer-1"]
    assert "label_surprise" in t["reasons"] and t["signals"]["label_surprise"]["p_value"] <= 1e-7
    assert t["signals"]["label_surprise"]["segments_tested"] > 1  # whole window + windows (Bonferroni)
    assert {"AML.T0015", "AML.T0043"} <= set(t["techniques"])
    # the evidence: exactly the decisions the model let through that the labels marked positive
    truth = w["transfer_labels"]
    let_through_pos = [r["decision_id"] for r in w["transfer"] if r["prediction"] == 0 and truth[r["decision_id"]] == 1]
    assert t["labels"]["let_through_positive_ids"] == let_through_pos
    assert set(evaded) <= set(t["labels"]["let_through_positive_ids"])
    f = [f for f in res.report["findings"] if f["kind"] == "label_evasion"]
    assert len(f) == 1 and f[0]["sources"] == ["transfer-1"]
    assert f[0]["atlas"] == ["AML.T0015", "AML.T0043"] and f[0]["owasp"] == ["ML01"]
    assert set(evaded) <= set(f[0]["evidence"]["decision_ids"])
    info = res.report["labels"]
    assert info["matched"] == len(decisions) and info["unmatched"] == 0 and "label feed" in info["note"]
    csv_text = (tmp_path / "lab" / "suspect_decisions.csv").read_text()
    assert "let_through_positive" in csv_text.splitlines()[0] and evaded[0] in csv_text
    assert "merchant-" not in csv_text


def test_the_miss_share_test_is_computed_against_the_other_clients(w, tmp_path):
    """label_miss: the share of its labelled positives a client got through, vs the others' miss rate (the
    model misses about half of all fraud here, so this test alone is weak; label_surprise conditions on the
    score)."""
    res = scan.run_scan(w["clean"] + w["transfer"], tmp_path, profile=w["prof"],
                        labels={**w["clean_labels"], **w["transfer_labels"]})
    t = next(s for s in res.report["suspect_clients"] if s["client_id"] == "transfer-1")
    m = t["signals"]["label_miss"]
    base = t["labels"]["baseline"]
    clean_pos = [d for d in w["clean"] if w["clean_labels"][d["decision_id"]] == 1]
    assert base["others_positives"] == len(clean_pos)
    assert base["others_missed"] == sum(1 for d in clean_pos if d["prediction"] == 0)
    assert m["clean_rate"] >= base["others_miss_rate"]  # the upper posterior quantile: conservative
    assert 0.3 < base["others_miss_rate"] < 0.8


def test_clean_client_with_a_few_genuine_misses_stays_clean(w, tmp_path):
    labels = dict(w["clean_labels"])
    # merchant-000: five of its let-through decisions, the lowest-scored, turn out to be fraud (below min_misses)
    own = sorted((d for d in w["clean"] if d["client_id"] == "merchant-000" and d["prediction"] == 0),
                 key=lambda d: d["score"])
    for d in own[:5]:
        labels[d["decision_id"]] = 1
    res = scan.run_scan(w["clean"], tmp_path, profile=w["prof"], labels=labels)
    assert res.status == "clean", [(s["client_id"], s["reasons"]) for s in res.report["suspect_clients"]]
    assert res.report["labels"]["let_through_positive"] > 300  # genuine misses are everywhere; none flags
    assert res.report["false_alarms"]["tests"] > 4 * 40  # the label tests are counted in the bound


def test_labels_of_unknown_ids_are_ignored_and_counted(w, tmp_path):
    labels = {**w["clean_labels"], **{f"elsewhere-{i}": 1 for i in range(500)}}
    res = scan.run_scan(w["clean"], tmp_path, profile=w["prof"], labels=labels)
    assert res.status == "clean" and res.report["labels"]["unmatched"] == 500
    assert res.report["labels"]["matched"] == len(w["clean"])
    with pytest.raises(BadInput, match="decision_id: none of the 500 labelled decisions"):
        scan.run_scan(w["clean"], tmp_path / "x", profile=w["prof"], labels={f"elsewhere-{i}": 1 for i in range(500)})


def test_partial_labels_and_no_labels(w, tmp_path):
    # only the labels that arrived so far (a quarter of the clean traffic): still clean, tests run on fewer rows
    part = dict(list(w["clean_labels"].items())[::4])
    res = scan.run_scan(w["clean"] + w["transfer"], tmp_path / "p", profile=w["prof"], labels=part)
    assert res.status == "clean" and res.report["labels"]["matched"] == len(part)
    res = scan.run_scan(w["clean"], tmp_path / "n", profile=w["prof"])
    assert res.report["labels"] is None
    assert all(not k.startswith("label") for s in res.report["suspect_clients"] for k in s["signals"])


def test_label_values_and_predictions():
    assert lb.load_labels({"a": True, "b": "fraud", "c": "0", "d": 1.0})[0] == {"a": 1, "b": 1, "c": 0, "d": 1}
    with pytest.raises(BadInput, match="label: '2'"):
        lb.load_labels({"a": 2})
    assert [lb.is_positive(p, 1) for p in (1, True, "1", 1.0, [1], 0, False, "0", None, "x")] == \
        [True] * 5 + [False] * 5


def test_poisson_binomial_tail():
    from scipy.stats import binom

    p = np.full(50, 0.2)
    assert abs(lb.poisson_binomial_sf(15, p) - binom.sf(14, 50, 0.2)) < 1e-12
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 0.5, 3000)
    exact_ish = lb.poisson_binomial_sf(900, q)  # n*k above the exact limit: the Chernoff bound, >= the truth
    assert 0 < exact_ish <= 1.0
    assert lb.poisson_binomial_sf(0, q) == 1.0 and lb.poisson_binomial_sf(3001, q) == 0.0


def test_cli_labels_and_its_bad_input(w, tmp_path):
    import pandas as pd

    db = evkit.write_log(tmp_path / "d.db", w["clean"] + w["transfer"])
    labels = {**w["clean_labels"], **w["transfer_labels"]}
    good = tmp_path / "labels.parquet"
    pd.DataFrame({"decision_id": list(labels), "label": list(labels.values())}).to_parquet(good)
    r = run_aiir("scan-evasion", "--decision-log", str(db), "--out", str(tmp_path / "o"), "--labels", str(good))
    assert r.returncode == 3, r.stderr
    out = json.loads(r.stdout)
    assert [s["client_id"] for s in out["suspect_clients"]] == ["transfer-1"]
    r = run_aiir("scan-evasion", "--decision-log", str(db), "--out", str(tmp_path / "o0"))
    assert r.returncode == 0, r.stderr  # without labels the transfer attacker is not seen
    bad = {}
    (p := tmp_path / "nocol.csv").write_text("decision_id,chargeback\nclean0-1,1\n")
    bad["nocol"] = (p, "column 'label'")
    (p := tmp_path / "noid.csv").write_text("id,label\nclean0-1,1\n")
    bad["noid"] = (p, "column 'decision_id'")
    (p := tmp_path / "value.csv").write_text("decision_id,label\nclean0-1,maybe\n")
    bad["value"] = (p, "label: 'maybe' at row 1")
    (p := tmp_path / "unknown.csv").write_text("decision_id,label\nnot-a-decision,1\n")
    bad["unknown"] = (p, "decision_id: none of the 1 labelled decisions")
    (p := tmp_path / "both.csv").write_text("decision_id,label\nclean0-1,1\nclean0-1,0\n")
    bad["both"] = (p, "labelled both 0 and 1")
    (p := tmp_path / "labels.txt").write_text("decision_id,label\n")
    bad["suffix"] = (p, ".csv or .parquet")
    bad["missing"] = (tmp_path / "absent.csv", "labels file not found")
    (p := tmp_path / "corrupt.parquet").write_bytes(b"PAR1 not really")
    bad["corrupt"] = (p, "cannot read labels")
    for name in ("both", "suffix", "corrupt", "noid"):  # in-process (each CLI start costs ~3 s): same BadInput
        path, what = bad.pop(name)
        with pytest.raises(BadInput) as e:
            scan.scan_decision_log(db, tmp_path / f"b-{name}", labels=path)
        assert e.value.where == str(path) and what in e.value.problem, (name, e.value)
    for name, (path, what) in bad.items():
        r = run_aiir("scan-evasion", "--decision-log", str(db), "--out", str(tmp_path / f"b-{name}"),
                     "--labels", str(path))
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        err = [line for line in r.stderr.splitlines() if not line.startswith("·")]  # progress lines aside
        assert len(err) == 1 and str(path) in err[0] and what in err[0], (name, r.stderr)
        assert "Traceback" not in r.stderr


def test_labels_with_query_based_attackers_keep_them_out_of_the_baseline(w, tmp_path):
    """Probing attackers (named by the input signals) and the guard's fallback answers are left out of the
    label tests' baseline: their labelled queries say nothing about the model's misses on clean traffic. The
    transfer attacker among them is still found; no clean client is flagged."""
    single = evkit.attack_single(w["model"], w["prof"], w["X"])
    spread = evkit.attack_spread(w["model"], w["prof"], w["X"], ids=20, seed=1)
    for r in single[len(single) // 2:]:  # the guard answered the second half of attacker-1's queries
        r.update(source="gateway-guard", prediction=1)
    labels = {**w["clean_labels"], **w["transfer_labels"], **{r["decision_id"]: 1 for r in single + spread}}
    res = scan.run_scan(w["clean"] + single + spread + w["transfer"], tmp_path, profile=w["prof"], labels=labels)
    sus = {s["client_id"]: s for s in res.report["suspect_clients"]}
    assert "attacker-1" in sus and "transfer-1" in sus and not {s for s in sus if s.startswith("merchant-")}
    assert "label_surprise" in sus["transfer-1"]["reasons"]
    base = sus["transfer-1"]["labels"]["baseline"]
    clean_pos = [d for d in w["clean"] if w["clean_labels"][d["decision_id"]] == 1]
    assert base["others_positives"] == len(clean_pos)  # only the clean clients' labelled positives
    assert res.report["labels"]["guard_answered_labelled"] == len(single) - len(single) // 2
    assert res.report["suspect_clusters"] and all(not k.startswith("label") for c in res.report["suspect_clusters"]
                                                  for k in c["signals"])


def test_ensemble_adversarial_training_examples_and_refit(w):
    """harden.surrogate_examples: PGD rows crafted on local surrogates, as many as the training data's fraud
    rows, each within eps (L2, std units) of a fraud row; the refit (harden.ensemble_adversarial_retrain) flags
    more of the held-out transfer rows the attacker crafted on its own surrogate, at a clean-accuracy cost."""
    from aiir.evasion import harden

    X, model, prof = w["X"].to_numpy()[:800], w["model"], w["prof"]  # 800 of the training rows: cheap
    y = np.asarray(evkit.world()[1])[:800]
    Xs, info = harden.surrogate_examples(model, X, y, prof, eps=0.5, columns=None)
    assert abs(len(Xs) - int((y == 1).sum())) <= len(harden.SURROGATES)
    assert set(info["surrogates"]) == set(harden.SURROGATES) and all(info["surrogates"].values())
    Zs = prof.standardise(Xs)
    d = np.sqrt(((Zs[:, None, :] - prof.standardise(X[y == 1])[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
    assert d.max() <= 0.5 + 1e-3
    crafted = np.array([[r["features"][c] for c in evkit.FEATURES] for r in w["transfer"][300:]])
    hard, hinfo = harden.ensemble_adversarial_retrain(model, X, y, prof, eps=1.0, confirmed=crafted[:20])
    assert hinfo["confirmed_evasions"] == 20 and hinfo["rows"] > 0
    held = crafted[20:]
    assert hard.predict(held).mean() > model.predict(held).mean()
