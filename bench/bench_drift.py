"""Benchmark: aiir's drift decision vs Evidently 0.7 DataDriftPreset on the same generated data.

    .venv/bin/python bench/bench_drift.py                 # 1,000,000 rows x 30 columns, both engines
    .venv/bin/python bench/bench_drift.py --rows 100000 --skip-evidently

Reference and current each have ``--rows`` rows and 30 columns (20 numerical: normal, lognormal, uniform,
integer counts; 10 categorical: strings with 3-40 values, two low-cardinality integers). The current batch
drifts clearly in 8 columns, slightly (below the 0.1 thresholds) in 4, not at all in the rest.

Each engine runs in its own subprocess (same deterministic data), so its peak RSS (``ru_maxrss``, which
includes the ~data itself) is measured separately. Results go to ``bench/results/drift-<UTC>.json`` and a
section "## Drift decision (bench/bench_drift.py)" in ``docs/benchmarks.md`` (replaced on each run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import replace_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "benchmarks.md"
HEADING = "## Drift decision (bench/bench_drift.py)"

DRIFTED = ["n00", "n01", "n05", "n10", "n15", "c00", "c03", "c08"]  # clear drift
SLIGHT = ["n02", "n06", "c01", "c04"]  # below the thresholds


def make_data(rows: int, seed: int, drift: bool):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    cols = {}
    # shifts in reference standard deviations (~ the normed Wasserstein distance Evidently thresholds at 0.1)
    shift = {"n00": 0.3, "n01": 0.2, "n05": 0.5, "n10": 0.25, "n15": 0.15, "n02": 0.04, "n06": 0.05}
    for i in range(20):
        name = f"n{i:02d}"
        d = shift.get(name, 0.0) if drift else 0.0
        kind = i % 4
        if kind == 0:
            cols[name] = rng.normal(10 + d * 2, 2, rows)
        elif kind == 1:  # lognormal(3, 1): a log-shift of d/0.76 moves it by ~d std
            cols[name] = rng.lognormal(3 + d / 0.76, 1, rows)
        elif kind == 2:  # uniform(0, 1): std 0.2887
            cols[name] = rng.uniform(0, 1, rows) + d * 0.2887
        else:  # Poisson(30): > 10 distinct values, numerical for both engines
            cols[name] = rng.poisson(30 + d * 30 ** 0.5, rows).astype(np.int64)
    for i in range(10):
        name = f"c{i:02d}"
        if i in (8, 9):  # integer with <= 10 distinct values: categorical for both engines
            k = 5
            p = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
            if drift and name == "c08":
                p = np.array([0.2, 0.2, 0.2, 0.2, 0.2])
            cols[name] = rng.choice(k, size=rows, p=p).astype(np.int64)
            continue
        k = (3, 5, 8, 12, 20, 40, 6, 10)[i]
        p = np.linspace(2, 1, k)
        p = p / p.sum()
        if drift and name in ("c00", "c03"):
            p = p[::-1].copy()
        if drift and name in ("c01", "c04"):
            p = p * np.linspace(0.9, 1.1, k)
            p = p / p.sum()
        values = np.array([f"{name}_v{j}" for j in range(k)], dtype=object)
        cols[name] = values[rng.choice(k, size=rows, p=p)]
    return pd.DataFrame(cols)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def worker(engine: str, rows: int, out: Path) -> None:
    """Child process: generate the data, time the drift decision, record peak RSS."""
    ref = make_data(rows, seed=1, drift=False)
    cur = make_data(rows, seed=2, drift=True)
    if engine == "ours":
        from aiir.detect.drift import drift_table
    else:
        import warnings

        warnings.simplefilter("ignore")
        from evidently import Report
        from evidently.presets import DataDriftPreset
    rss_data = rss_mb()  # data and libraries loaded: the timed part is the decision only
    peak_data = peak_mb()
    load_before = loadavg()
    t0 = time.perf_counter()
    if engine == "ours":
        table = drift_table(ref, cur)
        decisions = {r["column"]: {"test": r["test"], "statistic": r["statistic"], "drifted": r["drifted"]}
                     for r in table if r["test"]}
    else:
        snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
        decisions = {}
        for m in snapshot.dict()["metrics"]:
            cfg = m["config"]
            if not cfg["type"].endswith("ValueDrift"):
                continue
            method, thr, value = cfg["method"], cfg["threshold"], float(m["value"])
            if "p_value" in method:
                drifted = value <= thr if method.startswith("K-S") else value < thr
            else:
                drifted = value >= thr
            decisions[cfg["column"]] = {"test": method, "statistic": value, "drifted": bool(drifted)}
    seconds = time.perf_counter() - t0
    out.write_text(json.dumps({"engine": engine, "rows": rows, "seconds": seconds, "peak_rss_mb": peak_mb(),
                               "rss_after_data_mb": rss_data, "peak_rss_after_data_mb": peak_data,
                               "loadavg_before": load_before, "loadavg_after": loadavg(),
                               "decisions": decisions}))


def run_child(engine: str, rows: int) -> dict:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f".{engine}-{os.getpid()}.json"
    env = dict(os.environ, PYTHONPATH=str(REPO / "include"))
    print(f"· running {engine} on {rows:,} rows x 30 columns …", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", engine, "--rows", str(rows), "--out", str(out)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads(out.read_text())
    out.unlink()
    res["process_seconds"] = time.perf_counter() - t0
    print(f"· {engine}: {res['seconds']:.2f} s, peak RSS {res['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    return res


def machine() -> dict:
    def sh(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip("\n")
        except OSError:
            return "?"
    cpu = "?"
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1) if m else "?"
    except OSError:
        pass
    return {"date": sh(["date"]), "nproc": sh(["nproc"]), "free_h": sh(["free", "-h"]), "cpu": cpu,
            "python": platform.python_version()}


def versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("numpy", "scipy", "pandas", "evidently")}


def write_doc(result: dict) -> None:
    m, ours, ev = result["machine"], result["ours"], result.get("evidently")
    lines = [HEADING, "",
             f"Run: {m['date']} — `{' '.join(result['command'])}`",
             "",
             f"Machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}; "
             + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".",
             "", "```", m["free_h"], "```", "",
             f"Data: reference and current each {result['rows']:,} rows x 30 columns (20 numerical, 10 categorical), "
             f"generated in-process; {len(DRIFTED)} columns drift clearly, {len(SLIGHT)} slightly (below the "
             "0.1 thresholds). Time is the drift decision only (data generation excluded); peak RSS is the "
             "worker process's `ru_maxrss` and includes the two DataFrames and the imported libraries (RSS before the timed part shown apart).",
             "The machine is shared: the 1/5/15-minute load averages before and after each timed part are shown.",
             "", "| engine | drift decision | peak RSS | RSS before the decision | load avg before → after | drifted columns |",
             "|---|---|---|---|---|---|"]
    for name, r in (("aiir `drift_table`", ours), ("Evidently DataDriftPreset", ev)):
        if r:
            drifted = sorted(c for c, d in r["decisions"].items() if d["drifted"])
            lines.append(f"| {name} | {r['seconds']:.2f} s | {r['peak_rss_mb']:,.0f} MB | "
                         f"{r['rss_after_data_mb']:,.0f} MB | {r.get('loadavg_before', '?')} → "
                         f"{r.get('loadavg_after', '?')} | {len(drifted)}: {', '.join(drifted)} |")
    lines.append("")
    if ours["peak_rss_after_data_mb"] >= ours["peak_rss_mb"] - 1:
        lines += [f"aiir's peak ({ours['peak_rss_mb']:,.0f} MB) was already reached while generating the data, "
                  "before the timed decision: the decision itself adds no new peak.", ""]
    if ev:
        a = result["agreement"]
        lines += [f"Speed-up: **{result['speedup']:.1f}x** (goal >= 20x); ours peak {ours['peak_rss_mb']:,.0f} MB "
                  f"(goal <= 1,536 MB). Agreement on which columns drifted: **{a['agree']}/{a['columns']}** "
                  f"columns, same test on {a['same_test']}/{a['columns']}, largest statistic difference "
                  f"{a['max_abs_stat_diff']:.2e}" + (f"; disagreements: {a['disagree']}" if a["disagree"] else "") + "."]
    else:
        lines += ["Evidently skipped (`--skip-evidently`)."]
    lines.append("")
    section = "\n".join(lines) + "\n"
    replace_section(section)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--skip-evidently", action="store_true")
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--rewrite-doc", type=Path, metavar="RESULT_JSON",
                    help="only re-render the docs/benchmarks.md section from a saved result")
    ap.add_argument("--worker", choices=("ours", "evidently"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.rows, args.out)
        return
    if args.rewrite_doc:
        write_doc(json.loads(args.rewrite_doc.read_text()))
        return
    ours = run_child("ours", args.rows)
    ev = None if args.skip_evidently else run_child("evidently", args.rows)
    result = {"rows": args.rows, "columns": 30, "command": ["bench/bench_drift.py", *sys.argv[1:]],
              "machine": machine(), "versions": versions(), "ours": ours, "evidently": ev,
              "expected_drifted": DRIFTED, "slight": SLIGHT}
    our_drifted = sorted(c for c, d in ours["decisions"].items() if d["drifted"])
    result["ours_matches_design"] = our_drifted == sorted(DRIFTED)
    if ev:
        cols = sorted(set(ours["decisions"]) | set(ev["decisions"]))
        disagree = [c for c in cols if ours["decisions"].get(c, {}).get("drifted") != ev["decisions"].get(c, {}).get("drifted")]
        test_map = {"ks": "K-S", "chisquare": "chi-square", "z": "Z-test", "wasserstein": "Wasserstein",
                    "jensenshannon": "Jensen-Shannon"}
        same_test = sum(1 for c in cols if c in ours["decisions"] and c in ev["decisions"]
                        and ev["decisions"][c]["test"].startswith(test_map[ours["decisions"][c]["test"]]))
        diffs = [abs(ours["decisions"][c]["statistic"] - ev["decisions"][c]["statistic"])
                 for c in cols if c in ours["decisions"] and c in ev["decisions"]]
        result["agreement"] = {"columns": len(cols), "agree": len(cols) - len(disagree), "disagree": disagree,
                               "same_test": same_test, "max_abs_stat_diff": max(diffs) if diffs else None}
        result["speedup"] = ev["seconds"] / ours["seconds"]
        result["memory_ratio"] = ev["peak_rss_mb"] / ours["peak_rss_mb"]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"drift-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    if not args.no_doc:
        write_doc(result)
    summary = {k: result[k] for k in ("rows", "ours_matches_design") if k in result}
    summary.update(ours_seconds=round(ours["seconds"], 3), ours_peak_rss_mb=round(ours["peak_rss_mb"]))
    if ev:
        summary.update(evidently_seconds=round(ev["seconds"], 2), evidently_peak_rss_mb=round(ev["peak_rss_mb"]),
                       speedup=round(result["speedup"], 1), agreement=result["agreement"])
    summary["results"] = str(path)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
