"""The distributed setup as processes on one machine: what ``make test-distributed`` starts.

The same services as docker-compose.yaml, with the same commands and settings (both come from
:mod:`aiir.deploy`), on 127.0.0.1 and free ports:

* PostgreSQL (Debian's package; own data folder; databases ``airflow`` and ``mlflow``) and Redis,
* ``airflow db migrate`` (the compose ``airflow-init`` job), the MLflow tracking server on Postgres,
  ``aiir bootstrap``, the gateway (``aiir serve``),
* Airflow api-server, scheduler, dag-processor, triggerer and two Celery workers.

Every long-running service runs in its own session and is restarted when it exits on its own — the
``restart: always`` of compose — unless it was stopped or killed on purpose (:meth:`NativeCluster.kill`).
Each process has its own HOME and TMPDIR; the only state they share is ``AIIR_HOME`` (the shared
volume of compose, see docs/distributed.md) and the servers. Nothing here imports Airflow.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiir import deploy, runtime
from aiir.errors import AiirError, BadInput
from aiir.runtime import VENV_BIN, Service, free_port, http_json, wait_until


def http_ok(url: str, timeout: float = 3.0) -> bool:
    """GET ``url`` answers 2xx (any body: MLflow's /health says ``OK``, not JSON)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return 200 <= resp.status < 300


def pg_bin(tool: str) -> str:
    """A PostgreSQL server binary (Debian installs them under /usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), key=lambda p: int(p.split("/")[4]))
    if found:
        return found[-1]
    path = shutil.which(tool)
    if path:
        return path
    raise AiirError(f"PostgreSQL's {tool} not found: run `make distributed-deps` (apt-get install postgresql)")


def redis_bin() -> str:
    path = shutil.which("redis-server")
    if not path:
        raise AiirError("redis-server not found: run `make distributed-deps` (apt-get install redis-server)")
    return path


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its binaries as the Debian ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class _Proc:
    """One supervised service: its argv, environment, log, and the current process."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, url: str = "",
                 stop_signal: int = signal.SIGTERM):
        self.name, self.argv, self.env, self.log, self.url = name, argv, env, log, url
        self.stop_signal = stop_signal
        self.service: Service | None = None
        self.wanted = False  # the supervisor restarts it while this is True
        self.restarts = 0
        self.started_at: list[float] = []

    def start(self) -> Service:
        self.service = runtime._spawn(self.name, self.argv, self.env, self.log, self.url)
        self.wanted = True
        self.started_at.append(time.time())
        return self.service

    def alive(self) -> bool:
        return self.service is not None and self.service.alive()

    @property
    def pid(self) -> int | None:
        return self.service.pid if self.service else None

    def stop(self, timeout: float = 20.0) -> None:
        self.wanted = False
        svc = self.service
        if svc is None or not svc.alive():
            return
        try:
            os.killpg(svc.pid, self.stop_signal)
        except ProcessLookupError:
            return
        try:
            svc.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        svc.stop(5)  # SIGTERM/SIGKILL whatever is left of the group

    def tree(self) -> list[int]:
        """This service's process and every descendant (a task runner may start its own session)."""
        import psutil

        if not self.alive():
            return []
        try:
            root = psutil.Process(self.service.pid)
            return [root.pid, *(c.pid for c in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the service's process group and every descendant at once — the machine is gone,
        mid-task, no clean-up, no goodbye to the broker."""
        self.wanted = False
        if self.service and self.service.alive():
            pids = self.tree()
            try:
                os.killpg(self.service.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.service.proc.wait(10)


class NativeCluster:
    """Start with :meth:`start`, stop with :meth:`stop` (every process by its own id)."""

    LONG_RUNNING = ("postgres", "redis", "mlflow", "gateway", "airflow-apiserver", "airflow-scheduler",
                    "airflow-dag-processor", "airflow-triggerer", "airflow-worker-1", "airflow-worker-2")

    def __init__(self, root: Path, *, gateway_port: int | None = None, gateway_front: str | None = None,
                 secrets: deploy.Secrets | None = None, integrity_schedule: str = "none"):
        self.root = Path(root)
        self.secrets = secrets or deploy.Secrets.generate()
        ports = {k: free_port() for k in ("postgres", "redis", "api", "mlflow", "worker_logs_1",
                                          "worker_logs_2", "trigger_logs", "scheduler_health")}
        self.ports = ports
        self.gateway_port = gateway_port or free_port()
        self.aiir_home = self.root / "aiir-home"
        self.ep = deploy.Endpoints(
            postgres=f"127.0.0.1:{ports['postgres']}", redis=f"127.0.0.1:{ports['redis']}",
            apiserver=f"127.0.0.1:{ports['api']}", mlflow=f"127.0.0.1:{ports['mlflow']}",
            gateway=gateway_front or f"127.0.0.1:{self.gateway_port}", bind="127.0.0.1",
            api_port=ports["api"], mlflow_port=ports["mlflow"], gateway_port=self.gateway_port,
            aiir_home=str(self.aiir_home), airflow_home=str(self.root / "airflow-home"),
            code=str(deploy.config.REPO_ROOT), mlflow_artifacts=str(self.aiir_home / "mlflow" / "artifacts"),
            integrity_schedule=integrity_schedule)
        self.settings = deploy.shared_settings()
        self.procs: dict[str, _Proc] = {}
        self.timings: dict[str, float] = {}
        self.stop_timings: dict[str, float] = {}  # seconds from the start of stop() until each was down
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        # PostgreSQL's folder must be reachable by the postgres user: not under pytest's 0700 tmp.
        self.pg_dir = Path(os.environ.get("AIIR_PG_TMP", "/tmp")) / f"aiir-pg-{os.getpid()}-{ports['postgres']}"

    # ------------------------------------------------------------------ environment
    def env(self, name: str) -> dict[str, str]:
        """The process environment of one aiir-image service (what compose gives its container)."""
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("AIRFLOW", "AIIR", "MLFLOW", "_AIRFLOW"))}
        node = self.root / "nodes" / name
        (node / "home").mkdir(parents=True, exist_ok=True)
        (node / "tmp").mkdir(parents=True, exist_ok=True)
        env = {**base, **deploy.service_env(name, self.ep, self.secrets, self.settings)}
        env.update({
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(node / "home"), "TMPDIR": str(node / "tmp"),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.ports["scheduler_health"]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports["trigger_logs"]),
        })
        if name.startswith("airflow-worker-"):
            env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(self.ports[f"worker_logs_{name[-1]}"])
        return env

    def client_env(self) -> dict[str, str]:
        """For the test process and CLI calls: the same view of the shared store and servers."""
        return {"AIIR_HOME": str(self.aiir_home), "MLFLOW_TRACKING_URI": f"http://{self.ep.mlflow}",
                "AIIR_GATEWAY_URL": f"http://127.0.0.1:{self.gateway_port}"}

    def argv(self, name: str) -> list[str]:
        cmd = deploy.service(name).render(self.ep, self.secrets)
        return [str(VENV_BIN / cmd[0]), *cmd[1:]]

    # ------------------------------------------------------------------ stores
    def _init_postgres(self) -> None:
        s = self.secrets
        if self.pg_dir.exists():
            shutil.rmtree(self.pg_dir)
        self.pg_dir.mkdir(parents=True, mode=0o700)
        pwfile = self.pg_dir / "pw"
        pwfile.write_text(s.postgres_password + "\n")
        data = self.pg_dir / "data"
        if os.geteuid() == 0:
            shutil.chown(self.pg_dir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        subprocess.run([*_as_postgres_user(), pg_bin("initdb"), "-D", str(data), "-U", s.postgres_user,
                        f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, text=True, timeout=120)
        pwfile.unlink()

    def _pg_proc(self) -> _Proc:
        data = self.pg_dir / "data"
        argv = [*_as_postgres_user(), pg_bin("postgres"), "-D", str(data), "-p", str(self.ports["postgres"]),
                "-h", "127.0.0.1", "-k", str(self.pg_dir), "-c", "max_connections=300", "-c", "fsync=off",
                "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        return _Proc("postgres", argv, dict(os.environ), self.root / "logs" / "postgres.log",
                     stop_signal=signal.SIGINT)  # SIGINT = fast shutdown (SIGTERM waits for clients)

    def _psql(self, sql: str, db: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": self.secrets.postgres_password}
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.ports["postgres"]), "-U",
                              self.secrets.postgres_user, "-d", db, "-v", "ON_ERROR_STOP=1", "-tAc", sql],
                             env=env, capture_output=True, text=True, timeout=30)
        if out.returncode:
            raise AiirError(f"psql {sql!r}: {out.stderr.strip()}")
        return out.stdout.strip()

    def _pg_ready(self) -> bool:
        return subprocess.run([pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.ports["postgres"]),
                               "-U", self.secrets.postgres_user], capture_output=True).returncode == 0

    def _redis_proc(self) -> _Proc:
        d = self.root / "redis"
        d.mkdir(parents=True, exist_ok=True)
        argv = [redis_bin(), "--port", str(self.ports["redis"]), "--bind", "127.0.0.1", "--requirepass",
                self.secrets.redis_password, "--save", "", "--appendonly", "no", "--dir", str(d)]
        return _Proc("redis", argv, dict(os.environ), self.root / "logs" / "redis.log")

    def _redis_ready(self) -> bool:
        import socket

        with socket.create_connection(("127.0.0.1", self.ports["redis"]), timeout=2) as sock:
            sock.sendall(f"AUTH {self.secrets.redis_password}\r\nPING\r\n".encode())
            data = b""
            while b"PONG" not in data and len(data) < 200:
                chunk = sock.recv(100)
                if not chunk:
                    break
                data += chunk
            return b"PONG" in data

    # ------------------------------------------------------------------ services
    def _proc(self, name: str, url: str = "") -> _Proc:
        return _Proc(name, self.argv(name), self.env(name), self.root / "logs" / f"{name}.log", url)

    def _run_once(self, name: str, timeout: float = 600) -> None:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            rc = subprocess.run(self.argv(name), env=self.env(name), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, timeout=timeout).returncode
        if rc:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise AiirError(f"{name} exited {rc}; log {log}:\n{tail}")

    def api_url(self) -> str:
        return f"http://{self.ep.apiserver}"

    def _api_healthy(self) -> bool:
        h = http_json("GET", f"{self.api_url()}/api/v2/monitor/health", timeout=3)
        return h["metadatabase"]["status"] == "healthy"

    def _scheduler_healthy(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.ports['scheduler_health']}/health")

    def _job_alive(self, job_type: str) -> bool:
        h = http_json("GET", f"{self.api_url()}/api/v2/monitor/health", timeout=3)
        return h.get(job_type, {}).get("status") == "healthy"

    def _worker_ready(self, name: str) -> bool:
        return "ready." in (self.root / "logs" / f"{name}.log").read_text(errors="replace").split(
            "-- restart --")[-1]

    def start(self) -> NativeCluster:
        """Start everything; ``timings`` records when each service was ready (seconds from the start).

        Independent steps overlap, as compose starts them: MLflow migrates its database while
        ``airflow db migrate`` runs; the Airflow components start while ``aiir bootstrap`` trains."""
        t0 = time.perf_counter()

        def mark(name: str) -> None:
            self.timings[name] = round(time.perf_counter() - t0, 1)

        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self._init_postgres()
        self._launch("postgres")
        wait_until(self._pg_ready, timeout=60, what="postgres to be ready", service=self.procs["postgres"].service)
        mark("postgres")
        for db in deploy.DATABASES:
            self._psql(f"CREATE DATABASE {db}")
        self._launch("redis")
        wait_until(self._redis_ready, timeout=30, what="redis to be ready", service=self.procs["redis"].service)
        mark("redis")
        self._launch("mlflow")
        self._run_once("airflow-init")
        mark("airflow-init")
        self._write_gateway_token()
        airflow = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                   "airflow-worker-1", "airflow-worker-2")
        for name in airflow:
            self._launch(name)
        wait_until(lambda: http_ok(f"http://{self.ep.mlflow}/health"), timeout=300, what="mlflow to be ready",
                   service=self.procs["mlflow"].service)
        mark("mlflow")
        self._run_once("aiir-bootstrap")
        mark("aiir-bootstrap")
        self._launch("gateway")
        ready = {
            "gateway": lambda: http_ok(f"http://127.0.0.1:{self.gateway_port}/ping"),
            "airflow-apiserver": self._api_healthy,
            "airflow-scheduler": self._scheduler_healthy,
            "airflow-dag-processor": lambda: self._job_alive("dag_processor"),
            "airflow-triggerer": lambda: self._job_alive("triggerer"),
            "airflow-worker-1": lambda: self._worker_ready("airflow-worker-1"),
            "airflow-worker-2": lambda: self._worker_ready("airflow-worker-2"),
        }
        for name, check in ready.items():
            wait_until(check, timeout=300, what=f"{name} to be ready", service=self.procs[name].service)
            mark(name)
        mark("total")
        self._supervisor = threading.Thread(target=self._supervise, name="aiir-cluster-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def _launch(self, name: str) -> _Proc:
        proc = {"postgres": self._pg_proc, "redis": self._redis_proc}.get(name, lambda: self._proc(name))()
        self.procs[name] = proc
        proc.start()
        return proc

    def _write_gateway_token(self) -> None:
        """What compose's airflow-init does: the gateway's admin token file from AIIR_GATEWAY_ADMIN_TOKEN."""
        from aiir.gateway import TOKEN_FILE

        d = self.aiir_home / "gateway" / deploy.MODEL
        d.mkdir(parents=True, exist_ok=True)
        p = d / TOKEN_FILE
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.secrets.gateway_token + "\n")

    # ------------------------------------------------------------------ supervision (restart: always)
    def _supervise(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                for proc in self.procs.values():
                    if proc.wanted and not proc.alive():
                        code = proc.service.proc.returncode if proc.service else None
                        self.events.append({"at": time.time(), "service": proc.name, "event": "restarted",
                                            "exit_code": code})
                        with open(proc.log, "ab") as fh:
                            fh.write(f"\n-- restart -- (exit {code})\n".encode())
                        proc.restarts += 1
                        proc.start()

    # ------------------------------------------------------------------ faults and control
    def kill(self, name: str) -> float:
        """kill -9 the service's whole process group and leave it down; returns when it happened."""
        with self._lock:
            self.procs[name].kill()
        at = time.time()
        self.events.append({"at": at, "service": name, "event": "killed"})
        return at

    def revive(self, name: str) -> None:
        with self._lock:
            proc = self.procs[name]
            if not proc.alive():
                with open(proc.log, "ab") as fh:
                    fh.write(b"\n-- restart -- (revived)\n")
                proc.start()
        self.events.append({"at": time.time(), "service": name, "event": "revived"})

    def restart_postgres(self, down_seconds: float = 3.0) -> dict[str, float]:
        """Stop PostgreSQL (fast shutdown: every connection is cut), keep it down, start it again."""
        t0 = time.time()
        with self._lock:
            pg = self.procs["postgres"]
            pg.stop()
        time.sleep(down_seconds)
        with self._lock:
            pg.start()
        wait_until(self._pg_ready, timeout=60, what="postgres to come back", service=pg.service)
        t1 = time.time()
        self.events.append({"at": t0, "service": "postgres", "event": "stopped"})
        self.events.append({"at": t1, "service": "postgres", "event": "started"})
        return {"stopped_at": t0, "ready_at": t1}

    def service_of_port(self, local_port: int, remote_port: int) -> str | None:
        """The service whose process tree holds the TCP connection 127.0.0.1:local_port → remote_port
        (who sent a request the test is holding)."""
        import psutil

        owner = next((c.pid for c in psutil.net_connections(kind="tcp")
                      if c.laddr and c.laddr.port == local_port and c.raddr and c.raddr.port == remote_port
                      and c.pid), None)
        if owner is None:
            return None
        return next((n for n, p in self.procs.items() if owner in p.tree()), None)

    def pids(self) -> dict[str, int | None]:
        return {n: p.pid for n, p in self.procs.items()}

    def node_of_pid(self, pid: int) -> str | None:
        """Which service's process group a process belongs to."""
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            return None
        return next((n for n, p in self.procs.items() if p.pid == pgid), None)

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor:
            self._supervisor.join(5)
        # the services first, all at once (each is signalled and waited for by its own pid: a Celery worker's
        # warm shutdown or the api-server's workers take seconds each, one after the other ~25 s), then the
        # stores they were using
        services = [p for n, p in self.procs.items() if n not in ("postgres", "redis")]
        t0 = time.perf_counter()

        def stop(proc: _Proc) -> None:
            proc.stop()
            self.stop_timings[proc.name] = round(time.perf_counter() - t0, 1)

        threads = [threading.Thread(target=stop, args=(p,), name=f"stop-{p.name}", daemon=True) for p in services]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for proc in services:  # a stop that did not return in time: kill what is left of it
            if proc.alive():
                proc.kill()
        for name in ("redis", "postgres"):
            if name in self.procs:
                stop(self.procs[name])
        shutil.rmtree(self.pg_dir, ignore_errors=True)

    # ------------------------------------------------------------------ REST client
    def airflow(self) -> ClusterAirflow:
        return ClusterAirflow(self.api_url(), Path(self.ep.airflow_home))


class ClusterAirflow(runtime.Airflow):
    """The REST helpers of :class:`aiir.runtime.Airflow`, logged in as the simple auth manager's admin."""

    def __init__(self, url: str, airflow_home: Path):  # noqa: D107 - no process of its own
        self.url = url
        self.home = airflow_home
        self.service = None
        self._token = None

    def password(self) -> str:
        path = self.home / "simple_auth_manager_passwords.json.generated"
        try:
            return json.loads(path.read_text())["admin"]
        except (OSError, ValueError, KeyError) as exc:
            raise BadInput(str(path), f"no generated admin password ({exc})") from None

    def token(self) -> str:
        if self._token is None:
            self._token = http_json("POST", f"{self.url}/auth/token",
                                    {"username": "admin", "password": self.password()},
                                    timeout=self.timeout)["access_token"]
        return self._token


def with_endpoints(ep: deploy.Endpoints, **changes) -> deploy.Endpoints:
    return replace(ep, **changes)
