"""``make demo``: the whole data-poisoning story on embedded defaults, unattended, in minutes.

1. bootstrap: demo data, baseline fraud model v1 (champion + last-known-good) in MLflow
2. serve v1 on the local gateway; clean traffic from three client ids
3. overnight, the nightly pipeline retrains on every arrived batch — one of them poisoned by
   ``partner_feed_c`` — and auto-promotes v2; the gateway serves it; traffic goes on (the blast radius)
4. the poisoned batch lands → Asset event → ``data_integrity_check`` finds label shift, duplicate injection
   and the poison source → opens an incident → ``incident_data_poisoning`` contains (gateway to v1), seals
   evidence, triages, localises the poison and the blast radius, quarantines, triggers
   ``retrain_from_clean_data`` (clean set, same recipe, gate, promote v3), writes the report
5. prints where everything is; verifies the evidence bundle
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiir import config


def _say(msg: str) -> None:
    print(f"\n\033[1m▶ {msg}\033[0m", flush=True)


def run(*, keep_running: bool = False, gateway_port: int | None = None, airflow_port: int | None = None,
        log: Callable[[str], None] = _say) -> dict[str, Any]:
    from aiir import bootstrap, demo, registry, runtime
    from aiir.targets.local import LocalGatewayTarget

    p = config.paths().ensure()
    log(f"state folder: {p.home}")
    state = bootstrap.bootstrap(progress=lambda m: print(f"  · {m}", flush=True))
    model = bootstrap.FRAUD_MODEL
    files = demo.DemoFiles(p.data)

    # A fresh story each time: champion back to the baseline if an earlier demo moved it.
    v1 = state["models"][model]
    registry.set_alias(model, registry.CHAMPION, v1, reason="demo reset", actor="aiir-demo")
    registry.set_alias(model, registry.LAST_KNOWN_GOOD, v1, reason="demo reset", actor="aiir-demo")

    # SIGTERM/SIGHUP end the demo like Ctrl-C does: through the finally below, which stops every service
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    gw_port = gateway_port or (8080 if _port_free(8080) else runtime.free_port())
    af_port = airflow_port or (8280 if _port_free(8280) else runtime.free_port())
    os.environ["AIIR_GATEWAY_URL"] = f"http://127.0.0.1:{gw_port}"
    services: list[runtime.Service] = []
    try:
        log(f"starting the serving gateway for {model} on :{gw_port}")
        gw = runtime.start_gateway(model, port=gw_port)
        services.append(gw)
        target = LocalGatewayTarget(model, url=gw.url)
        target.restore(reason="demo start")
        target.rollback(v1, reason="demo start: serve baseline")
        log(f"starting Airflow on http://127.0.0.1:{af_port} (first start takes ~30 s)")
        af = runtime.Airflow(port=af_port, integrity_schedule="none")  # the story drives the check
        af.start()
        services.append(af.service)
        for dag_id in ("data_integrity_check", "incident_data_poisoning", "retrain_from_clean_data"):
            af.wait_for_dag(dag_id)
        print(f"  · Airflow UI: {af.url}  (no login: simple auth manager, all admins)", flush=True)

        log("clean traffic on v1 from three clients")
        _traffic(gw.url, files.fraud_feedback, seconds=4)

        log("overnight: the nightly pipeline retrains on batches 004 + 005 (poisoned) and auto-promotes")
        v2 = bootstrap.nightly_retrain([4, 5], progress=lambda m: print(f"  · {m}", flush=True))
        target.rollback(v2.version, reason="nightly deploy")
        print(f"  · gateway now serves v{v2.version}", flush=True)
        _traffic(gw.url, files.fraud_feedback, seconds=6)

        log("batch 005 lands → Asset event → data_integrity_check")
        t0 = time.time()
        runtime_run = _arrive(af, files.fraud_batch(5))
        check_run = _wait_new_run(af, "data_integrity_check", after=runtime_run)
        check_run = af.wait_for_run("data_integrity_check", check_run["dag_run_id"], timeout=600)
        summary = af.xcom("data_integrity_check", check_run["dag_run_id"], "check")
        print(f"  · check: {summary['status']} ({summary['severity']}), suspect sources "
              f"{summary['suspect_sources']}", flush=True)
        if summary["status"] != "incident":
            raise RuntimeError("the integrity check did not open an incident on the poisoned batch")
        incident_id = summary["incident"]["incident_id"]

        log(f"incident {incident_id}: playbook running (contain → evidence → forensics → retrain → report)")
        run = af.wait_for_run("incident_data_poisoning", incident_id, timeout=900)
        tis = {t["task_id"]: t["state"] for t in af.task_instances("incident_data_poisoning", incident_id)}
        print("  · " + ", ".join(f"{k}={v}" for k, v in tis.items()), flush=True)
        workdir = p.incidents / incident_id
        contain = json.loads((workdir / "contain.json").read_text())
        recovery = json.loads((workdir / "recovery.json").read_text()) if (workdir / "recovery.json").exists() else None
        final = target.describe()
        from aiir.evidence import verify_bundle

        ev = json.loads((workdir / "evidence.json").read_text())
        verified = verify_bundle(Path(ev["bundle"]))
        out = {
            "incident_id": incident_id, "playbook_state": run["state"], "elapsed_s": round(time.time() - t0, 1),
            "contained_in_s": contain["seconds"], "contained_mode": contain["after"]["mode"],
            "serving_now": {"mode": final.mode, "routes": [r.__dict__ for r in final.routes]},
            "new_version": recovery and recovery["new_version"],
            "evidence_bundle": ev["bundle"], "evidence_verified": verified.ok,
            "report": str(workdir / "report" / "report.html"),
            "forensics": str(workdir / "forensics"), "siem_events": str(p.home / "siem"),
        }
        log("done")
        print(json.dumps(out, indent=2, default=str), flush=True)
        print(f"\nOpen the report: {out['report']}\nVerify the evidence: aiir verify {out['evidence_bundle']}")
        if keep_running:
            runtime.hold_until_interrupted(f"\nAirflow {af.url} and the gateway {gw.url} keep running; "
                                           "Ctrl-C stops them.")
        return out
    finally:
        # all at once, within ~4 s; a second Ctrl-C must not cut the cleanup short
        sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if services:
                took = runtime.stop_all(services)
                print(f"\n  · stopped {', '.join(s.name for s in services)} in {took:.1f} s", flush=True)
        finally:
            signal.signal(signal.SIGINT, sigint)
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _traffic(url: str, data: Path, *, seconds: float) -> None:
    import pandas as pd

    from aiir.gateway.traffic import replay

    live = data.parent / "live_traffic.parquet"
    if not live.exists():  # what clients send: features only (no label, no provenance columns)
        pd.read_parquet(data).drop(columns=["source", "batch", "is_fraud"]).to_parquet(live, index=False)
    res = replay(url=url, data=live, rate=40, duration=seconds,
                 clients=["merchant-17", "acquirer-eu", "mobile-app"])
    print(f"  · sent {res.get('sent')} requests, ok {res.get('ok')}, by version {res.get('by_version')}", flush=True)


def _arrive(af, path: Path) -> float:
    os.utime(path)
    assets = af.api("GET", "/assets?name_pattern=fraud_training_batches")["assets"]
    t = time.time()
    af.api("POST", "/assets/events", {"asset_id": assets[0]["id"], "extra": {"path": str(path)}})
    return t


def _wait_new_run(af, dag_id: str, *, after: float) -> dict:
    from datetime import datetime

    from aiir.runtime import wait_until

    def find():
        for r in af.runs(dag_id):
            when = r.get("queued_at") or r.get("start_date") or r.get("run_after")
            if when and datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp() >= after - 1:
                return r
        return None

    return wait_until(find, timeout=120, what=f"a {dag_id} run after the batch landed", service=af.service)
