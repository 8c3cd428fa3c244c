"""Running the embedded services as real processes: Airflow, the gateway.

Used by ``make demo``, the end-to-end tests and the benchmarks, so all three start services the same
way. Each service runs in its own session (``setsid``) and is stopped by signalling its process group,
so no child (scheduler, dag-processor, task runners) is orphaned. Nothing here imports Airflow: it only
builds the environment and runs the ``airflow`` executable of this venv.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiir import config, procfs
from aiir.errors import AiirError

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow_env(*, port: int = 8280, home: Path | None = None, dags: Path | None = None,
                parallelism: int = 4, integrity_schedule: str | None = None) -> dict[str, str]:
    """Environment for a single-machine Airflow on SQLite with the LocalExecutor."""
    p = config.paths()
    home = home or p.airflow_home
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "AIIR_HOME": str(p.home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags or config.REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(config.REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        # a worker's calls to the execution API (SQLite behind it) can take seconds on a loaded 2-core
        # machine; the 5 s default turns that into failed task starts
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
        "GX_ANALYTICS_ENABLED": "false",
        "AIIR_INTEGRITY_SCHEDULE": integrity_schedule or os.environ.get("AIIR_INTEGRITY_SCHEDULE", "@hourly"),
        "AIIR_EVASION_SCHEDULE": os.environ.get("AIIR_EVASION_SCHEDULE", "none"),
        "MLFLOW_TRACKING_URI": p.mlflow_tracking_uri,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(
            [str(config.REPO_ROOT / "include"), str(config.REPO_ROOT / "plugins"),
             os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    return env


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path
    url: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def hold_until_interrupted(message: str) -> None:
    """Print ``message`` and wait until Ctrl-C (or a signal handler raising KeyboardInterrupt).

    The message sits inside the ``try``: whoever reads it (a person, a test on the terminal) may press
    Ctrl-C at once, and an interrupt landing while the message is still being written must end the wait
    as cleanly as one landing in the sleep — not escape as exit 130."""
    try:
        print(message, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def stop_all(services: list[Service], *, grace: float = 3.0) -> float:
    """Stop every service at once: SIGTERM to each process group, up to ``grace`` seconds for all of them
    together, then SIGKILL to every group (also sweeping children that outlived their leader). Returns
    the seconds it took (``grace`` + ~1 s at most, however many services)."""
    t0 = time.monotonic()
    for svc in services:
        if svc.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(svc.proc.pid, signal.SIGTERM)
    deadline = t0 + grace
    while time.monotonic() < deadline and any(svc.proc.poll() is None for svc in services):
        time.sleep(0.05)
    for svc in services:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(svc.proc.pid, signal.SIGKILL)
        for pid in procfs.session_members(svc.proc.pid):  # children that moved to a process group of their own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    for svc in services:
        with contextlib.suppress(subprocess.TimeoutExpired):
            svc.proc.wait(max(0.1, t0 + grace + 1.0 - time.monotonic()))
    return time.monotonic() - t0


def _spawn(name: str, argv: list[str], env: dict[str, str], log: Path, url: str) -> Service:
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "ab")
    proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    fh.close()
    return Service(name, proc, log, url)


def http_json(method: str, url: str, body: Any = None, *, token: str | None = None,
              timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def wait_until(predicate, *, timeout: float, interval: float = 0.25, what: str = "condition",
               service: Service | None = None):
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        if service is not None and not service.alive():
            raise AiirError(f"{service.name} exited (code {service.proc.returncode}) while waiting for "
                            f"{what}; log {service.log}:\n{service.tail()}")
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - polling: any failure means "not yet"
            last_exc = exc
        time.sleep(interval)
    tail = f"\nlog {service.log}:\n{service.tail()}" if service else ""
    raise AiirError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_exc}){tail}")


class Airflow:
    """A real Airflow (api-server, scheduler, dag-processor, triggerer) started with ``airflow standalone``."""

    def __init__(self, *, port: int | None = None, home: Path | None = None, dags: Path | None = None,
                 integrity_schedule: str | None = None):
        self.port = port or free_port()
        self.env = airflow_env(port=self.port, home=home, dags=dags, integrity_schedule=integrity_schedule)
        self.home = Path(self.env["AIRFLOW_HOME"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.service: Service | None = None
        self._token: str | None = None

    _timeout: float | None = None

    @property
    def timeout(self) -> float:
        """Seconds per REST call (``AIIR_AIRFLOW_API_TIMEOUT``, 30 by default): Airflow's api-server on a loaded
        2-core machine can take well over 10 s. A class-level default, so subclasses that bring their own
        ``__init__`` (``aiir.cluster.ClusterAirflow``) have it too."""
        if self._timeout is not None:
            return self._timeout
        return float(os.environ.get("AIIR_AIRFLOW_API_TIMEOUT", "30"))

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._timeout = value

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "airflow"), *args], env=self.env, capture_output=True,
                              text=True, check=check, timeout=timeout)

    def start(self, timeout: float | None = None) -> Airflow:
        # a loaded 2-core machine (CI, a busy laptop) can take minutes to bring the api-server up
        timeout = timeout if timeout is not None else float(os.environ.get("AIIR_AIRFLOW_START_TIMEOUT", "600"))
        self.cli("db", "migrate")
        self.service = _spawn("airflow", [str(VENV_BIN / "airflow"), "standalone"], self.env,
                              self.home / "standalone.log", self.url)
        wait_until(lambda: http_json("GET", f"{self.url}/api/v2/monitor/health", timeout=3),
                   timeout=timeout, what="airflow api-server health", service=self.service)
        return self

    def stop(self) -> None:
        if self.service:
            self.service.stop()

    # --- REST API (v2) -------------------------------------------------------------------------
    def token(self) -> str:
        if self._token is None:
            self._token = http_json("GET", f"{self.url}/auth/token", timeout=self.timeout)["access_token"]
        return self._token

    def api(self, method: str, path: str, body: Any = None, *, tries: int = 4, repeatable: bool | None = None,
            on_repeat_conflict: Any = None) -> Any:
        """One REST call. Repeatable calls (by default GET and PATCH) are retried on a 5xx (Airflow on SQLite
        answers 500 now and then when its database is locked by the scheduler) and on a timeout or a dropped
        connection (a loaded 2-core machine can keep the api-server busy past the timeout). A repeat answered
        409 means an earlier try went through: ``on_repeat_conflict()`` is returned instead."""
        attempts = tries if (method in ("GET", "PATCH") if repeatable is None else repeatable) else 1
        for i in range(attempts):
            try:
                return http_json(method, f"{self.url}/api/v2{path}", body, token=self.token(), timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                if exc.code == 409 and i > 0 and on_repeat_conflict is not None:
                    return on_repeat_conflict()
                if exc.code < 500 or i == attempts - 1:
                    raise
            except (TimeoutError, urllib.error.URLError, ConnectionError):
                if i == attempts - 1:
                    raise
            time.sleep(0.5 * (i + 1))

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        return wait_until(lambda: self.api("GET", f"/dags/{dag_id}"), timeout=timeout,
                          what=f"DAG {dag_id} to be parsed", service=self.service)

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None, *, tries: int = 4) -> dict:
        """Create a DAG run. The run id is chosen here (Airflow's own ``manual__<logical date>`` form unless
        given), so a try that timed out after Airflow created the run is safe to repeat: the repeat's 409 names
        that run, which is returned."""
        from datetime import UTC, datetime

        logical = datetime.now(UTC)
        run_id = run_id or f"manual__{logical.isoformat()}"
        body: dict[str, Any] = {"conf": conf or {}, "logical_date": logical.isoformat(), "dag_run_id": run_id}
        return self.api("POST", f"/dags/{dag_id}/dagRuns", body, tries=tries, repeatable=True,
                        on_repeat_conflict=lambda: self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns?order_by=-start_date&limit=50")["dag_runs"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> dict:
        def done():
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            return run if run["state"] in ("success", "failed") else None

        return wait_until(done, timeout=timeout, interval=0.5, what=f"{dag_id}/{run_id} to finish",
                          service=self.service)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=200")["task_instances"]

    def wait_for_input(self, dag_id: str, run_id: str, task_id: str, *, timeout: float = 600,
                       settle_s: float = 2.0) -> dict:
        """Wait until a human-in-the-loop task waits for a person *and* its paused try has been handed back:
        the task instance is ``awaiting_input`` and no local process still carries its id. Airflow 3.3.2
        marks a task answered before the scheduler has received the executor's event for its pause
        ``up_for_retry``, and the retry asks again with the answer cleared (docs/playbooks.md, known limits);
        under load that event can lag the pause by several seconds. ``settle_s`` covers one scheduler loop."""
        def ti():
            return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")

        def paused_and_released():
            t = ti()
            if t.get("state") != "awaiting_input":
                return None
            return t if not procfs.with_text(str(t.get("id") or "")) else None

        t = wait_until(paused_and_released, timeout=timeout, interval=0.5,
                       what=f"{dag_id}/{run_id}/{task_id} to wait for a person", service=self.service)
        time.sleep(settle_s)
        return t

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        out = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")
        return out.get("value")


def start_gateway(model: str, *, port: int | None = None, extra: list[str] | None = None,
                  env: dict[str, str] | None = None, timeout: float = 90) -> Service:
    """``aiir serve`` as a real process; waits for ``/ping``."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    p = config.paths().ensure()
    full_env = {**os.environ, **(env or {}), "AIIR_HOME": str(p.home), "AIIR_GATEWAY_URL": url}
    svc = _spawn(f"gateway:{model}", [str(VENV_BIN / "aiir"), "serve", "--model", model, "--port", str(port),
                                      *(extra or [])], full_env, p.gateway / f"{model}.serve.log", url)
    wait_until(lambda: http_json("GET", f"{url}/ping", timeout=2) is not None or True, timeout=timeout,
               what=f"gateway {model} /ping", service=svc)
    return svc
