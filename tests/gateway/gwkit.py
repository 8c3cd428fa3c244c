"""Helpers for the gateway tests: constants, a real `aiir serve` process wrapper, request bodies."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

VENV_BIN = Path(sys.executable).parent
AIIR = VENV_BIN / "aiir"
MODEL = "gw-test"
FEATURES = ["amount", "merchant_risk", "hour", "distance_km", "card_age_days", "n_tx_24h"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """One `aiir serve` process, started and stopped by its own pid."""

    def __init__(self, env: dict, state_dir: Path | None, log_file: Path, extra: tuple[str, ...] = ()):
        self.env = dict(env)
        self.state_dir = state_dir or Path(env["AIIR_GATEWAY_DIR"]) / MODEL
        self.explicit_state_dir = state_dir is not None
        self.log_file = log_file
        self.extra = extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=self.url, timeout=20)

    def start(self, timeout: float = 120) -> Gateway:
        cmd = [str(AIIR), "serve", "--model", MODEL, "--port", str(self.port), *self.extra]
        if self.explicit_state_dir:
            cmd += ["--state-dir", str(self.state_dir)]
        fh = open(self.log_file, "ab")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"aiir serve exited with {self.proc.returncode}:\n"
                                   + self.log_file.read_text()[-3000:])
            try:
                if self.http.get("/ping", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("aiir serve did not answer /ping:\n" + self.log_file.read_text()[-3000:])

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    @property
    def token(self) -> str:
        return (self.state_dir / "admin.token").read_text().strip()

    @property
    def log_path(self) -> Path:
        return self.state_dir / "decisions.db"

    def score(self, body, *, client: str | None = None, ctype: str = "application/json",
              headers: dict | None = None) -> httpx.Response:
        h = {"Content-Type": ctype, **(headers or {})}
        if client:
            h["X-Client-Id"] = client
        content = body if isinstance(body, bytes | str) else json.dumps(body)
        return self.http.post("/invocations", content=content, headers=h)

    def admin(self, path: str, body: dict | None = None, *, token: str | None = None,
              method: str | None = None) -> httpx.Response:
        h = {"Authorization": f"Bearer {self.token if token is None else token}"}
        m = method or ("GET" if body is None else "POST")
        return self.http.request(m, path, json=body, headers=h)

    def ok(self, path: str, body: dict | None = None) -> dict:
        r = self.admin(path, body)
        assert r.status_code == 200, r.text
        return r.json()

    def flush(self) -> dict:
        return self.ok("/admin/flush", {})


def split(rows, cols=FEATURES) -> dict:
    return {"dataframe_split": {"columns": cols, "data": rows}}


ROWS = [[42.5, 0.12, 14.0, 3.2, 812.0, 2.0], [880.0, 0.97, 3.0, 210.5, 12.0, 14.0],
        [15.0, 0.05, 11.0, 1.1, 2400.0, 1.0], [120.0, 0.4, 22.0, 15.0, 300.0, 5.0]]


