"""Benchmark: adversarial evasion against a real `aiir serve --guard`, attacks from ART.

One gateway (`--require-api-key --guard --guard-reference`, synthetic fraud model) while dozens of clean
clients score fresh rows concurrently, and:

  1. single-key attackers: ART HopSkipJump (decision-based, label-only) over HTTP, each evading its own
     fraud rows;
  2. spread attackers: the same attack rotating its requests over many keys (a slow attacker / sybils);
  3. a transfer attacker: labels a sample through the API, fits a surrogate, crafts white-box PGD rows on
     it (ART) and sends them.

Measured: attacking identities caught by the guard (and afterwards by `aiir scan-evasion` over the decision
log), clean clients flagged by either, queries and seconds from each attacker's first query to containment
by the guard, the playbook path (scan of the decision log + containment through the target's admin API:
the scheduled `scan_evasion` job, without Airflow's own scheduling delay), the attack's success with and
without the guard, robust accuracy before/after adversarial retraining (held-out HopSkipJump and transfer
rows crafted against the old model, and white-box PGD on fraud rows), the gate, and the canary redeploy
with its automatic rollback.

    .venv/bin/python bench/bench_evasion.py [--clean-clients 40] [--attackers 10] [--sybils 10] [--no-doc]

Writes bench/results/evasion-<UTC>.json and the "Adversarial evasion" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save_json, write_section  # noqa: E402

VENV_BIN = Path(sys.executable).parent
MODEL = "bench-evasion"
HEADING = "Adversarial evasion (bench/bench_evasion.py)"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(env, sd: Path, port: int, ref: Path, log: Path) -> subprocess.Popen:
    import httpx

    fh = open(log, "w")
    proc = subprocess.Popen([str(VENV_BIN / "aiir"), "serve", "--model", MODEL, "--port", str(port), "--state-dir",
                             str(sd), "--require-api-key", "--guard", "--guard-reference", str(ref)],
                            env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < 180:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("gateway did not start")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


class Clean(threading.Thread):
    def __init__(self, url, keys: dict[str, str], rows, rate: float):
        super().__init__(daemon=True)
        self.url, self.keys, self.rows, self.rate = url, list(keys.items()), rows, rate
        self.halt = threading.Event()
        self.sent = 0
        self.guarded = 0
        self.status: dict[int, int] = {}

    def run(self):
        import httpx

        with httpx.Client(base_url=self.url, timeout=30) as http:
            i = 0
            while not self.halt.is_set():
                _, key = self.keys[i % len(self.keys)]
                body = json.dumps({"dataframe_split": {"columns": self.cols, "data": [self.rows[i % len(self.rows)]]}})
                r = http.post("/invocations", content=body, headers={"Content-Type": "application/json",
                                                                      "X-Api-Key": key})
                self.status[r.status_code] = self.status.get(r.status_code, 0) + 1
                self.guarded += r.headers.get("x-aiir-guard") is not None
                self.sent += 1
                i += 1
                time.sleep(1.0 / self.rate)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean-clients", type=int, default=40)
    ap.add_argument("--clean-rate", type=float, default=30.0, help="clean requests per second (all clients)")
    ap.add_argument("--attackers", type=int, default=10, help="single-key HopSkipJump attackers")
    ap.add_argument("--spread", type=int, default=2, help="spread attackers")
    ap.add_argument("--sybils", type=int, default=10, help="keys per spread attacker")
    ap.add_argument("--rows", type=int, default=2, help="fraud rows each attacker evades")
    ap.add_argument("--max-iter", type=int, default=3, help="HopSkipJump iterations")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="the guard and scan parts only (no hardening, no canary), results JSON only (implies --no-doc); "
                         "e.g. --quick --attackers 3 --spread 1 --clean-clients 20")
    ap.add_argument("--doc-from", type=Path, help="only rewrite the docs section from a saved results JSON")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.quick:
        args.no_doc = True
    if args.doc_from:
        write_section(HEADING, markdown(json.loads(args.doc_from.read_text())))
        return 0

    import httpx
    import mlflow

    from aiir.evasion import attacks, harden, scan
    from aiir.evasion.profile import fit_profile
    from aiir.gateway.apikeys import KeyFile
    from aiir.gateway.synthetic import FEATURES, build_store, synthetic_frame
    from aiir.targets.local import LocalGatewayTarget

    t_start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="aiir-bench-eva-"))
    print(f"· building the MLflow store in {tmp}", file=sys.stderr)
    info = build_store(tmp / "store", MODEL)
    # the store's signing key signs the hardened version too (register_hardened, this process) and is trusted
    os.environ["AIIR_ARTIFACT_KEY"] = info["signing_key"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": info["tracking_uri"], "AIIR_HOME": str(tmp / "home"),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONWARNINGS": "ignore"}
    Xtr, ytr = synthetic_frame()  # the training data of the served versions
    ref = tmp / "reference.csv"
    Xtr.to_csv(ref, index=False)
    prof = fit_profile(Xtr.to_numpy(), FEATURES)
    Xall = Xtr.to_numpy()
    bounds = attacks.clip_bounds(prof.standardise(Xall))
    sd = tmp / "state"
    kf = KeyFile(sd)
    clean_keys = {f"merchant-{i:03d}": kf.issue(f"merchant-{i:03d}")["key"] for i in range(args.clean_clients)}
    atk_keys = {f"attacker-{i:02d}": kf.issue(f"attacker-{i:02d}")["key"] for i in range(args.attackers)}
    spread_keys = [{f"sybil{s}-{i:02d}": kf.issue(f"sybil{s}-{i:02d}")["key"] for i in range(args.sybils)}
                   for s in range(args.spread)]
    transfer_key = kf.issue("transfer-1")["key"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_gateway(env, sd, port, ref, tmp / "serve.log")
    results: dict = {}
    try:
        mlflow.set_tracking_uri(info["tracking_uri"])
        from aiir.models import load_verified

        served = load_verified(MODEL, info["aliases"]["champion"], tracking_uri=info["tracking_uri"]).raw
        Xh, yh = synthetic_frame(3000, seed=3)  # held-out rows (attack targets, evaluation)
        Xh_np = Xh.to_numpy()
        fraud_pool = Xh_np[served.predict(Xh) == 1]
        Xc, yc = synthetic_frame(6000, seed=11)
        clean = Clean(url, clean_keys, Xc.to_numpy().round(4).tolist(), args.clean_rate)
        clean.cols = FEATURES
        clean.start()
        time.sleep(2.0)
        per_attacker = []
        evaded_guarded = 0
        attacked_rows = 0
        next_row = 0

        def run_hsj(keys: list[str]):
            nonlocal next_row
            rows = fraud_pool[next_row:next_row + args.rows]
            next_row += args.rows
            oracle = attacks.HttpModel(url, FEATURES, mean=prof.mean, std=prof.std, api_keys=keys, max_queries=1500)
            Zadv = attacks.hop_skip_jump(oracle.predict, prof.standardise(rows), bounds, max_iter=args.max_iter,
                                         max_eval=100, init_eval=20, seed=next_row)
            oracle.close()
            Xadv = prof.mean + Zadv * prof.std
            return oracle.log, rows, Xadv

        print(f"· {args.attackers} single-key HopSkipJump attackers", file=sys.stderr)
        for name, key in atk_keys.items():
            log, rows, Xadv = run_hsj([key])
            c = log.containment()
            ev = int((served.predict(Xadv) == 0).sum())
            evaded_guarded += ev
            attacked_rows += len(rows)
            per_attacker.append({"attacker": name, "kind": "hsj_single", "queries": log.n, "containment": c,
                                 "evaded_rows": ev, "rows": len(rows)})
            print(f"  {name}: {log.n} queries, contained {c}", file=sys.stderr)
        print(f"· {args.spread} spread attackers over {args.sybils} keys each", file=sys.stderr)
        for s, keys in enumerate(spread_keys):
            log, rows, Xadv = run_hsj(list(keys.values()))
            c = log.containment()
            ev = int((served.predict(Xadv) == 0).sum())
            evaded_guarded += ev
            attacked_rows += len(rows)
            per_attacker.append({"attacker": f"spread-{s}", "kind": "hsj_spread", "keys": len(keys), "queries": log.n,
                                 "containment": c, "evaded_rows": ev, "rows": len(rows)})
            print(f"  spread-{s}: {log.n} queries, contained {c}", file=sys.stderr)
        print("· transfer attacker: recon through the API, surrogate, PGD, send", file=sys.stderr)
        oracle = attacks.HttpModel(url, FEATURES, mean=prof.mean, std=prof.std, api_keys=[transfer_key],
                                   rows_per_request=20)
        recon = Xc.to_numpy()[:300]
        y_recon = oracle.labels_raw(recon)
        surrogate = attacks.fit_surrogate(prof.standardise(recon), y_recon)
        tgt = fraud_pool[next_row:next_row + 40]
        Zt = attacks.transfer_attack(surrogate, prof.standardise(tgt), eps=1.5, bounds=bounds)
        Xt = prof.mean + Zt * prof.std
        oracle.rows_per_request = 1
        got = oracle.labels_raw(Xt)
        tlog = oracle.log
        oracle.close()
        t_cont = None
        for i in range(300, tlog.n):
            if tlog.guarded[i] or tlog.status[i] in (403, 429):
                t_cont = {"queries_after_recon": i - 300 + 1, "seconds": round(tlog.t[i] - tlog.t[300], 3)}
                break
        # why the transfer attacker is hard to see: the signals measured on its crafted rows vs clean traffic
        from aiir.evasion.config import load_config

        sig = load_config()["signals"]
        Zt_std = prof.standardise(Xt)
        nn = np.sqrt(((Zt_std[:, None, :] - Zt_std[None, :, :]) ** 2).mean(axis=2))
        np.fill_diagonal(nn, np.inf)
        s_t = served.predict_proba(Xt)[:, 1]
        s_c = served.predict_proba(Xc.to_numpy()[300:3300])[:, 1]
        ood_c = prof.mahalanobis2(prof.standardise(Xc.to_numpy()[300:3300])) > prof.ood_threshold
        tt = np.sort(np.asarray(tlog.t))
        why = {"crafted_ood": int((prof.mahalanobis2(Zt_std) > prof.ood_threshold).sum()),
               "clean_ood_share": round(float(ood_c.mean()), 4),
               "crafted_boundary": int((np.abs(s_t - sig["decision_threshold"]) < sig["boundary_band"]).sum()),
               "clean_boundary_share": round(float((np.abs(s_c - sig["decision_threshold"]) < sig["boundary_band"]).mean()), 4),
               "crafted_nn_rms_median": round(float(np.median(nn.min(axis=1))), 3),
               "near_dup_rms": sig["near_dup_rms"],
               "peak_queries_per_min": int((np.searchsorted(tt, tt + 60.0) - np.arange(len(tt))).max()),
               "perturbation_l2_std": round(float(np.median(np.linalg.norm(Zt_std - prof.standardise(tgt), axis=1))), 3)}
        per_attacker.append({"attacker": "transfer-1", "kind": "transfer", "queries": tlog.n, "containment": t_cont,
                             "evaded_rows_plain_model": int((served.predict(Xt) == 0).sum()),
                             "evaded_rows_as_answered": int((got == 0).sum()), "rows": len(tgt), "signals": why})
        time.sleep(1.5)
        clean.halt.set()
        clean.join(30)

        h = httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {(sd / 'admin.token').read_text().strip()}"})
        guard = h.get("/admin/guard").json()
        tripped = set(guard["tripped"])
        trips = [e for e in guard.get("events", []) if e.get("event") == "guard_trip"]
        attacking = set(atk_keys) | {k for ks in spread_keys for k in ks} | {"transfer-1"}
        caught = tripped & attacking
        kinds = {"single key": set(atk_keys), "spread over keys": {k for ks in spread_keys for k in ks},
                 "transfer": {"transfer-1"}}
        clean_flagged = sorted(t for t in tripped if t.startswith("merchant-"))
        single = [a for a in per_attacker if a["kind"] != "transfer"]
        cq = [a["containment"]["queries"] for a in single if a["containment"]]
        cs = [a["containment"]["seconds"] for a in single if a["containment"]]

        # ---- the playbook path: the scheduled scan over the decision log, then containment at the target
        h.post("/admin/flush", json={})
        target = LocalGatewayTarget(MODEL, url=url, state_dir=sd)
        h.post("/admin/restore", json={"reason": "bench: measure the playbook path from a clean slate"})
        t0 = time.perf_counter()
        res = scan.scan_target(target, tmp / "scan", reference=ref)
        t_scan = time.perf_counter() - t0
        sus = [s["client_id"] for s in res.report["suspect_clients"]]
        t1 = time.perf_counter()
        if sus:
            target.block_clients(sus, rate_limit_per_s=1.0, reason="bench: scan_evasion containment")
        t_block = time.perf_counter() - t1
        scan_caught = set(sus) & attacking
        scan_clean = sorted(s for s in sus if s.startswith("merchant-"))

        # ---- after the labels arrive: the same scan with the true label of every decision (chargebacks,
        # analyst review; days later in a real deployment: the delay is the label feed's, not the scan's)
        lab_res = _scan_with_labels(scan, target, tmp, ref, Xc.to_numpy(), yc, attacking, kinds, set(sus))

        # ---- transfer-robust hardening (also with --quick: in-process, seconds): ensemble adversarial training
        # with the crafted rows the labels confirmed (let through, labelled fraud); judged on a second wave the
        # attacker crafts with its own surrogate from other fraud rows, never seen in training
        wave2 = prof.mean + attacks.transfer_attack(surrogate, prof.standardise(fraud_pool[next_row + 40:next_row + 80]),
                                                    eps=1.5, bounds=bounds) * prof.std
        confirmed = Xt[served.predict(Xt) == 0]
        th_res = {"confirmed_rows": int(len(confirmed)), "held_out_rows": int(len(wave2)), "models": {}}
        base_m = {"clean_accuracy": float((served.predict(Xh_np) == yh).mean()),
                  "robust_accuracy_transfer": float(served.predict(wave2).mean())}
        th_res["models"]["served"] = base_m
        for e in (0.5, 1.5):
            t0 = time.perf_counter()
            m, _ = harden.ensemble_adversarial_retrain(served, Xall, ytr, prof, eps=e, confirmed=confirmed)
            aft = {"clean_accuracy": float((m.predict(Xh_np) == yh).mean()),
                   "robust_accuracy_transfer": float(m.predict(wave2).mean()), "seconds": round(time.perf_counter() - t0, 2)}
            aft["gate"] = {k: harden.gate(base_m, aft, on="transfer")[k] for k in ("passed", "gain", "clean_drop", "reasons")}
            th_res["models"][f"ensemble@{e}+confirmed"] = aft

        hz_res = canary_res = None
        if not args.quick:
            # ---- hardening: adversarial retraining, robust accuracy on held-out attacks, gate
            print("· hardening: adversarial retraining with ART PGD, held-out attacks against the old model", file=sys.stderr)
            hold = fraud_pool[200:216]
            orc = _Oracle(served, prof)
            Zh = attacks.hop_skip_jump(orc.predict, prof.standardise(hold), bounds, max_iter=5, max_eval=200, init_eval=20)
            X_hsj = prof.mean + Zh * prof.std
            held = {"hsj": (X_hsj, np.ones(len(X_hsj), int)), "transfer": (Xt, np.ones(len(Xt), int))}
            t0 = time.perf_counter()
            hard, hinfo = harden.adversarial_retrain(Xall, ytr, eps=0.5, rounds=3)
            t_train = time.perf_counter() - t0
            old_pipe = harden._pipeline(0.3).fit(Xall, ytr)  # the served recipe as a pipeline, for white-box PGD
            before = harden.robust_accuracy(served, Xh_np, yh, held_out=held)
            before.update({k: v for k, v in harden.robust_accuracy(old_pipe, Xh_np, yh, held_out={}, eps=0.5).items()
                           if k.startswith("robust_accuracy_pgd") or k == "pgd_eps"})
            after = harden.robust_accuracy(hard, Xh_np, yh, held_out=held, eps=0.5)
            g = harden.gate(before, after, on="hsj")
            version = harden.register_hardened(hard, name=MODEL, X_example=Xtr, tracking_uri=info["tracking_uri"],
                                               tags={"aiir.hardened_from": info["aliases"]["champion"]},
                                               source_version=info["aliases"]["champion"])

            # ---- canary redeploy with automatic rollback (clean traffic running)
            clean2 = Clean(url, clean_keys, Xc.to_numpy()[3000:].round(4).tolist(), args.clean_rate)
            clean2.cols = FEATURES
            clean2.start()
            h.post("/admin/restore", json={"reason": "bench: before canary"})

            def divergence(stats):
                a, b = stats.get("canary_positive_rate"), stats.get("primary_positive_rate")
                if a is not None and b is not None and stats["canary_decisions"] >= 20 and abs(a - b) > 0.25:
                    return f"canary positive rate {a:.2f} vs primary {b:.2f}"
                return None

            bad = harden.canary_redeploy(target, info["versions"][2], share=0.3, observe_s=4, check=divergence)
            good = harden.canary_redeploy(target, version, share=0.3, observe_s=4, check=divergence)
            clean2.halt.set()
            clean2.join(30)
            target.close()
            hz_res = {"info": hinfo, "train_seconds": round(t_train, 2), "before": before, "after": after,
                      "gate": g, "hardened_version": version}
            canary_res = {"bad_version": {k: bad[k] for k in ("outcome", "version", "problem", "stats", "seconds")},
                          "hardened_version": {k: good[k] for k in ("outcome", "version", "problem", "stats", "seconds")}}
        else:
            target.close()
        results = {
            "benchmark": "evasion", "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "params": vars(args),
            "clean": {"clients": args.clean_clients, "requests": clean.sent, "guard_answered": clean.guarded,
                      "status": clean.status},
            "guard": {"attacking_identities": len(attacking), "caught": len(caught),
                      "caught_share": round(len(caught) / len(attacking), 4),
                      "missed": sorted(attacking - caught),
                      "by_kind": {k: {"caught": len(ids & caught), "of": len(ids)} for k, ids in kinds.items()},
                      "clean_flagged": clean_flagged, "clean_flagged_share": len(clean_flagged) / args.clean_clients,
                      "containment_queries": {"median": statistics.median(cq) if cq else None, "max": max(cq) if cq else None,
                                              "all": cq},
                      "containment_seconds": {"median": statistics.median(cs) if cs else None, "max": max(cs) if cs else None},
                      "attacked_rows": attacked_rows, "evaded_rows_through_guard": evaded_guarded,
                      "stats": guard["stats"],
                      # the gateway's own clock: trip -> containment in the routing, and -> durable
                      "in_force_after_trip_s": _spread([e["containment"]["in_force_after_trip_s"] for e in trips
                                                        if e.get("containment", {}).get("in_force_after_trip_s")
                                                        is not None]),
                      "persisted_after_trip_s": _spread([e["containment"]["persisted_after_trip_s"] for e in trips
                                                         if e.get("containment", {}).get("persisted_after_trip_s")
                                                         is not None]),
                      "in_force_on_serving_path": sum(1 for e in trips
                                                      if e.get("containment", {}).get("in_force") == "serving_path"),
                      "trips": len(trips)},
            "attackers": per_attacker,
            "scan": {"caught": len(scan_caught), "caught_share": round(len(scan_caught) / len(attacking), 4),
                     "by_kind": {k: {"caught": len(ids & scan_caught), "of": len(ids)} for k, ids in kinds.items()},
                     "missed": sorted(attacking - scan_caught), "clean_flagged": scan_clean,
                     "decisions": res.report["decisions"], "scan_seconds": round(t_scan, 3),
                     "contain_seconds": round(t_block, 3), "status": res.status},
            "scan_labels": lab_res,
            "hardening": hz_res, "canary": canary_res, "transfer_hardening": th_res,
            "seconds": round(time.time() - t_start, 1),
        }
        # the same attacks without the guard, in-process, for the baseline attack success
        orc = _Oracle(served, prof)
        base_rows = fraud_pool[:args.attackers * args.rows]
        Zb = attacks.hop_skip_jump(orc.predict, prof.standardise(base_rows), bounds, max_iter=args.max_iter,
                                   max_eval=100, init_eval=20)
        results["baseline_without_guard"] = {
            "rows": len(base_rows), "evaded_rows": int((served.predict(prof.mean + Zb * prof.std) == 0).sum()),
            "queries": len(orc.q), "queries_per_row": round(len(orc.q) / len(base_rows), 1),
            "boundary_share": round(float(np.mean([abs(s - 0.5) < 0.1 for s in orc.q])), 3)}
    finally:
        stop(proc)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    out = save_json(f"evasion-{datetime.now(UTC):%Y%m%dT%H%M%SZ}", results)
    if not args.no_doc:
        write_section(HEADING, markdown(results))
    print(json.dumps({k: results[k] for k in ("guard", "scan", "hardening", "canary", "baseline_without_guard")},
                     indent=2, default=str))
    print(f"· results in {out}", file=sys.stderr)
    return 0


def _scan_with_labels(scan, target, tmp: Path, ref: Path, Xc: np.ndarray, yc: np.ndarray, attacking: set,
                      kinds: dict, input_suspects: set) -> dict:
    """``aiir scan-evasion --labels`` over the same decisions, with the true label of each: clean clients' and the
    transfer attacker's recon rows their own (rows of the clean pool), every crafted or probing row fraud (1).
    Also with ``labels.window = 0`` (whole client only), to show what the windows add."""
    import pandas as pd

    from aiir.gateway.synthetic import FEATURES

    truth = {tuple(np.round(x, 4)): int(t) for x, t in zip(Xc, yc, strict=True)}
    rows = target.decisions(None, None)
    ids, lab = [], []
    for d in rows:
        key = tuple(round(float(d["features"][c]), 4) for c in FEATURES)
        c = d["client_id"]
        if c.startswith("merchant-") or (c == "transfer-1" and key in truth):
            if key not in truth:
                continue
            lab.append(truth[key])
        else:
            lab.append(1)  # a HopSkipJump probe of a fraud row, or a row crafted on the surrogate from one
        ids.append(d["decision_id"])
    path = tmp / "labels.parquet"
    pd.DataFrame({"decision_id": ids, "label": lab}).to_parquet(path)
    out = {"labelled": len(ids), "positives": int(sum(lab)),
           "note": "after the labels arrive: the delay is the label feed's (chargebacks take days), not the scan's"}
    for name, thr in (("windows", None), ("whole_client_only", {"labels": {"window": 0}})):
        t0 = time.perf_counter()
        r = scan.scan_target(target, tmp / f"scan-labels-{name}", reference=ref, labels=path, thresholds=thr)
        sus = {s["client_id"]: s for s in r.report["suspect_clients"]}
        caught = set(sus) & attacking
        sig = _label_tests(path, rows, thr, input_suspects)
        clean_sus = sorted(c for c in sus if c.startswith("merchant-"))
        out[name] = {"caught": len(caught), "by_kind": {k: {"caught": len(ids_ & caught), "of": len(ids_)}
                                                        for k, ids_ in kinds.items()},
                     "clean_flagged": clean_sus, "transfer_label_signals": sig,
                     "label_reasons": {c: [x for x in s["reasons"] if x.startswith("label")] for c, s in sus.items()
                                       if any(x.startswith("label") for x in s["reasons"])},
                     "labels": {k: r.report["labels"][k] for k in ("matched", "unmatched", "labelled_positive",
                                                                   "let_through_positive", "baseline_miss_rate_all")},
                     "scan_seconds": round(time.perf_counter() - t0, 3)}
    return out


def _label_tests(path: Path, rows: list[dict], thr, input_suspects: set) -> dict:
    """The label tests of transfer-1 and the smallest p-value among clean clients (findings.json has the tests
    of suspect clients only): the same functions the scan calls, over the decisions sorted as it sorts them."""
    from aiir.evasion import labels as lb
    from aiir.evasion.config import load_config
    from aiir.evasion.profile import finite

    cfg = load_config(thr)
    rows = sorted(rows, key=lambda d: (str(d.get("ts") or ""), str(d.get("decision_id") or "")))
    scores = np.array([finite(d.get("score")) if finite(d.get("score")) is not None else np.nan for d in rows])
    lab = lb.prepare(path, rows, scores, cfg)
    clients = np.array([d["client_id"] for d in rows], dtype=object)
    # as the scan: the model's answers (not the guard's) of clients no input signal names
    base = lb.Baseline(lab, cfg, lab.labelled & ~lab.guard & ~np.isin(clients, sorted(input_suspects)))
    out: dict = {"transfer-1": {}, "clean_min_p": {}}
    for c in sorted(set(clients.tolist())):
        ii = np.flatnonzero(clients == c)
        t = lb.tests_for(ii, base, cfg)
        t.pop("baseline", None)
        if c == "transfer-1":
            out[c] = {k: {"hits": v["hits"], "n": v["n"], "expected": v["expected"], "p_value": v["p_value"],
                          "segment": v["segment"], "significant": v["significant"]} for k, v in t.items()}
        elif c.startswith("merchant-"):
            for k, v in t.items():
                out["clean_min_p"][k] = min(out["clean_min_p"].get(k, 1.0), v["p_value"])
    return out


def _spread(xs: list[float]) -> dict | None:
    return {"median": statistics.median(xs), "max": max(xs), "n": len(xs)} if xs else None


class _Oracle:
    def __init__(self, model, prof):
        self.model, self.prof, self.q = model, prof, []

    def predict(self, Z):
        import pandas as pd

        from aiir.gateway.synthetic import FEATURES

        X = pd.DataFrame(self.prof.mean + np.asarray(Z, float) * self.prof.std, columns=FEATURES)
        p = self.model.predict_proba(X)[:, 1]
        self.q += p.tolist()
        return np.eye(2)[(p >= 0.5).astype(int)]


def _p(d: dict, key: str | None, direct: str | None = None) -> str:
    v = (d.get(direct) if direct else (d.get(key) or {}).get("p_value")) if isinstance(d, dict) else None
    return f"{v:.1e}" if isinstance(v, int | float) else "—"


def _verdict(r: dict) -> str:
    """The goals per attack kind, in words, from the figures (nothing hand-written to go stale)."""
    g, s = r["guard"], r["scan"]
    kind_of = {"single key": "hsj_single", "spread over keys": "hsj_spread"}
    parts = []
    for k, v in g["by_kind"].items():
        cont = [a["containment"] for a in r["attackers"] if a["kind"] == kind_of.get(k) and a["containment"]]
        cq = max((c["queries"] for c in cont), default=None)
        cs = max((c["seconds"] for c in cont), default=None)
        share = v["caught"] / v["of"] if v["of"] else 0.0
        met = share >= 0.9 and (k == "transfer" or (cq is not None and cq <= 50 and cs is not None and cs <= 1.0))
        parts.append(f"{k}: {'met' if met else 'MISSED'} ({v['caught']}/{v['of']} by the guard, "
                     f"{s['by_kind'][k]['caught']}/{s['by_kind'][k]['of']} by the scan"
                     + (f"; contained within {cq} queries and {cs:.2f} s at most" if k != "transfer" and cq else "") + ")")
    clean = "met" if g["clean_flagged_share"] <= 0.01 and not s["clean_flagged"] else "MISSED"
    return ("**Goals per attack kind** (≥ 90 % caught; HopSkipJump within 50 queries and 1 s): " + "; ".join(parts)
            + f". Clean clients flagged ≤ 1 %: {clean}. The transfer attacker is missed by construction of the "
            "signals: its crafted rows are single, in-distribution, mostly far from the boundary and far from each "
            "other (row above), its recon looks like a busy clean client; robustness (hardening) is what reduces "
            "its success, and only a little here."
            + (f" **After the labels arrive** (`--labels`; as late as the label feed): transfer "
               f"{sl['windows']['by_kind']['transfer']['caught']}/{sl['windows']['by_kind']['transfer']['of']}, clean "
               f"flagged {len(sl['windows']['clean_flagged'])}." if (sl := r.get("scan_labels")) else ""))


def markdown(r: dict) -> str:
    g, s, hz, c, b = r["guard"], r["scan"], r["hardening"], r["canary"], r["baseline_without_guard"]
    tr = next(a for a in r["attackers"] if a["kind"] == "transfer")
    p = r["params"]
    bef, aft = hz["before"], hz["after"]
    lines = [
        f"One `aiir serve --require-api-key --guard --guard-reference` (synthetic 6-feature fraud model, logistic "
        f"regression) while {p['clean_clients']} clean API-key clients score fresh rows at ~{p['clean_rate']:g} req/s "
        f"({r['clean']['requests']:,} clean requests); attacks from ART 1.20.1 over real HTTP: {p['attackers']} "
        f"single-key HopSkipJump attackers ({p['rows']} fraud rows each, {p['max_iter']} iterations), "
        f"{p['spread']} HopSkipJump attackers rotating over {p['sybils']} keys each, one transfer attacker "
        f"(300 recon queries, logistic-regression surrogate, PGD L2 eps 1.5). Load average {r['loadavg_1m']}.",
        "",
        "| | result | goal |",
        "|---|---|---|",
        f"| attacking identities caught by the guard | **{g['caught']}/{g['attacking_identities']}** "
        f"({100 * g['caught_share']:.0f} %){'; missed: ' + ', '.join(g['missed']) if g['missed'] else ''} | ≥ 90 % |",
        f"| clean clients flagged by the guard | **{len(g['clean_flagged'])}/{p['clean_clients']}** "
        f"({100 * g['clean_flagged_share']:.1f} %); clean requests answered by the fallback: {r['clean']['guard_answered']} | ≤ 1 % |",
        f"| queries from first attack query to guard containment (HopSkipJump attackers) | median "
        f"**{g['containment_queries']['median']}**, max **{g['containment_queries']['max']}** | ≤ 50 |",
        f"| seconds from first attack query to guard containment | median **{g['containment_seconds']['median']:.2f}**, "
        f"max **{g['containment_seconds']['max']:.2f}** | ≤ 1 s |",
        *([f"| trip → rate limit in the gateway's routing, gateway clock ({g['in_force_on_serving_path']}/{g['trips']} "
           f"trips put in force on the serving path, before the tripping answer) | median "
           f"**{1000 * g['in_force_after_trip_s']['median']:.2f} ms**, max {1000 * g['in_force_after_trip_s']['max']:.2f} ms; "
           f"durable (state.json + audit) after median {1000 * g['persisted_after_trip_s']['median']:.0f} ms | ≤ 1 s |"]
          if g.get("in_force_after_trip_s") and g.get("persisted_after_trip_s") else []),
        f"| attacked fraud rows that evaded, through the guard / without it | {g['evaded_rows_through_guard']}/"
        f"{g['attacked_rows']} / {b['evaded_rows']}/{b['rows']} (without: {b['queries_per_row']} queries per row, "
        f"{100 * b['boundary_share']:.0f} % near the boundary) | |",
        *(["| caught by kind, guard / scan | " + "; ".join(
            f"{k} {g['by_kind'][k]['caught']}/{g['by_kind'][k]['of']} / {s['by_kind'][k]['caught']}/{s['by_kind'][k]['of']}"
            for k in g["by_kind"]) + " | ≥ 90 % each |"] if g.get("by_kind") and s.get("by_kind") else []),
        f"| transfer attacker ({tr['rows']} PGD rows crafted on its surrogate, one per request) | evaded the plain "
        f"model with {tr['evaded_rows_plain_model']}/{tr['rows']}; guard "
        f"{'contained it after ' + str(tr['containment']['queries_after_recon']) + ' crafted rows' if tr['containment'] else 'did not trip (no near-duplicates, no probing: single in-distribution queries)'} | |",
        *([f"| why the transfer attacker is not seen (its crafted rows vs clean traffic) | out of distribution "
           f"{w['crafted_ood']}/{tr['rows']} (clean {100 * w['clean_ood_share']:.2f} %); near the boundary "
           f"{w['crafted_boundary']}/{tr['rows']} (clean {100 * w['clean_boundary_share']:.0f} %); nearest other crafted "
           f"row at RMS {w['crafted_nn_rms_median']} (near-duplicate < {w['near_dup_rms']}); perturbation L2 "
           f"{w['perturbation_l2_std']} std; peak {w['peak_queries_per_min']} queries/min (extraction needs > 600) | |"]
          if (w := tr.get("signals")) else []),
        f"| `aiir scan-evasion` over the decision log afterwards: caught / clean flagged | {s['caught']}/"
        f"{g['attacking_identities']} / {len(s['clean_flagged'])}/{p['clean_clients']} "
        f"({s['decisions']:,} decisions, {s['scan_seconds']} s) | |",
        *(["| **after the labels arrive** (`aiir scan-evasion --labels`, true label of every decision; the delay is "
           "the label feed's, not the scan's): caught by kind / clean flagged | "
           + "; ".join(f"{k} {v['caught']}/{v['of']}" for k, v in sl["windows"]["by_kind"].items())
           + f" / {len(sl['windows']['clean_flagged'])}/{p['clean_clients']}; transfer-1 label_surprise p "
           f"{_p(sl['windows']['transfer_label_signals']['transfer-1'], 'label_surprise')}, label_miss p "
           f"{_p(sl['windows']['transfer_label_signals']['transfer-1'], 'label_miss')} (smallest clean p "
           f"{_p(sl['windows']['transfer_label_signals']['clean_min_p'], None, 'label_surprise')}); whole client "
           f"only (no windows): transfer {sl['whole_client_only']['by_kind']['transfer']['caught']}/1, p "
           f"{_p(sl['whole_client_only']['transfer_label_signals']['transfer-1'], 'label_surprise')} | ≥ 90 % / ≤ 1 % |"]
          if (sl := r.get("scan_labels")) else []),
        f"| playbook path (scheduled scan + block at the target) | scan {s['scan_seconds']} s + containment "
        f"{s['contain_seconds']} s, after the schedule's interval (Airflow task start ~1.5 s, bench_mttc) | |",
        "",
        "Robust accuracy (held-out rows; attacks crafted against the served model v"
        f"{'2'}; hardened = ART PGD adversarial training on the fraud class, eps {hz['info']['eps']}, "
        f"{hz['info']['rounds']} rounds, {hz['train_seconds']} s):",
        "",
        "| | served model | hardened | ",
        "|---|---|---|",
        f"| clean accuracy | {bef['clean_accuracy']:.3f} | {aft['clean_accuracy']:.3f} |",
        f"| held-out HopSkipJump rows ({bef.get('rows_hsj')}) | {bef['robust_accuracy_hsj']:.3f} | "
        f"**{aft['robust_accuracy_hsj']:.3f}** |",
        f"| transfer-attack rows ({bef.get('rows_transfer')}) | {bef['robust_accuracy_transfer']:.3f} | "
        f"{aft['robust_accuracy_transfer']:.3f} |",
        f"| white-box PGD L2 eps {aft['pgd_eps']} on fraud rows (adaptive) | {bef['robust_accuracy_pgd_fraud']:.3f} | "
        f"{aft['robust_accuracy_pgd_fraud']:.3f} |",
        "",
        *([f"Transfer-robust hardening (ensemble adversarial training: PGD rows on 3 local surrogates + the "
           f"{th['confirmed_rows']} crafted rows the labels confirmed), judged on {th['held_out_rows']} rows the "
           "attacker crafted with its own surrogate from other fraud rows (never trained on): "
           + "; ".join(f"{k}: clean {v['clean_accuracy']:.3f}, robust {v['robust_accuracy_transfer']:.3f}"
                       + (f", gate {'passed' if v['gate']['passed'] else 'FAILED'}" if "gate" in v else "")
                       for k, v in th["models"].items()) + ".", ""] if (th := r.get("transfer_hardening")) else []),
        f"Gate (robust accuracy on held-out HopSkipJump +{hz['gate']['criteria']['min_gain']}, clean drop ≤ "
        f"{hz['gate']['criteria']['max_clean_drop']}): **{'passed' if hz['gate']['passed'] else 'FAILED'}** "
        f"(gain {hz['gate']['gain']}, clean drop {hz['gate']['clean_drop']}). Canary redeploy, 30 % share, clean "
        f"traffic: the deliberately wrong v{c['bad_version']['version']} was **{c['bad_version']['outcome']}** "
        f"({c['bad_version']['problem']}); hardened v{c['hardened_version']['version']} was "
        f"**{c['hardened_version']['outcome']}** after {c['hardened_version']['seconds']} s.",
        "",
        f"Whole run {r['seconds']} s. Raw results: `bench/results/evasion-*.json`.",
        *(["", _verdict(r)] if g.get("by_kind") else []),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
