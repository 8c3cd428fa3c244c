"""The inline guard alone, counted in instructions (callgrind): ``Guard.observe`` replayed on clean traffic of 8
clients (fresh rows of the gateway benchmark's synthetic frame, predictions and scores of a logistic regression,
the reference profile of ``aiir serve --guard-reference``), in a process that imports only the guard. Counting
is switched on (callgrind_control) after a warm-up of ``--warm`` rows and off after ``--rows`` more, so the
figure is the guard's steady-state cost per request; it does not depend on the machine's load.

    flock /work/coord/bench.lock .venv/bin/python bench/guard_instructions.py [--rev 315f902] [--batch 1 10 64]
                                                                             [--no-grid]
"""
from __future__ import annotations

import argparse
import gc
import json
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 8


def child(data: Path, impl: str) -> int:
    """Under valgrind: replay the warm-up, then (counting on) the measured calls; a line on stdout at each
    step, a line on stdin to continue."""
    import importlib.util

    sys.path.insert(0, str(REPO / "include"))
    if impl in ("current", "current-no-grid"):
        from aiir.evasion import guard as mod
    else:
        spec = importlib.util.spec_from_file_location("guard_baseline", impl)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    d = pickle.loads(data.read_bytes())
    g = mod.guard_from_options(reference=d["profile"], thresholds=None, columns=d["columns"])
    if impl == "current-no-grid":  # the C kernel's rows, the grid bookkeeping in Python (_rows, on dicts)
        g.grid = None
        g._cur, g._prev = g._generation(), g._generation()
    # the replay's own data (every request of the run) out of the collector's way: a full collection would
    # otherwise traverse it, at moments that depend on allocation counts — noise, not the guard's cost
    gc.collect()
    gc.freeze()
    for a in d["warm"]:
        g.observe(*a)
    print("ready", flush=True)
    sys.stdin.readline()
    for a in d["measured"]:
        g.observe(*a)
    print("done", flush=True)
    sys.stdin.readline()
    print(json.dumps({"tripped": sorted(g.tripped), "rows": g.stats["rows"]}), flush=True)
    return 0


def count(data: Path, impl: str, out: Path) -> int:
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
           sys.executable, __file__, "--child", str(data), impl]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], check=True, capture_output=True)
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "done"
        subprocess.run(["callgrind_control", "-i", "off", str(p.pid)], check=True, capture_output=True)
        p.stdin.write("exit\n")
        p.stdin.flush()
        info = json.loads(p.stdout.readline())
        assert not info["tripped"], f"clean traffic tripped {info['tripped'][:5]}"
        p.wait(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    return next(int(line.split()[1]) for line in out.read_text().splitlines() if line.startswith("totals:"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="", help="also count the guard of this git revision ('' for none)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 10, 64], help="rows per request")
    ap.add_argument("--warm", type=int, default=12000,
                    help="rows before counting starts (past two generations of 4,096: the grids' steady state)")
    ap.add_argument("--rows", type=int, default=8192, help="rows counted (two generations: two rotations)")
    ap.add_argument("--impl", action="append", default=[], metavar="NAME=FILE",
                    help="also count the guard module in FILE (a copy of guard.py, e.g. a variant)")
    ap.add_argument("--no-current", action="store_true", help="do not count this checkout's guard")
    ap.add_argument("--no-grid", action="store_true",
                    help="also count this checkout's guard with the C kernel's grid() off (its rows() on)")
    ap.add_argument("--keep", action="store_true", help="keep the callgrind files (printed)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(Path(args.child[0]), args.child[1])
    sys.path.insert(0, str(REPO / "include"))
    from sklearn.linear_model import LogisticRegression

    from aiir.evasion.profile import fit_profile
    from aiir.gateway.synthetic import FEATURES, synthetic_frame

    tmp = Path(tempfile.mkdtemp(prefix="aiir-guard-instr-"))
    Xt, yt = synthetic_frame()
    prof = tmp / "profile.json"
    fit_profile(Xt[FEATURES].to_numpy(dtype=float), FEATURES).save(prof)
    model = LogisticRegression(C=0.3, max_iter=500).fit(Xt.to_numpy(), yt)
    impls = {} if args.no_current else {"current": "current"}
    if args.no_grid:
        impls["current-no-grid"] = "current-no-grid"
    for spec in args.impl:
        name, _, path = spec.partition("=")
        impls[name] = str(Path(path).resolve())
    if args.rev:
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{args.rev}:include/aiir/evasion/guard.py"],
                             capture_output=True, text=True, check=True).stdout
        (tmp / "guard_baseline.py").write_text(src)
        impls[args.rev] = str(tmp / "guard_baseline.py")
    res: dict = {}
    for batch in args.batch:
        per = -(-(args.warm + args.rows) // (CLIENTS * batch)) * batch  # rows per client
        X, _ = synthetic_frame(CLIENTS * per, seed=7)
        rows = X[FEATURES].to_numpy().round(4)
        p = model.predict_proba(rows)[:, 1]
        rows, preds, scores = rows.tolist(), (p >= 0.5).astype(int).tolist(), p.tolist()
        # client k sends rows[k * per:(k + 1) * per], the clients' requests interleaved
        calls = []
        for j in range(0, per, batch):
            for k in range(CLIENTS):
                a = k * per + j
                calls.append((f"bench-{k}", FEATURES, rows[a:a + batch], preds[a:a + batch], scores[a:a + batch],
                              [f"d{a + i}" for i in range(batch)]))
        nw = args.warm // batch
        nm = args.rows // batch
        data = tmp / f"calls-{batch}.pkl"
        data.write_bytes(pickle.dumps({"profile": str(prof), "columns": FEATURES, "warm": calls[:nw],
                                       "measured": calls[nw:nw + nm]}))
        res[batch] = {}
        for name, impl in impls.items():
            total = count(data, impl, tmp / f"{name}-{batch}.out")
            res[batch][name] = round(total / nm)
            print(f"batch {batch:>3} {name:>8}: {total / nm:,.0f} instructions per request "
                  f"({total / (nm * batch):,.0f} per row, {nm} requests)", flush=True)
    if args.keep:
        print(f"callgrind files kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
