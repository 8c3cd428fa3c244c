"""Mean time to contain, under the real scheduler (goal: ≤ 1.3× a no-op DAG's trigger-to-task time).

One Airflow (standalone: scheduler, api-server, dag-processor, triggerer; LocalExecutor, SQLite) and one
gateway, both real processes. In the same run:

* baseline — REST trigger of ``aiir_latency_probe`` → its no-op task finished (task end_date);
* MTTC — REST trigger of ``incident_data_poisoning`` → the first scoring request answered by the
  last-known-good version, as a client sees it (a thread scores one row every 10 ms).

Each incident run is stopped once contained (the rest of the playbook is not what is measured) and the
gateway is put back to serving the compromised version before the next one.

``--pending-approval`` first runs a whole incident A on the same model with ``require_approval`` until its
promotion waits for a person (Airflow HITL, 12 h timeout), then measures the same MTTC with A pending:
incidents no longer queue behind one another (no ``max_active_runs=1``; mutating steps take a per-model lock
that a waiting approval does not hold).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save_json, write_section  # noqa: E402


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pending-approval", action="store_true",
                    help="measure with another incident's promotion approval pending on the same model")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="aiir-mttc-")) / "aiir-home"
    os.environ["AIIR_HOME"] = str(home)
    import httpx

    from aiir import bootstrap, runtime
    from aiir.targets.local import LocalGatewayTarget

    bootstrap.bootstrap()
    v2 = bootstrap.nightly_retrain([4, 5]).version
    services = []
    try:
        gw = runtime.start_gateway(bootstrap.FRAUD_MODEL)
        services.append(gw)
        os.environ["AIIR_GATEWAY_URL"] = gw.url
        target = LocalGatewayTarget(bootstrap.FRAUD_MODEL, url=gw.url)
        af = runtime.Airflow(integrity_schedule="none")
        af.start()
        services.append(af.service)
        for d in ("aiir_latency_probe", "incident_data_poisoning"):
            af.wait_for_dag(d)
        row = {"dataframe_records": [{"amount": 120.0, "merchant_category": "grocery", "hour": 14,
                                      "country_mismatch": 0, "card_present": 1, "velocity_1h": 1,
                                      "device_age_days": 300, "distance_from_home_km": 5.0,
                                      "account_age_days": 900, "prior_chargebacks": 0}]}

        # warm both DAGs once (first task start of a DAG pays one-off costs)
        r = af.trigger("aiir_latency_probe")
        af.wait_for_run("aiir_latency_probe", r["dag_run_id"])

        baseline = []
        for _ in range(args.runs):
            t0 = time.time()
            r = af.trigger("aiir_latency_probe")
            af.wait_for_run("aiir_latency_probe", r["dag_run_id"])
            ti = af.task_instances("aiir_latency_probe", r["dag_run_id"])[0]
            baseline.append(_ts(ti["end_date"]) - t0)

        pending = None
        if args.pending_approval:
            pending = f"BENCH-PENDING-{os.getpid()}"
            target.rollback(v2, reason="bench: compromised version serving")
            af.trigger("incident_data_poisoning", {"incident_id": pending, "model_name": bootstrap.FRAUD_MODEL,
                                                   "target_name": bootstrap.FRAUD_MODEL, "require_approval": True},
                       run_id=pending)

            def awaiting():
                try:
                    tis = af.task_instances("retrain_from_clean_data", f"{pending}-retrain")
                except Exception:
                    return None
                return next((t for t in tis if t["task_id"] == "await_approval"
                             and t["state"] in ("awaiting_input", "deferred")), None)

            runtime.wait_until(awaiting, timeout=1800, interval=2, what="incident A's approval to be pending",
                               service=af.service)
        mttc, task_seconds = [], []
        for i in range(args.runs + 1):
            target.restore(reason="bench reset")
            target.rollback(v2, reason="bench: compromised version serving")
            seen: dict[str, float] = {}
            stop = threading.Event()

            def poll(seen=seen, stop=stop):
                with httpx.Client(base_url=gw.url, timeout=5) as c:
                    while not stop.is_set():
                        try:
                            resp = c.post("/invocations", json=row, headers={"X-Client-Id": "bench"})
                            if resp.status_code == 200 and resp.json().get("model_version") == "1":
                                seen["t"] = time.time()
                                return
                        except httpx.HTTPError:
                            pass
                        time.sleep(0.01)

            th = threading.Thread(target=poll, daemon=True)
            th.start()
            iid = f"BENCH-MTTC-{os.getpid()}-{i}"
            t0 = time.time()
            af.trigger("incident_data_poisoning", {"incident_id": iid, "model_name": bootstrap.FRAUD_MODEL,
                                                   "target_name": bootstrap.FRAUD_MODEL, "severity": "high"},
                       run_id=iid)
            th.join(timeout=180)
            stop.set()
            if "t" not in seen:
                raise RuntimeError(f"run {iid}: the gateway never served last-known-good")
            if i > 0:  # run 0 warms the playbook DAG
                mttc.append(seen["t"] - t0)
                cpath = home / "incidents" / iid / "contain.json"
                runtime.wait_until(cpath.exists, timeout=30, what=str(cpath))
                task_seconds.append(json.loads(cpath.read_text())["seconds"])
            af.api("PATCH", f"/dags/incident_data_poisoning/dagRuns/{iid}", {"state": "failed"})
            runtime.wait_until(lambda iid=iid: af.api("GET", f"/dags/incident_data_poisoning/dagRuns/{iid}")["state"]
                               in ("failed", "success"), timeout=60)
            time.sleep(2)
    finally:
        for s in reversed(services):
            s.stop()

    b, m = statistics.median(baseline), statistics.median(mttc)
    res = {"baseline_s": baseline, "mttc_s": mttc, "containment_call_s": task_seconds, "baseline_median": b,
           "mttc_median": m, "ratio": m / b, "pending_approval": bool(pending)}
    save_json("mttc_pending" if pending else "mttc", res)
    mode = (" **With incident A's promotion approval pending on the same model** (A contained, analysed and "
            "retrained, its `await_approval` HITL task waiting) during every measured run." if pending else "")
    body = (f"Same Airflow (standalone, LocalExecutor, SQLite) and gateway, same run, {args.runs} runs each after "
            f"one warm-up.{mode}\n\n| measure | median | runs |\n|---|---|---|\n"
            f"| no-op DAG: REST trigger → task finished | {b:.2f} s | {', '.join(f'{x:.2f}' for x in baseline)} |\n"
            f"| MTTC: REST trigger → first request served by last-known-good | {m:.2f} s | "
            f"{', '.join(f'{x:.2f}' for x in mttc)} |\n"
            f"| of which the containment calls (describe + isolate) | {statistics.median(task_seconds) * 1000:.0f} ms | |\n\n"
            f"Ratio **{m / b:.2f}×** (goal ≤ 1.3×).")
    write_section("Mean time to contain with an approval pending (bench/bench_mttc.py --pending-approval)"
                  if pending else "Mean time to contain (bench/bench_mttc.py)", body)
    print(json.dumps({k: v for k, v in res.items() if "median" in k or k == "ratio"}, indent=2))


if __name__ == "__main__":
    main()
