"""``aiir demo run --target sagemaker``: the data-poisoning story on a SageMaker endpoint (a local AWS API).

1. bootstrap (demo data, fraud model v1 champion + last-known-good in MLflow);
2. starts the AWS simulator (``aiir.awssim``: moto's server with UpdateEndpoint, settling updates, forwarded
   InvokeEndpoint and Data Capture) and the model servers SageMaker would run as containers — ``aiir serve``
   pinned to each version (one following ``champion`` stands in for versions deployed later);
3. deploys endpoint ``fraud-detector`` (Data Capture on, v1), records last-known-good on it, serves traffic
   from three clients through ``sagemaker-runtime`` InvokeEndpoint;
4. overnight the poisoned retrain promotes v2; the deploy keeps v1 as a zero-weight standby variant;
5. the poisoned batch is checked by ``data_integrity_check`` with ``target_kind=sagemaker`` →
   ``incident_data_poisoning`` (Airflow, connection ``aws_default`` → the simulator): isolation is a weight
   shift to v1, re-read after InService; the endpoint's snapshot is sealed with the evidence; the blast radius
   comes from Data Capture; the clean retrain's v3 is promoted onto the endpoint (a new endpoint config);
6. the evidence bundle is uploaded to an S3 Object Lock (COMPLIANCE) bucket and verified in place.

Pointing the same DAG at a real account: see the README ("SageMaker") — the aws_default connection without
``endpoint_url``, a role with deploy/aws/iam-policy.json, and target options in the connection's extras.
"""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiir import config

ENDPOINT = "fraud-detector"
DATA_BUCKET = "aiir-demo-sagemaker"
EVIDENCE_BUCKET = "aiir-demo-evidence"
ROLE = "arn:aws:iam::123456789012:role/aiir-demo-sagemaker-execution"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
CLIENTS = ("merchant-17", "acquirer-eu", "mobile-app")


def _say(msg: str) -> None:
    print(f"\n\033[1m▶ {msg}\033[0m", flush=True)


def _item(msg: str) -> None:
    print(f"  · {msg}", flush=True)


def _tarball(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=".")
    return buf.getvalue()


def run(*, keep_running: bool = False, log: Callable[[str], None] = _say, airflow_port: int | None = None,
        **_ignored: Any) -> dict[str, Any]:
    import boto3

    from aiir import bootstrap, demo, registry, runtime
    from aiir.awssim import AwsSim
    from aiir.targets.local import LocalGatewayTarget
    from aiir.targets.sagemaker import SageMakerTarget

    p = config.paths().ensure()
    log(f"state folder: {p.home}")
    state = bootstrap.bootstrap(progress=_item)
    model = bootstrap.FRAUD_MODEL
    files = demo.DemoFiles(p.data)
    v1 = str(state["models"][model])
    registry.set_alias(model, registry.CHAMPION, v1, reason="demo reset", actor="aiir-demo")
    registry.set_alias(model, registry.LAST_KNOWN_GOOD, v1, reason="demo reset", actor="aiir-demo")

    services: list[Any] = []
    saved_env = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                                "AWS_ENDPOINT_URL", "AIRFLOW_CONN_AWS_DEFAULT",
                                                "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT")}
    try:
        log("starting the AWS simulator (moto + SageMaker extensions) on 127.0.0.1")
        sim = AwsSim(settle_s=2.0, log=p.home / "awssim.log").start()
        services.append(sim)
        env = sim.client_env()
        conn = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
        conn["extra"].update({"model_name": model, "poll": 1.0, "data_capture_s3_uri": f"s3://{DATA_BUCKET}/capture",
                              "model_data_url_template": f"s3://{DATA_BUCKET}/models/{{model}}/{{version}}/model.tar.gz"})
        env["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(conn)
        os.environ.update(env)
        _item(f"AWS API at {sim.url} (Airflow connection aws_default points there through its endpoint_url extra)")
        kw = {"endpoint_url": sim.url, "region_name": "us-east-1"}
        sm, s3, rt = (boto3.client(s, **kw) for s in ("sagemaker", "s3", "sagemaker-runtime"))
        s3.create_bucket(Bucket=DATA_BUCKET)
        s3.create_bucket(Bucket=EVIDENCE_BUCKET, ObjectLockEnabledForBucket=True)

        log("model servers for the SageMaker containers (aiir serve, one per version)")
        servers: dict[str, str] = {}

        def serve_version(version: str | None) -> str:
            label = f"v{version}" if version else "champion"
            gw = runtime.start_gateway(model, extra=["--state-dir", str(p.gateway / f"sagemaker-{label}")])
            services.append(gw)
            if version:
                LocalGatewayTarget(model, url=gw.url, state_dir=p.gateway / f"sagemaker-{label}").rollback(
                    version, reason=f"SageMaker container for {label}")
            _item(f"{label}: {gw.url}")
            return gw.url

        def sagemaker_model(version: str) -> str:
            mv = registry.get_version(model, version)
            key = f"models/{model}/{version}/model.tar.gz"
            s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=_tarball(mv.artifact_dir))
            name = f"{model}-v{version}"
            sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
                "Image": IMAGE, "ModelDataUrl": f"s3://{DATA_BUCKET}/{key}",
                "Environment": {"AIIR_MODEL_VERSION": version, "MLFLOW_MODEL_NAME": model}})
            return name

        servers[sagemaker_model(v1)] = serve_version(v1)
        servers["*"] = serve_version(None)  # versions the recovery deploys later (follows champion)
        sim.register_model_servers(servers)

        target = SageMakerTarget(ENDPOINT, endpoint_url=sim.url, region="us-east-1", model_name=model, poll=0.5,
                                 data_capture_s3_uri=f"s3://{DATA_BUCKET}/capture")
        log(f"deploying SageMaker endpoint {ENDPOINT} on v{v1} (Data Capture to s3://{DATA_BUCKET}/capture)")
        target.rollback(v1, reason="demo start: serve baseline")
        target.set_last_known_good(v1)

        log("clean traffic through InvokeEndpoint from three clients")
        _traffic(rt, files.fraud_feedback, seconds=4)

        log("overnight: the nightly pipeline retrains on batches 004 + 005 (poisoned) and auto-promotes")
        v2 = bootstrap.nightly_retrain([4, 5], progress=_item).version
        servers[sagemaker_model(v2)] = serve_version(v2)
        sim.register_model_servers(servers)
        st = target.rollback(v2, reason="nightly deploy")
        _item(f"endpoint serves {dict((r.version, r.share) for r in st.routes)} (v{v1} standby at weight 0)")
        _traffic(rt, files.fraud_feedback, seconds=6)
        sim.flush_capture()

        # on a loaded machine the api-server can take longer than the task runner's 5 s default to answer
        os.environ.setdefault("AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT", "30")
        port = airflow_port or runtime.free_port()
        log(f"starting Airflow on http://127.0.0.1:{port}")
        af = runtime.Airflow(port=port, integrity_schedule="none")
        af.start()
        services.append(af.service)
        for dag_id in ("data_integrity_check", "incident_data_poisoning", "retrain_from_clean_data"):
            af.wait_for_dag(dag_id)

        log("batch 005 lands → data_integrity_check (target sagemaker)")
        t0 = time.time()
        check = af.trigger("data_integrity_check", {"current": str(files.fraud_batch(5)), "target_kind": "sagemaker",
                                                    "target_name": ENDPOINT, "model_name": model})
        check = af.wait_for_run("data_integrity_check", check["dag_run_id"], timeout=600)
        if check["state"] != "success":
            states = {t["task_id"]: t["state"] for t in af.task_instances("data_integrity_check", check["dag_run_id"])}
            raise RuntimeError(f"data_integrity_check ended {check['state']} ({states}); logs under {af.home / 'logs'}")
        summary = af.xcom("data_integrity_check", check["dag_run_id"], "check")
        _item(f"check: {summary['status']} ({summary.get('severity')}), suspect sources {summary.get('suspect_sources')}")
        if summary["status"] != "incident":
            raise RuntimeError("the integrity check did not open an incident on the poisoned batch")
        incident_id = summary["incident"]["incident_id"]
        log(f"incident {incident_id}: playbook on SageMaker (isolate → evidence → forensics → retrain → report)")
        run = af.wait_for_run("incident_data_poisoning", incident_id, timeout=1200)
        tis = {t["task_id"]: t["state"] for t in af.task_instances("incident_data_poisoning", incident_id)}
        _item(", ".join(f"{k}={v}" for k, v in tis.items()))
        workdir = p.incidents / incident_id
        contain = json.loads((workdir / "contain.json").read_text())
        recovery = json.loads((workdir / "recovery.json").read_text()) if (workdir / "recovery.json").exists() else None
        ev = json.loads((workdir / "evidence.json").read_text())
        final = target.describe()

        log("evidence bundle → S3 Object Lock (COMPLIANCE), verified in place")
        from aiir.evidence import verify_bundle
        from aiir.evidence.keys import load_or_create_signing_key
        from aiir.evidence.s3 import upload_bundle, verify_s3

        key = load_or_create_signing_key()
        uri = f"s3://{EVIDENCE_BUCKET}/{incident_id}"
        up = upload_bundle(ev["bundle"], uri, client=s3, retain_days=30, signing_key=key)
        in_place = verify_s3(uri, client=s3)
        _item(f"{uri}: {up['objects']} objects, COMPLIANCE until {up['retain_until']}; "
              + (in_place.messages[0] if in_place.messages else ""))
        out = {
            "incident_id": incident_id, "playbook_state": run["state"], "tasks": tis,
            "elapsed_s": round(time.time() - t0, 1), "contained_in_s": contain.get("seconds"),
            "contained_mode": contain["after"]["mode"],
            "contained_routes": {r["version"]: r["share"] for r in contain["after"]["routes"]},
            "endpoint_now": {"mode": final.mode, "routes": {r.version: r.share for r in final.routes},
                             "config": final.extra["endpoint_config_name"]},
            "new_version": recovery and recovery.get("new_version"),
            "evidence_bundle": ev["bundle"], "evidence_verified": verify_bundle(Path(ev["bundle"]), record=False).ok,
            "evidence_s3": uri, "evidence_s3_verified": in_place.ok,
            "report": str(workdir / "report" / "report.html"), "aws_api": sim.url,
        }
        log("done")
        print(json.dumps(out, indent=2, default=str), flush=True)
        if keep_running:
            runtime.hold_until_interrupted(f"\nAirflow {af.url}, the AWS simulator {sim.url} and the model "
                                           "servers keep running; Ctrl-C stops them.")
        return out
    finally:
        for svc in reversed(services):
            svc.stop()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _traffic(rt, data: Path, *, seconds: float, rate: float = 15.0) -> dict[str, int]:
    """InvokeEndpoint from three clients (client id in CustomAttributes), JSON rows of the feedback set."""
    import pandas as pd

    frame = pd.read_parquet(data).drop(columns=["source", "batch", "is_fraud"], errors="ignore")
    cols, rows = list(frame.columns), frame.head(2000).values.tolist()
    by_variant: dict[str, int] = {}
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def worker(client: str) -> None:
        rnd = random.Random(client)
        while time.monotonic() < stop:
            body = json.dumps({"dataframe_split": {"columns": cols, "data": [rnd.choice(rows)]}}, default=float)
            r = rt.invoke_endpoint(EndpointName=ENDPOINT, Body=body, ContentType="application/json",
                                   CustomAttributes=f"client_id={client}")
            v = r["ResponseMetadata"]["HTTPHeaders"].get("x-amzn-invoked-production-variant", "?")
            with lock:
                by_variant[v] = by_variant.get(v, 0) + 1
            time.sleep(len(CLIENTS) / rate)

    threads = [threading.Thread(target=worker, args=(c,)) for c in CLIENTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _item(f"sent {sum(by_variant.values())} requests, by variant {by_variant}")
    return by_variant
