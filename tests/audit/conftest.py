"""One bootstrapped demo (v1 baseline, v2 nightly retrain on the poisoned batch) served by a real gateway:
decisions before and after a rollback, one client id carrying markup, two features stored encrypted."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import restore_env
from tests.gateway.gwkit import AIIR, free_port

MODEL = "fraud-detector"
KEY = bytes(range(100, 132))
ENCRYPTED = ("amount", "merchant_category")
EVIL_CLIENT = "clinic-3"  # client ids are normalised by the gateway (no markup can get in that way)
EVIL_REASON = 'auditor asked <img src=x onerror="alert(1)">'  # free text from an operator: shown, escaped


class DemoGateway:
    """`aiir serve --model fraud-detector` on a free port, stopped by its own pid."""

    def __init__(self, env: dict[str, str], log_file: Path, extra: tuple[str, ...] = ()):
        self.env, self.log_file, self.extra = env, log_file, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self.proc: subprocess.Popen | None = None
        self.state_dir = Path(env["AIIR_HOME"]) / "gateway" / MODEL

    def start(self) -> DemoGateway:
        fh = open(self.log_file, "ab")
        self.proc = subprocess.Popen([str(AIIR), "serve", "--model", MODEL, "--port", str(self.port), *self.extra],
                                     env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        t0 = time.time()
        while time.time() - t0 < 120:
            if self.proc.poll() is not None:
                raise RuntimeError("aiir serve exited:\n" + self.log_file.read_text()[-3000:])
            try:
                if self.http.get("/ping", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("aiir serve did not answer:\n" + self.log_file.read_text()[-3000:])

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def admin(self, path: str, body: dict) -> dict:
        tok = (self.state_dir / "admin.token").read_text().strip()
        r = self.http.post(path, json=body, headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 200, r.text
        return r.json()

    def score(self, rows: list[dict], client: str) -> dict:
        cols = list(rows[0])
        r = self.http.post("/invocations", json={"dataframe_split": {"columns": cols,
                                                                      "data": [[x[c] for c in cols] for x in rows]}},
                           headers={"X-Client-Id": client})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def audit_demo(tmp_path_factory):
    """A demo of its own (the tamper tests change files): v1 champion + last-known-good, then v2 nightly."""
    home = tmp_path_factory.mktemp("audit-demo") / "aiir-home"
    saved = {k: os.environ.get(k) for k in ("AIIR_HOME",)}
    os.environ["AIIR_HOME"] = str(home)
    from aiir import bootstrap

    bootstrap.bootstrap()
    bootstrap.nightly_retrain([4, 5])
    yield home
    restore_env(saved)


@pytest.fixture(scope="module")
def served(audit_demo, tmp_path_factory):
    """Decisions served by v2 (champion), then — after a rollback to v1 on the gateway — by v1."""
    import pandas as pd

    env = {**os.environ, "AIIR_HOME": str(audit_demo),
           "AIIR_DECISION_LOG_KEY": base64.b64encode(KEY).decode()}
    for k in ("AIIR_GATEWAY_DIR", "AIIR_EVIDENCE_DIR", "AIIR_DATA_DIR", "MLFLOW_TRACKING_URI"):
        env.pop(k, None)
    hold = pd.read_parquet(audit_demo / "data" / "fraud" / "holdout_trusted.parquet")
    rows = hold.drop(columns=["source", "batch", "is_fraud"]).head(6).to_dict("records")
    g = DemoGateway(env, tmp_path_factory.mktemp("gw") / "serve.log",
                    extra=("--encrypt-fields", ",".join(ENCRYPTED), "--durable")).start()
    try:
        before = g.score(rows[:3], "clinic-1")
        mid = g.score(rows[3:4], EVIL_CLIENT)
        time.sleep(0.05)
        rb = g.admin("/admin/rollback", {"version": "1", "reason": EVIL_REASON})
        time.sleep(0.05)
        after = g.score(rows[4:6], "clinic-2")
        # the same decisions found the way every other target is asked: DeploymentTarget.decisions over the
        # window the (UUIDv7) id encodes — here through the gateway's admin API, not its log file
        from aiir.audit.trace import locate
        from aiir.targets.local import LocalGatewayTarget

        t = LocalGatewayTarget(MODEL, url=g.url, token=(g.state_dir / "admin.token").read_text().strip(),
                               state_dir=tmp_path_factory.mktemp("no-local-log"))
        try:
            via_api = locate(before["decision_ids"] + after["decision_ids"], target=t)
        finally:
            t.close()
    finally:
        assert g.stop() == 0
    return {"home": audit_demo, "rows": rows, "before": before, "evil": mid, "after": after, "rollback": rb,
            "state_dir": g.state_dir, "via_api": via_api}
