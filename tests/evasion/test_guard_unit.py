"""The inline guard's streaming statistics, fed in-process with clean traffic and real HopSkipJump queries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aiir.evasion.config import load_config
from aiir.evasion.guard import _KERNEL, Guard
from aiir.evasion.profile import fit_profile
from aiir.gateway.synthetic import FEATURES
from tests.evasion import evkit


@pytest.fixture(scope="module")
def w():
    X, y, model, prof = evkit.world()
    return {"X": X, "model": model, "prof": prof, "clean": evkit.clean_traffic(model, clients=60, per_client=200),
            "single": evkit.attack_single(model, prof, X), "spread": evkit.attack_spread(model, prof, X, ids=20, seed=1)}


def feed(g: Guard, recs, cols=FEATURES):
    return [g.observe(r["client_id"], cols, [[r["features"][c] for c in cols]], [r["prediction"]], [r["score"]],
                      [r["decision_id"]]) for r in recs]


def test_clean_traffic_never_trips(w):
    g = Guard(profile=w["prof"])
    assert not any(feed(g, w["clean"])) and g.tripped == {}
    assert g.stats["rows"] == len(w["clean"])


def test_single_attacker_trips_within_50_queries_then_stays_contained(w):
    g = Guard(profile=w["prof"])
    feed(g, w["clean"][:2000])
    evs = feed(g, w["single"])
    first = next(i for i, e in enumerate(evs) if e is not None)
    assert first < 50, first
    assert all(e is not None for e in evs[first:])  # every later request is answered conservatively
    ev = evs[first]
    assert ev["client_id"] == "attacker-1" and ev["decision_ids"] and ev["reasons"]
    assert [t["client_id"] for t in g.drain_trips()] == ["attacker-1"] and g.drain_trips() == []
    preds, scores = g.conservative([0, 0, 1], [0.05, 0.3, 0.9])
    assert preds == [0, 1, 1] and scores == [None, None, None]
    g.release()
    assert g.tripped == {} and g.observe("attacker-1", FEATURES, [[1.0] * 6], [0], [0.2], ["x"]) is None


def test_spread_attacker_is_caught_through_its_cluster(w):
    g = Guard(profile=w["prof"])
    feed(g, w["clean"][:3000])
    feed(g, w["spread"])
    sybils = {r["client_id"] for r in w["spread"]}
    caught = sybils & set(g.tripped)
    assert len(caught) >= 0.8 * len(sybils), (len(caught), len(sybils))
    assert not [c for c in g.tripped if c.startswith("merchant-")]
    assert any("cluster" in g.tripped[c]["reasons"] for c in caught)


def test_exact_repeats_are_not_perturbations(w):
    g = Guard(profile=w["prof"])
    x = [float(v) for v in w["X"].to_numpy()[0]]
    for i in range(200):
        assert g.observe("replayer", FEATURES, [x], [0], [0.2], [str(i)]) is None


def test_many_features_hash_on_a_projection():
    rng = np.random.default_rng(0)
    cols = [f"f{i}" for i in range(12)]
    X = rng.normal(size=(2000, 12))
    g = Guard(profile=fit_profile(X, cols))
    for i in range(500):
        assert g.observe(f"c{i % 20}", cols, [X[i].tolist()], [0], [0.1], [str(i)]) is None
    base = X[0]
    evs = [g.observe("probe", cols, [(base + rng.normal(0, 0.005, 12)).tolist()], [i % 2], [0.5], [f"p{i}"])
           for i in range(40)]
    assert any(e is not None for e in evs[:30])


def test_without_a_profile_it_learns_the_scale_first(w):
    g = Guard()  # default warmup_rows = 500
    assert g.describe()["scaling"].startswith("learning")
    feed(g, w["clean"][:600])
    assert g.describe()["scaling"] == "learnt from traffic" and g.describe()["outlier_model"] is False
    evs = feed(g, w["single"])
    assert any(e is not None for e in evs[:60])


def test_critical_counts_only_grow_with_the_window():
    """The guard evaluates the tests only on a request that added a hit: sound because a count that is not
    significant among n queries is not significant among n + 1 either (critical counts never fall once
    reachable), and the window sums only grow by hits."""
    from aiir.evasion.config import load_config

    g = Guard(thresholds=load_config())
    for name, k in g.kmin.items():
        finite = [(n, v) for n, v in enumerate(k) if 0 < n and v <= n]
        assert finite, name
        assert all(a[1] <= b[1] for a, b in zip(finite, finite[1:], strict=False)), name
        first = finite[0][0]
        assert all(k[n] > n for n in range(1, first)), name  # before: no count can be significant


def test_grid_memory_is_two_generations_and_old_clusters_go(w):
    from aiir.evasion.config import load_config

    g = Guard(profile=w["prof"], thresholds=load_config({"guard": {"global_window": 512}}))
    assert g.gw == 512
    feed(g, w["clean"][:600])
    feed(g, w["single"][:60])  # linked queries: clusters and union-find links
    assert g.clusters
    feed(g, w["clean"][600:3000])  # > 2 horizons later
    cells = sum(len(t) for t in g._cur) + sum(len(t) for t in g._prev)
    assert cells <= 2 * 512 * 3
    assert all(cl.tripped or cl.last_seq >= g._seq - 512 for cl in g.clusters.values())
    assert all(t >= g._seq - 2 * 512 for t in g._merged_at.values())


def test_numbers_sent_as_strings_are_scored_like_numbers(w):
    a, b = Guard(profile=w["prof"]), Guard(profile=w["prof"])
    for r in w["single"][:80]:
        x = [r["features"][c] for c in FEATURES]
        ea = a.observe("p", FEATURES, [x], [r["prediction"]], [r["score"]], ["i"])
        eb = b.observe("p", FEATURES, [[str(v) for v in x]], [r["prediction"]], [r["score"]], ["i"])
        assert (ea is None) == (eb is None)
    assert a.stats == b.stats and b.stats["skipped_rows"] == 0 and b.tripped
    assert Guard(profile=w["prof"]).observe("q", FEATURES, [["x"] * 6], [0], [0.2], ["i"]) is None
    c = Guard(profile=w["prof"])
    c.observe("q", FEATURES, [[float("nan")] + [1.0] * 5], [0], [0.2], ["i"])
    assert c.stats["skipped_rows"] == 1


@pytest.mark.parametrize("batch", [1, 2, 10, 64])
def test_near_duplicates_are_found_in_cells_crowded_with_far_entries(batch):
    """The cheap rejection (nearest entry of a row's six cells at r or farther -> no near-duplicate) must not hide
    a near-duplicate that shares its cell with far entries (tuple cells and list cells, current and previous
    generation): a probe whose every query is a near-duplicate of its last one, amid far queries in the same cells,
    trips on near_dup exactly as a probe alone does."""
    cols = ["a", "b", "c"]
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, 3))
    prof = fit_profile(X, cols)

    def run(crowd: bool) -> dict:
        g = Guard(profile=prof, thresholds=load_config({"guard": {"global_window": 256}}))
        base = X[0]
        rows, k = [], 0
        for i in range(200):
            if crowd:  # far queries (0.3 sd away: same cell, not near-duplicates) of other clients, in between
                g.observe(f"other-{i % 7}", cols, [(base + rng.choice([-0.3, 0.3], 3)).tolist()], [0], [0.9],
                          [f"o{i}"])
            rows.append((base + rng.normal(0, 0.004, 3)).tolist())
            if len(rows) == batch:
                ev = g.observe("probe", cols, rows, [k % 2 for _ in rows], [0.9] * len(rows), [str(k)] * len(rows))
                k += 1
                rows = []
                if ev is not None:
                    return {"reasons": ev["reasons"], "window": ev["window"]["near_dup"], "seen": ev["queries_seen"]}
        return {}

    alone, crowded = run(False), run(True)
    assert alone and "near_dup" in alone["reasons"]
    assert "near_dup" in crowded["reasons"] and crowded["window"] >= alone["window"] > 0, (alone, crowded)
    assert crowded["seen"] == alone["seen"], (alone, crowded)


# ---------------------------------------------------------------- the numpy batch path vs the per-row path
def _norm(ev):
    if ev is None:
        return None
    e = {k: v for k, v in ev.items() if k not in ("at", "first_seen_at")}
    if e["cluster"]:
        e["cluster"] = {k: v for k, v in e["cluster"].items() if k != "cluster_id"}
    return e


def _cells(g: Guard, t: dict) -> dict:
    """A generation's cells with every entry's z as a tuple of floats (the kernel stores the same doubles as bytes;
    a -0.0 as 0.0, which compares equal)."""
    if g._zb is None:
        return dict(t)

    def entry(e):
        assert type(e[4]) is bytes and len(e[4]) == g._zb.size, e  # with the kernel, every z is bytes
        return (*e[:4], g._zb.unpack(e[4]))

    return {k: entry(v) if type(v) is tuple else [entry(e) for e in v] for k, v in t.items()}


def _state(g: Guard):
    """Everything the guard decides from: grids (cells and their entries, both generations), clusters, windows."""
    return ([_cells(g, t) for t in g._cur], [_cells(g, t) for t in g._prev], g._seq, g._gen_start,
            {k: (c.n, c.boundary, c.flip, dict(c.clients), c.tripped, c.last_seq) for k, c in g.clusters.items()},
            dict(g._parent), {k: (list(c.hits), list(c.sums), c.seen, list(c.ids)) for k, c in g.clients.items()},
            dict(g.stats), sorted(g.tripped))


_NO_KERNEL = pytest.mark.skipif(_KERNEL is None, reason="C kernel not built")


def _py(g: Guard, *, rows: bool = True) -> Guard:
    """``g`` on the Python path from its first request: the grid bookkeeping in ``Guard._rows`` on dicts, and with
    ``rows`` the rows function in Python too (without, the C kernel's rows()) — a guard as it runs without the
    kernel, or with its grid() off."""
    if rows:
        g.kernel = None
    g.grid = None
    g._cur, g._prev = g._generation(), g._generation()
    assert type(g._cur[0]) is dict
    return g


@_NO_KERNEL
def test_the_kernels_cells_are_a_dict_for_every_key_the_guard_makes_and_any_other():
    """A generation of the kernel (_guardk.Cells: its own hash table of int64 keys) against a dict under the same
    random operations: the kernel's keys (ints below 2**60), the Python paths' (integral floats: the same key as
    the int, hash(tuple) ints, negative ones), and keys it keeps in a dict of its own (past int64, non-integral
    floats, strings); growth from the smallest table; values released when it goes; deletion refused."""
    import random
    import sys
    import weakref

    from aiir.evasion import guard as gmod

    class V:  # a value that says when it is freed
        pass

    rnd = random.Random(3)
    for n in (0, 4096):
        c, d = gmod._CELLS(n), {}
        keep = V()
        refs = [weakref.ref(keep)]
        pool = ([rnd.randrange(1 << 60) for _ in range(300)] + [hash((i, -i)) for i in range(100)]
                + [-(1 << 63), (1 << 63) - 1, 0, -1, 1 << 63, -(1 << 63) - 1, 1 << 100, 2.5, "s", (1, 2)])
        for _ in range(6000):
            k = rnd.choice(pool)
            if type(k) is int and abs(k) < (1 << 53) and rnd.random() < 0.3:
                k = float(k)  # the same key as the int
            op = rnd.random()
            v = V() if rnd.random() < 0.05 else rnd.randrange(5)
            if type(v) is V:
                refs.append(weakref.ref(v))
            if op < 0.4:
                assert c.setdefault(k, v) is d.setdefault(k, v)
            elif op < 0.7:
                c[k] = d[k] = v
            elif op < 0.85:
                assert c.get(k) is d.get(k) and c.get(k, "x") is d.get(k, "x") and (k in c) == (k in d)
            else:
                assert (c[k] if k in d else None) is d.get(k)
            assert len(c) == len(d)
        assert dict(c.items()) == d and set(c.keys()) == set(d.keys())  # an int64 key comes back as an int
        assert sorted(map(id, c.values())) == sorted(map(id, d.values())) and set(c) == set(d)
        with pytest.raises(KeyError):
            c[1 << 61]
        with pytest.raises(TypeError):
            del c[pool[0]]
        with pytest.raises(TypeError):
            c.get([])  # unhashable, as dict says
        del c, d, keep, v
        assert all(r() is None for r in refs), sys.getrefcount


# numpy: the batch path; kernel: the C kernel's rows() and grid(); kernel-rows: its rows() with the grid in Python
PATHS = ["numpy", pytest.param("kernel", marks=_NO_KERNEL), pytest.param("kernel-rows", marks=_NO_KERNEL)]


def _pair(prof, cfg=None, path="numpy"):
    """a: every request through ``path`` (the numpy batch path, or the C kernel); b: every request row by row in
    Python (the generated rows function)."""
    a, b = Guard(profile=prof, thresholds=cfg), Guard(profile=prof, thresholds=cfg)
    _py(b).batch_min = 1 << 30
    if path == "numpy":
        _py(a).batch_min = 1
    else:
        assert a.kernel is not None and a.grid is not None
        a.batch_min = 1 << 30
        if path == "kernel-rows":
            _py(a, rows=False)
    return a, b


def _feed_both(a: Guard, b: Guard, recs, batch, cols=FEATURES, conv=None):
    i, out_a, out_b = 0, [], []
    while i < len(recs):
        grp = [recs[i]]
        while len(grp) < batch and i + len(grp) < len(recs) and recs[i + len(grp)]["client_id"] == recs[i]["client_id"]:
            grp.append(recs[i + len(grp)])
        i += len(grp)
        rows = [[r["features"][c] for c in cols] for r in grp]
        if conv is not None:
            rows = conv(rows)
        args = (grp[0]["client_id"], cols, rows, [r["prediction"] for r in grp], [r["score"] for r in grp],
                [r["decision_id"] for r in grp])
        out_a.append(_norm(a.observe(*args)))
        out_b.append(_norm(b.observe(*args)))
    return out_a, out_b


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("batch", [1, 2, 10, 24, 64])
@pytest.mark.parametrize("gw", [4096, 256])
def test_batch_path_decides_exactly_as_the_row_path(w, batch, gw, path):
    """Clean traffic, a single-key and a spread HopSkipJump attacker, interleaved into multi-row requests: every
    result, every grid cell and entry, cluster, union-find link and window of the numpy path is the per-row
    path's (generation drops included with global_window 256)."""
    import random

    recs = list(w["clean"][:3000])
    rng = random.Random(batch)
    for r in w["single"] + w["spread"]:
        recs.insert(rng.randrange(len(recs)), r)
    a, b = _pair(w["prof"], load_config({"guard": {"global_window": gw}}), path)
    out_a, out_b = _feed_both(a, b, recs, batch)
    assert out_a == out_b
    assert sum(e is not None for e in out_a) > 0 and a.tripped  # the attackers trip (the comparison means something)
    assert _state(a) == _state(b)


@pytest.mark.parametrize("path", PATHS)
def test_batch_path_with_a_projection_outliers_and_far_cells(path):
    """12 features (hashed on the projection), rows far out (past the key tables: the per-row function's cells),
    rows past the outlier bounds, near-duplicate probes: the same results and state."""
    rng = np.random.default_rng(5)
    cols = [f"f{i}" for i in range(12)]
    X = rng.normal(size=(3000, 12))
    a, b = _pair(fit_profile(X, cols), load_config({"guard": {"global_window": 512}}), path)
    outs = [], []
    for i in range(0, 2400, 40):
        rows = X[i:i + 40].copy()
        rows[::9] *= 6.0  # outliers (past the eigenvalue bounds)
        rows[5] *= 400.0  # far past the key tables
        if i >= 1200:
            rows[10:30] = X[0] + rng.normal(0, 0.004, (20, 12))  # a probe's near-duplicates
        rows = rows.tolist()
        args = (f"c{i % 3}", cols, rows, [j % 2 for j in range(40)], [0.5] * 40, [str(i)] * 40)
        outs[0].append(_norm(a.observe(*args)))
        outs[1].append(_norm(b.observe(*args)))
    assert outs[0] == outs[1] and a.tripped
    assert _state(a) == _state(b)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bad", ["nan", "inf", "str", "none", "short", "long", "huge", "int", "bool", "strnum"])
def test_batch_path_odd_values_match_the_row_path(w, bad, path):
    """Non-finite values, strings (numbers as strings: the row path's conversion), None, ragged rows, an int too
    large for a float, ints and bools: each request is decided as the row path decides it."""
    recs = w["clean"][:640]

    def conv(rows):
        rows = [list(r) for r in rows]
        r = rows[len(rows) // 2]
        if bad == "nan":
            r[1] = float("nan")
        elif bad == "inf":
            r[2] = -float("inf")
        elif bad == "str":
            r[0] = "x"
        elif bad == "none":
            r[0] = None
        elif bad == "short":
            del r[-1]
        elif bad == "long":
            r.append(1.0)
        elif bad == "huge":
            r[0] = 10 ** 400
        elif bad == "int":
            for row in rows:
                row[2] = int(round(row[2]))
        elif bad == "bool":
            r[0] = True
        elif bad == "strnum":
            rows = [[str(v) for v in row] for row in rows]
        return rows

    a, b = _pair(w["prof"], path=path)
    out_a, out_b = _feed_both(a, b, recs, 32, conv=conv)
    assert out_a == out_b
    assert _state(a) == _state(b)
    if bad in ("nan", "inf", "str", "none", "short", "huge"):
        assert a.stats["skipped_rows"] > 0
    else:
        assert a.stats["skipped_rows"] == 0


def test_batch_path_is_taken_from_batch_min_rows(w, monkeypatch):
    """Requests below ``batch_min`` rows go row by row, from it in numpy (the test above compares something)."""
    g = Guard(profile=w["prof"])
    _py(g)
    calls = []
    real = g._batch
    monkeypatch.setattr(g, "_batch", lambda fn, rows: calls.append(len(rows)) or real(fn, rows))
    rows = [[r["features"][c] for c in FEATURES] for r in w["clean"][:100]]
    for n in (1, g.batch_min - 1, g.batch_min, 64):
        g.observe("c", FEATURES, rows[:n], [0] * n, [0.1] * n, ["i"] * n)
    assert calls == [g.batch_min, 64]


@pytest.mark.skipif(_KERNEL is None, reason="C kernel not built")
def test_kernel_is_used_when_built_and_the_python_path_is_the_fallback(w, monkeypatch):
    """With the kernel built every scored request goes through it (one row too); with it absent (``kernel =
    None``, as without a compiler) the same requests give the same results and state."""
    g, h = Guard(profile=w["prof"]), Guard(profile=w["prof"])
    _py(h)
    calls = []
    real = g._kernel
    monkeypatch.setattr(g, "_kernel", lambda fn, rows: calls.append(len(rows)) or real(fn, rows))
    rows = [[r["features"][c] for c in FEATURES] for r in w["clean"][:100]]
    for n in (1, 10, 64):
        assert g.observe("c", FEATURES, rows[:n], [0] * n, [0.1] * n, ["i"] * n) == h.observe(
            "c", FEATURES, rows[:n], [0] * n, [0.1] * n, ["i"] * n)
    assert calls == [1, 10, 64] and _state(g) == _state(h)


def test_a_kernel_of_another_abi_is_never_called():
    """A stale build (an older checkout's .so left in the source tree) is refused: the Python path runs."""
    from types import SimpleNamespace

    from aiir.evasion import guard

    def rows(*a):
        raise AssertionError("a stale kernel was called")

    assert guard._pick_kernel(None) is None
    assert guard._pick_kernel(SimpleNamespace(rows=rows)) is None  # built before the ABI stamp
    assert guard._pick_kernel(SimpleNamespace(rows=rows, ABI=guard.KERNEL_ABI + 1)) is None
    assert guard._pick_kernel(SimpleNamespace(rows=rows, ABI=guard.KERNEL_ABI)) is rows


def test_the_kernel_is_built_where_a_c_compiler_is():
    """``make venv`` builds the optional kernel (setup.py) whenever the machine has a C compiler; a compile
    that fails there must not pass unnoticed as a slower guard with its tests skipped."""
    import shutil
    import sysconfig

    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc}): the pure-Python path is the one installed")
    from aiir.evasion import guard

    assert guard._guardk is not None, (
        "the guard's C kernel is not built: run `make venv` (pip install -e . builds include/aiir/evasion/_guardk.c)")
    assert guard._KERNEL is not None, (
        f"the built kernel speaks ABI {getattr(guard._guardk, 'ABI', None)}, this code {guard.KERNEL_ABI}: "
        "run `make venv` to rebuild it")


@pytest.mark.parametrize("d", [6, 64, 65, 70])
def test_wide_models_are_guarded_with_the_same_results_as_the_python_path(d):
    """A model with more features than the C kernel's arrays hold (64) takes the Python path instead of
    failing every request (round 9: the kernel's layout check raised ValueError out of ``observe``)."""
    from aiir.evasion import guard as gmod

    cols = [f"f{i}" for i in range(d)]
    X = np.random.default_rng(d).normal(size=(400, d))
    prof = fit_profile(X, cols)
    g, h = Guard(profile=prof), Guard(profile=prof)
    _py(h)
    rows = [[float(v) for v in r] for r in X[:40]] + [[float(v) + 1e-6 for v in X[0]]] * 8
    for n in (1, 10, 40, 48):
        ids = [f"i{j}" for j in range(n)]
        assert g.observe("c", cols, rows[:n], [0] * n, [0.1] * n, ids) == h.observe(
            "c", cols, rows[:n], [0] * n, [0.1] * n, ids)
    assert _state(g) == _state(h) and g.stats["rows"] > 0
    if gmod._KERNEL is not None:
        assert (g.kernel is not None) == (d <= gmod._guardk.MAXD) == (g.grid is not None)


# ---------------------------------------------------------------- the C kernel's grid() vs Guard._rows
@_NO_KERNEL
def test_the_c_grid_does_the_clean_rows_and_leaves_the_others_to_python(w, monkeypatch):
    """With the kernel built, grid() stores ~all clean rows (no near-duplicate candidate); ``_rows`` gets only
    the rows it stops at (a candidate, a new generation), one at a time — so the comparisons above compare the
    C bookkeeping, not Python against itself."""
    g = Guard(profile=w["prof"], thresholds=load_config({"guard": {"global_window": 512}}))
    by_python = []
    real = g._rows
    monkeypatch.setattr(g, "_rows", lambda c, client, f, p, s, now, lo=0, hi=None:
                        by_python.append((lo, hi)) or real(c, client, f, p, s, now, lo, hi))
    rows = [[r["features"][c] for c in FEATURES] for r in w["clean"][:3000]]
    for i in range(0, 3000, 10):
        g.observe(f"c{i % 7}", FEATURES, rows[i:i + 10], [0] * 10, [0.1] * 10, ["d"] * 10)
    assert g.stats["rows"] == 3000 and g._seq == 3000
    assert all(hi == lo + 1 for lo, hi in by_python)  # one row at a time
    assert 5 <= len(by_python) < 0.05 * 3000, len(by_python)  # the 5 rotations at least; few candidates


@_NO_KERNEL
@pytest.mark.parametrize("odd", ["numpy_pred", "float_pred", "dict_pred", "int_score", "none_score",
                                 "tuple_preds", "repeat", "full_cell"])
def test_the_c_grid_and_python_agree_on_odd_predictions_scores_and_cells(w, odd):
    """Predictions the grid does not compare itself (numpy ints, floats, dicts: Python's JSON form), scores
    that are not floats, a tuple of predictions (the Python path), a client repeating its exact query (the cell
    keeps one entry) and a cell filled past BUCKET: kernel + grid give the state of kernel + ``_rows``."""
    from aiir.evasion import guard as gmod

    a, b = Guard(profile=w["prof"]), Guard(profile=w["prof"])
    _py(b, rows=False)
    rows = [[r["features"][c] for c in FEATURES] for r in w["clean"][:2400]]
    for i in range(0, 2400, 8):
        req = [list(r) for r in rows[i:i + 8]]
        preds, scores = [j % 2 for j in range(8)], [0.5 + 0.01 * j for j in range(8)]
        client = f"c{i % 5}"
        if odd == "numpy_pred":
            preds[3] = np.int64(1)
        elif odd == "float_pred":
            preds[2] = 1.0
        elif odd == "dict_pred":
            preds[1] = {"label": 1}
        elif odd == "int_score":
            scores[4] = 1
        elif odd == "none_score":
            scores = [None if j % 3 else s for j, s in enumerate(scores)]
        elif odd == "tuple_preds":
            preds = tuple(preds)
        elif odd == "repeat":
            req[5] = list(req[4])  # an exact repeat within the request
            if i % 40 == 0:
                req = [list(rows[0])] * 8  # the same query again and again
        elif odd == "full_cell" and i >= 1200:
            req = [list(rows[7])] * 8  # one cell, many clients: a list past BUCKET
            client = f"c{i % 11}"
        args = (client, FEATURES, req, preds, scores, [str(i)] * 8)
        assert _norm(a.observe(*args)) == _norm(b.observe(*args))
    assert _state(a) == _state(b)
    if odd == "full_cell":
        assert max(len(v) for t in a._cur + a._prev for v in t.values() if type(v) is list) == gmod.BUCKET


@_NO_KERNEL
def test_the_c_grid_fills_a_crowded_cell_of_far_entries_as_python(w):
    """64 queries on a lattice inside one cell of grid 0, each farther than the near-duplicate radius from every
    other (no candidate: grid() stores them all), sent twice over: the cell's list is capped at BUCKET exactly
    as ``_rows`` caps it, and the whole state matches the Python bookkeeping."""
    import itertools

    from aiir.evasion import guard as gmod

    a, b = Guard(profile=w["prof"]), Guard(profile=w["prof"])
    _py(b, rows=False)
    first = [w["clean"][0]["features"][c] for c in FEATURES]
    for g in (a, b):
        g.observe("warm", FEATURES, [first], [0], [0.1], ["w"])
    d = len(FEATURES)
    assert a._proj is None and d <= 6  # the cells are on z itself (no projection)
    width = gmod.CELL * math.sqrt(a.eps2)  # a cell's width in z units
    step = 1.05 * a._r  # lattice neighbours just past the radius
    assert step < 0.8 * width
    z_base = [(x - m) * s for x, m, s in zip(first, a._meanl, a._stdinv, strict=True)]
    z0 = [width * math.floor(z / width) + 0.1 * width for z in z_base]  # near the start of grid 0's cell
    lattice = [[z0[j] + step * bit[j] for j in range(d)] for bit in itertools.product((0, 1), repeat=d)]
    rows = [[m + z / s for z, m, s in zip(p, a._meanl, a._stdinv, strict=True)] for p in lattice]
    for rep in range(2):
        for i, row in enumerate(rows):
            args = (f"lat-{(i + rep) % 9}", FEATURES, [row], [i % 2], [0.2], [f"{rep}-{i}"])
            assert _norm(a.observe(*args)) == _norm(b.observe(*args))
    assert _state(a) == _state(b)
    assert max(len(v) for v in a._cur[0].values() if type(v) is list) == gmod.BUCKET


@_NO_KERNEL
def test_the_kernel_stores_z_as_bytes_and_keeps_the_grids_out_of_the_collector(w):
    """With the kernel every stored z is one bytes object of the doubles (whichever path computed it: kernel rows,
    numbers sent as strings, rows past the key tables), and the grids (the kernel's Cells) stay untracked by the cyclic collector
    (no cycle can pass through them) even after cells became lists; a full collection then changes nothing."""
    import gc

    a, b = Guard(profile=w["prof"]), Guard(profile=w["prof"])
    _py(b)
    rows = [[r["features"][c] for c in FEATURES] for r in w["clean"][:1600]]
    for i in range(0, 1600, 16):
        req = [list(r) for r in rows[i:i + 16]]
        if i % 160 == 0:
            req = [[str(v) for v in r] for r in req]  # the Python rows function, packed
        if i % 320 == 16:
            req[0] = [1e6] * len(FEATURES)  # past the key tables: the Python function's row, packed
        req[-1] = list(req[0])  # an exact repeat: a list in its cells
        args = (f"c{i % 7}", FEATURES, req, [j % 2 for j in range(16)], [0.4] * 16, [str(i)] * 16)
        assert _norm(a.observe(*args)) == _norm(b.observe(*args))
    assert a._zb is not None and b._zb is None
    assert any(type(v) is list for t in a._cur for v in t.values())
    assert not any(gc.is_tracked(t) for t in a._cur + a._prev)
    gc.collect()
    assert _state(a) == _state(b)  # _state checks every z of a is bytes of the right size


@_NO_KERNEL
def test_a_negative_zero_is_the_same_query_as_zero_with_the_kernel():
    """z = -0.0 (a value -0.0 where the reference mean is exactly 0.0) equals 0.0 as a float; the kernel's bytes
    store it as 0.0, so a client sending both is the exact repeat the Python path sees (one entry, not two)."""
    cols = ["a", "b", "c"]
    A = np.random.default_rng(5).integers(-5, 6, size=(1000, 3)).astype(float)
    prof = fit_profile(np.vstack([A, -A]), cols)
    assert list(prof.mean) == [0.0, 0.0, 0.0]
    a, b = Guard(profile=prof), Guard(profile=prof)
    _py(b)
    for rep in range(3):
        for x in (-0.0, 0.0):
            args = ("z", cols, [[x, 1.0, 2.0]], [rep % 2], [0.3], [f"{rep}"])
            assert _norm(a.observe(*args)) == _norm(b.observe(*args))
    assert _state(a) == _state(b)
    assert sum(1 for v in a._cur[0].values() for _ in (v if type(v) is list else [v])) == 1
