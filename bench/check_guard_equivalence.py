"""Equivalence check: this checkout's inline guard vs the guard of a git revision (default: before round 5's
hot-path rewrite) on the same traffic — every per-request result (None / trip event: reasons, window, critical
counts, queries seen, decision ids, cluster size and members), the stats and the tripped clients, for clean
traffic, single-key and spread HopSkipJump attackers (ART, in-process), interleaved, batches of 1 and 8, with and
without a reference profile, global_window 4096 and 512 (generation rotations), numbers sent as strings, a
12-feature projection layout and non-finite / non-numeric values. Cluster ids are not compared (numbering differs).

    .venv/bin/python bench/check_guard_equivalence.py [--rev 4dd7445]
"""
import argparse
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "include"))
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--rev", default="4dd7445", help="the revision whose guard is the reference")
args = ap.parse_args()
import numpy as np  # noqa: E402
from _common import module_at_revision  # noqa: E402

from aiir.evasion.config import load_config  # noqa: E402
from aiir.evasion.guard import Guard as New  # noqa: E402
from aiir.evasion.profile import fit_profile  # noqa: E402
from aiir.gateway.synthetic import FEATURES  # noqa: E402
from tests.evasion import evkit  # noqa: E402

Old = module_at_revision(args.rev, "include/aiir/evasion/guard.py", "guard_reference").Guard



def norm(ev):
    if ev is None:
        return None
    e = dict(ev)
    cl = e.pop("cluster")
    e.pop("at")
    e.pop("first_seen_at")
    if cl:
        e["cluster"] = (cl["size"], cl["boundary"], cl["flip"], cl["n_clients"], tuple(sorted(cl["clients"].items())))
    return e


def run(G, recs, batch, cfg, profile, as_str=False):
    """Feed ``recs`` (consecutive records of one client grouped up to ``batch`` rows per request)."""
    g = G(profile=profile, thresholds=cfg)
    out, i = [], 0
    while i < len(recs):
        grp = [recs[i]]
        while len(grp) < batch and i + len(grp) < len(recs) and recs[i + len(grp)]["client_id"] == recs[i]["client_id"]:
            grp.append(recs[i + len(grp)])
        i += len(grp)
        rows = [[r["features"][c] for c in FEATURES] for r in grp]
        if as_str:
            rows = [[str(v) for v in row] for row in rows]
        out.append(norm(g.observe(grp[0]["client_id"], FEATURES, rows, [r["prediction"] for r in grp],
                                  [r["score"] for r in grp], [r["decision_id"] for r in grp])))
        if g.new_trips:
            out.append(("drained", sorted(t["client_id"] for t in g.drain_trips())))
    return out, dict(g.stats), sorted(g.tripped)


def run12(G, X12, p12, cols):
    g = G(profile=p12)
    out = [norm(g.observe(f"c{i % 20}", cols, [X12[i].tolist()], [0], [0.1], [str(i)])) for i in range(600)]
    r = np.random.default_rng(1)
    out += [norm(g.observe("probe", cols, [(X12[0] + r.normal(0, 0.005, 12)).tolist()], [i % 2], [0.5], [f"p{i}"]))
            for i in range(60)]
    return out, dict(g.stats), sorted(g.tripped)


def main() -> int:
    X, y, model, prof = evkit.world()
    clean = evkit.clean_traffic(model, clients=60, per_client=200)
    single = evkit.attack_single(model, prof, X)
    spread = evkit.attack_spread(model, prof, X, ids=20, seed=1)
    single2 = evkit.attack_single(model, prof, X, client="attacker-2", seed=2)
    rng = random.Random(0)
    mixed = clean[:3000] + single + clean[3000:6000] + spread + clean[6000:9000] + single2 + clean[9000:]
    inter = list(clean[:4000])
    for r in single + spread:
        inter.insert(rng.randrange(len(inter)), r)
    cases = 0
    for name, recs in [("clean", clean), ("mixed", mixed), ("interleaved", inter)]:
        for batch in (1, 8):
            for cfg in (None, load_config({"guard": {"global_window": 512}})):
                for profile in (prof, None):
                    a, b = run(Old, recs, batch, cfg, profile), run(New, recs, batch, cfg, profile)
                    assert a == b, (name, batch, cfg is None, profile is None,
                                    [(x, y) for x, y in zip(a[0], b[0], strict=False) if x != y][:3], a[1:], b[1:])
                    cases += 1
                    print(f"{name} batch {batch} {'gw512' if cfg else 'gw4096'} "
                          f"{'profile' if profile else 'no profile'}: {len(a[0])} requests, {len(a[2])} tripped — same",
                          flush=True)
    a, b = run(Old, single[:120], 1, None, prof, as_str=True), run(New, single[:120], 1, None, prof, as_str=True)
    assert a == b
    print("numbers as strings — same", a[1])
    rng2 = np.random.default_rng(0)
    cols = [f"f{i}" for i in range(12)]
    X12 = rng2.normal(size=(2000, 12))
    p12 = fit_profile(X12, cols)
    a, b = run12(Old, X12, p12, cols), run12(New, X12, p12, cols)
    assert a == b
    print("12 features (projection) — same", a[1:])
    for bad in ([float("nan")] + [1.0] * 5, ["x"] * 6, [1.0] * 5, [float("inf")] + [1.0] * 5, [1e200] * 6):
        go, gn = Old(profile=prof), New(profile=prof)
        ro = go.observe("q", FEATURES, [bad], [0], [0.2], ["i"])
        rn = gn.observe("q", FEATURES, [bad], [0], [0.2], ["i"])
        assert norm(ro) == norm(rn) and go.stats == gn.stats, (bad, go.stats, gn.stats)
    print(f"non-finite / non-numeric values — same; {cases + 7} cases, all identical to {args.rev}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
