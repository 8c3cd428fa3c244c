"""Large inputs: bounded reading ([decision] max_rows), the fast primitives giving the same answers as the
plain numpy / pandas ones, and the HTML report rendered by a second process."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aiir.detect import run_check
from aiir.detect.signals import group_counts, isin
from aiir.detect.stats import _distinct, _splitmix, quantiles
from aiir.detect.thresholds import load_thresholds
from aiir.tabular import iter_table, read_table_sample
from tests.detect.detect_data import flip_labels, make_transactions

FRAUD = {"label_column": "is_fraud", "source_column": "source", "html": False}


def test_the_default_bound_is_a_million_rows_per_side():
    assert load_thresholds()["decision"]["max_rows"] == 1_000_000


def test_fast_primitives_match_numpy_and_groupby():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 5000, 20_000).astype(np.uint64)
    b = rng.integers(2500, 9000, 7_000).astype(np.uint64)
    assert np.array_equal(isin(a, b), np.isin(a, b))
    assert not isin(a, b[:0]).any() and isin(a[:0], b).size == 0
    x = rng.lognormal(size=10_001)
    p = np.linspace(0, 1, 2001)
    assert np.array_equal(quantiles(x, p), np.quantile(x, p))
    assert _distinct(np.array([0.0, -0.0, 1.5, 1.5, 2.0])) == np.unique([0.0, -0.0, 1.5, 1.5, 2.0]).size == 3
    with np.errstate(over="ignore"):
        y = a.copy()
        y ^= y >> np.uint64(30)
        y *= np.uint64(0xBF58476D1CE4E5B9)
        y ^= y >> np.uint64(27)
        y *= np.uint64(0x94D049BB133111EB)
        y ^= y >> np.uint64(31)
        assert np.array_equal(_splitmix(a), y)
    for values in (["b", "a", None, "c", "a"], [3, 1, 2, 1, np.nan], [True, False, True],
                   pd.Categorical(["x", "y", None, "x"], categories=["y", "x", "z"])):
        s = pd.Series(values)
        mask = (np.arange(len(s)) % 2 == 0)
        expected = [(k, len(i), int(mask[i].sum()))
                    for k, i in s.to_frame("k").groupby("k", sort=True, dropna=False, observed=True).indices.items()]
        got = group_counts(s, mask)
        assert [(str(k), n, m) for k, n, m in got] == [(str(k), n, m) for k, n, m in expected]


def test_read_table_sample_is_seeded_uniform_and_bounded(tmp_path):
    df = pd.DataFrame({"i": np.arange(50_000), "s": np.where(np.arange(50_000) % 3 == 0, "a", "b"),
                       "skip": "x"})
    p = tmp_path / "big.parquet"
    df.to_parquet(p, index=False, row_group_size=7_000)
    small, rows, total = read_table_sample(p, max_rows=60_000, seed=1)
    assert rows is None and total == 50_000 and len(small) == 50_000  # under the bound: read whole
    s1, r1, total = read_table_sample(p, max_rows=5_000, seed=1, exclude=("skip",), batch_rows=4_096)
    s2, r2, _ = read_table_sample(p, max_rows=5_000, seed=1)
    assert total == 50_000 and len(s1) == 5_000 and list(s1.columns) == ["i", "s"]
    assert np.array_equal(r1, r2) and np.all(np.diff(r1) > 0)  # seeded, file order, no repeats
    assert np.array_equal(s1["i"].to_numpy(), r1)  # each sampled row is the file's row at that number
    assert 0.4 < r1.mean() / 50_000 < 0.6 and (s1["s"] == "a").mean() == pytest.approx(1 / 3, abs=0.03)
    assert sum(len(b) for b in iter_table(p, columns=["s"], batch_rows=4_096)) == 50_000


def test_check_above_max_rows_runs_on_a_disclosed_sample_with_exact_contract_counts(tmp_path):
    ref = make_transactions(12_000, seed=1)
    cur = flip_labels(make_transactions(9_000, seed=2, drift=0.3))
    cur.loc[:39, "amount"] = -5e6  # 40 rows out of the contract's range: ~4 in a 1,000-row sample
    ref.to_parquet(tmp_path / "ref.parquet", index=False)
    cur.to_parquet(tmp_path / "cur.parquet", index=False)
    t = load_thresholds()
    t["decision"]["max_rows"] = 4_000
    r = run_check(tmp_path / "ref.parquet", tmp_path / "cur.parquet", tmp_path / "out", thresholds=t, **FRAUD)
    rep = json.loads((tmp_path / "out" / "findings.json").read_text())
    assert rep["current"]["rows"] == 9_000 and rep["current"]["analysed_rows"] == 4_000
    assert rep["reference"]["rows"] == 12_000 and rep["reference"]["analysed_rows"] == 4_000
    assert "4,000-row sample of 9,000 rows" in rep["sampling"]["current"]["note"]
    assert r.summary()["sampling"]["current"]["seed"] == rep["sampling"]["current"]["seed"]
    gx = json.loads((tmp_path / "out" / "gx_validation.json").read_text())
    assert gx["meta"]["aiir"]["rows"] == 9_000
    amount = [x for x in gx["results"] if x["expectation_config"]["type"] == "expect_column_values_to_be_between"
              and x["expectation_config"]["kwargs"]["column"] == "amount"][0]
    assert amount["result"]["unexpected_count"] == 40 and amount["result"]["element_count"] == 9_000
    assert r.status == "incident"  # the flipped labels are found on the sample too
    rows = pd.read_csv(r.paths["suspect_rows"])
    assert rows["row"].max() < 9_000 and rows["row"].is_unique
    # suspect rows are numbered as in the file: the flipped (label 0) rows are there
    assert set(cur.loc[rows["row"], "is_fraud"]) <= {0, 1}


def test_check_under_max_rows_reads_everything_and_says_nothing_about_sampling(tmp_path, reference, clean_batch):
    reference.to_parquet(tmp_path / "ref.parquet", index=False)
    clean_batch.to_parquet(tmp_path / "cur.parquet", index=False)
    r = run_check(tmp_path / "ref.parquet", tmp_path / "cur.parquet", tmp_path / "out", **FRAUD)
    assert r.report["sampling"] is None and "analysed_rows" not in r.report["current"]
    assert "sampling" not in r.summary()


def test_ignored_parquet_columns_are_not_read_and_still_counted(tmp_path, reference, clean_batch):
    reference.assign(batch="b1").to_parquet(tmp_path / "ref.parquet", index=False)
    clean_batch.assign(batch="b2").to_parquet(tmp_path / "cur.parquet", index=False)
    r = run_check(tmp_path / "ref.parquet", tmp_path / "cur.parquet", tmp_path / "out", ignore_columns=["batch"],
                  **FRAUD)
    assert r.report["current"]["columns"] == clean_batch.shape[1] + 1
    assert "batch" not in json.dumps(r.report["drift"]["table"])
    from aiir.errors import BadInput

    with pytest.raises(BadInput, match="is the label or source column"):
        run_check(tmp_path / "ref.parquet", tmp_path / "cur.parquet", tmp_path / "out2",
                  ignore_columns=["is_fraud"], **FRAUD)
    with pytest.raises(BadInput, match="--ignore-column 'nope'"):
        run_check(tmp_path / "ref.parquet", tmp_path / "cur.parquet", tmp_path / "out3",
                  ignore_columns=["nope"], **FRAUD)


def test_report_process_renders_the_same_report_in_a_second_process(tmp_path, reference, clean_batch):
    from aiir.detect import html, signals
    from aiir.detect.drift import column_types

    assert html.SEED == signals.SEED
    t = load_thresholds()
    types = {c: v for c, v in column_types(reference, t).items() if v in ("numerical", "categorical")}
    proc = html.ReportProcess(reference, clean_batch, types, tmp_path / "r.html", max_rows=2000)
    info = proc.result()
    assert info["rendered_in"] == "second process" and info["sampled"] and info["current_rows"] == 2000
    page = (tmp_path / "r.html").read_text()
    assert "Content-Security-Policy" in page and "amount" in page


def test_a_clean_batch_above_max_rows_stays_clean_on_its_sample(tmp_path, reference, clean_batch):
    reference.to_parquet(tmp_path / "ref.parquet", index=False)
    clean_batch.to_parquet(tmp_path / "cur.parquet", index=False)
    t = load_thresholds()
    t["decision"]["max_rows"] = 6_000
    r = run_check(tmp_path / "ref.parquet", tmp_path / "cur.parquet", tmp_path / "out", thresholds=t, **FRAUD)
    assert r.report["current"]["analysed_rows"] == 6_000 and r.report["reference"]["rows"] == len(reference)
    assert r.status == "clean" and not r.suspect_sources


def test_contract_process_and_label_thread_give_the_same_answer_as_one_thread(tmp_path):
    """On a large batch the inferred contract is built and GX-validated by a second process and the
    label-consistency model runs in a second thread (a fresh interpreter here with the size limits lowered:
    in this one GX may already be imported, and then the check keeps it in-process): same contract.json,
    same gx_validation.json (exact counts streamed over every row included), same findings and statistics."""
    import subprocess
    import sys

    ref = make_transactions(12_000, seed=1)
    cur = flip_labels(make_transactions(9_000, seed=2, drift=0.3))
    cur.loc[:39, "amount"] = -5e6  # 40 rows out of the contract's range, counted exactly over every row
    cur.loc[100:1099, "merchant_category"] = "never_seen"
    ref.to_parquet(tmp_path / "ref.parquet", index=False)
    cur.to_parquet(tmp_path / "cur.parquet", index=False)
    t = load_thresholds()
    t["decision"]["max_rows"] = 4_000
    t["contract"]["gx_max_rows"] = 1_000
    (tmp_path / "t.json").write_text(json.dumps(t))
    code = ("import json, sys; import aiir.detect.check as c; c.REPORT_PROCESS_MIN_ROWS = 1000; "
            "c.LABEL_THREAD_MIN_ROWS = 1000; t = json.load(open(sys.argv[1])); "
            "r = c.run_check(sys.argv[2], sys.argv[3], sys.argv[4], thresholds=t, label_column='is_fraud', "
            "source_column='source', html=False); print(r.report['contract']['validated_in'])")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t.json"), str(tmp_path / "ref.parquet"),
                        str(tmp_path / "cur.parquet"), str(tmp_path / "two")], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "second process"
    one = run_check(tmp_path / "ref.parquet", tmp_path / "cur.parquet", tmp_path / "one", thresholds=t, **FRAUD)
    assert one.report["contract"]["validated_in"] == "this process"

    def read(folder, name):
        d = json.loads((tmp_path / folder / name).read_text())
        d.get("meta", {}).pop("batch_markers", None)
        (d.get("meta", {}).get("aiir") or {}).pop("inferred_at", None)
        return d

    for name in ("contract.json", "gx_validation.json"):
        assert read("two", name) == read("one", name)
    gx = read("two", "gx_validation.json")
    amount = [x for x in gx["results"] if x["expectation_config"]["type"] == "expect_column_values_to_be_between"
              and x["expectation_config"]["kwargs"]["column"] == "amount"][0]
    assert amount["result"]["unexpected_count"] == 40 and amount["result"]["element_count"] == 9_000
    two = json.loads((tmp_path / "two" / "findings.json").read_text())
    assert [f["title"] for f in two["findings"]] == [f["title"] for f in one.report["findings"]]
    assert any(f["kind"] == "schema" and "merchant_category" in f["title"] for f in two["findings"])
    assert two["status"] == one.status and two["decision"] == one.report["decision"]
    assert two["labels"] == json.loads(json.dumps(one.report["labels"]))
    assert two["suspect_rows"]["by_signal"] == one.report["suspect_rows"]["by_signal"]
    assert "label_consistency_wait" in two["timings_cpu_s"] and two["timings_cpu_s"]["label_consistency"] > 0
    assert "label_consistency_wait" not in one.report["timings_cpu_s"]


def test_row_key_levels_match_the_column_by_column_key_formula():
    """Both duplicate levels in one pass give the keys of the plain per-level formula (which forensics uses
    through near_duplicate_keys): NaN, -0.0, low-cardinality numbers, categories, int/float mixes."""
    from aiir.detect.stats import _GOLDEN, near_duplicate_keys, row_key_levels

    rng = np.random.default_rng(5)

    def frame(n):
        x = rng.normal(size=n)
        x[::17] = np.nan
        x[::23] = -0.0
        return pd.DataFrame({"x": x, "few": rng.integers(0, 4, n), "cat": rng.choice(["a", "b", None], n),
                             "f": rng.integers(0, 3, n).astype(float)})

    ref, cur = frame(3_000), frame(2_000)
    cur["few"] = cur["few"].astype(float)
    cols, num = ["x", "few", "cat", "f"], ["x", "few", "f"]

    def plain(near):
        h = np.zeros(len(ref) + len(cur), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for c in cols:
                if c in num:
                    r, k = ref[c].to_numpy(dtype=float), cur[c].to_numpy(dtype=float)
                    both = np.concatenate([r, k])
                    rf = r[np.isfinite(r)]
                    if near and np.unique(rf).size > 50:
                        edges = np.unique(np.quantile(rf, np.linspace(0, 1, 101))[1:-1])
                        code = np.searchsorted(edges, both, side="right").astype(np.uint64)
                    else:
                        both = both + 0.0
                        code = both.view(np.uint64).copy()
                    code[np.isnan(both)] = np.uint64(0xFFFFFFFFFFFFFFF1)
                else:
                    code = pd.factorize(pd.concat([ref[c], cur[c]], ignore_index=True))[0].astype(np.int64) \
                        .view(np.uint64)
                h = _splitmix(h ^ (_splitmix(code + _GOLDEN) + (h << np.uint64(6)) + (h >> np.uint64(2))))
        return h[:len(ref)], h[len(ref):]

    got = row_key_levels(ref, cur, cols, num)
    for near in (False, True):
        want = plain(near)
        for a, b in zip(got[near], want, strict=True):
            assert np.array_equal(a, b)
        for a, b in zip(near_duplicate_keys(ref, cur, cols, num, near=near), want, strict=True):
            assert np.array_equal(a, b)
    assert not np.array_equal(got[True][1], got[False][1])  # the near level did quantise x
