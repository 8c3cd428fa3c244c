"""The distributed setup in one place: its services, the command each runs, and every setting they get.

Two deployments are rendered from this module, so they cannot drift apart:

* ``docker-compose.yaml`` (containers; service names as host names), and
* the native cluster of ``make test-distributed`` (:mod:`aiir.cluster`: the same services as processes on
  127.0.0.1, PostgreSQL and Redis from Debian's packages).

Where each setting comes from:

* ``deploy/distributed.env`` — every setting that does not depend on where a service runs (executor,
  Celery acknowledgement, heartbeat timeouts, auth manager, ...). Compose loads the file with
  ``env_file:``; :func:`shared_settings` parses it for the native cluster.
* :func:`endpoint_env` — database, broker, execution-API, MLflow and gateway addresses and the folders,
  rendered from an :class:`Endpoints` value (:data:`COMPOSE`, or free ports on 127.0.0.1 natively).
* :class:`Secrets` — passwords and keys, from the environment only (``.env`` for compose; generated per
  run by the native cluster). Nothing secret is committed; ``.env.example`` documents each variable.

``tests/distributed/test_compose.py`` checks that docker-compose.yaml has a counterpart for every native
service with the same command and the same settings. Nothing here imports Airflow.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from aiir import config
from aiir.errors import BadInput

SETTINGS_FILE = config.REPO_ROOT / "deploy" / "distributed.env"
MODEL = "fraud-detector"
DATABASES = ("airflow", "mlflow")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def node_name() -> str:
    """Airflow's ``[core] hostname_callable``: the node a task ran on. ``AIIR_NODE_NAME`` when set (each
    native worker has its own, as each container has its own host name), else the FQDN."""
    return os.environ.get("AIIR_NODE_NAME") or socket.getfqdn()


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines; ``#`` comments and blank lines ignored; values taken literally."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(str(path), f"cannot read the settings file ({exc.strerror})") from None
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not _KEY.match(key):
            raise BadInput(f"{path}:{n}", f"expected KEY=VALUE, got {raw!r}")
        if key in out:
            raise BadInput(f"{path}:{n}", f"{key} is set twice")
        if value.startswith(("'", '"')) or "${" in value:
            raise BadInput(f"{path}:{n}", f"{key}: no quotes or ${{...}} (both readers take values literally)")
        out[key] = value
    return out


def shared_settings(path: Path | None = None) -> dict[str, str]:
    return read_env_file(path or SETTINGS_FILE)


# --- secrets --------------------------------------------------------------------------------------
SECRET_VARS: dict[str, str] = {
    "POSTGRES_USER": "database user of Airflow and MLflow",
    "POSTGRES_PASSWORD": "its password (letters and digits: it is placed in URLs as is)",
    "REDIS_PASSWORD": "the Celery broker's password (letters and digits)",
    "AIRFLOW_FERNET_KEY": "encrypts connection passwords in the metadata DB "
                          "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')",
    "AIRFLOW_API_SECRET_KEY": "signs the api-server's session cookies (any long random string)",
    "AIRFLOW_JWT_SECRET": "signs the tokens tasks use on the execution API; every component needs the same one",
    "AIIR_GATEWAY_ADMIN_TOKEN": "bearer token of the gateway's /admin API (written to its token file by "
                                "airflow-init; the workers get it through connection aiir_target_local)",
}


@dataclass(frozen=True)
class Secrets:
    postgres_user: str
    postgres_password: str
    redis_password: str
    fernet_key: str
    api_secret_key: str
    jwt_secret: str
    gateway_token: str

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Secrets:
        env = os.environ if env is None else env
        missing = [k for k in SECRET_VARS if not env.get(k)]
        if missing:
            raise BadInput(missing[0], "not set (see .env.example)")
        for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "REDIS_PASSWORD"):
            if not re.fullmatch(r"[A-Za-z0-9_]+", env[k]):
                raise BadInput(k, "letters, digits and '_' only (it is placed in connection URLs as is)")
        return cls(env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["REDIS_PASSWORD"], env["AIRFLOW_FERNET_KEY"],
                   env["AIRFLOW_API_SECRET_KEY"], env["AIRFLOW_JWT_SECRET"], env["AIIR_GATEWAY_ADMIN_TOKEN"])

    @classmethod
    def generate(cls) -> Secrets:
        import secrets

        from cryptography.fernet import Fernet

        return cls("aiir", secrets.token_hex(12), secrets.token_hex(12), Fernet.generate_key().decode(),
                   secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(32))

    def as_env(self) -> dict[str, str]:
        return dict(zip(SECRET_VARS, (self.postgres_user, self.postgres_password, self.redis_password,
                                      self.fernet_key, self.api_secret_key, self.jwt_secret, self.gateway_token),
                        strict=True))


# --- endpoints ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoints:
    """Where each service is reached (``host:port``), where servers listen, and the folders."""

    postgres: str
    redis: str
    apiserver: str
    mlflow: str
    gateway: str  # what clients (the workers) call: the gateway itself, or a proxy in front of it
    bind: str  # the address servers listen on
    api_port: int
    mlflow_port: int
    gateway_port: int
    aiir_home: str  # the shared store (see docs/distributed.md): incident workspaces, evidence, keys
    airflow_home: str
    code: str  # where dags/, plugins/ and include/ are
    mlflow_artifacts: str  # the MLflow server's artifact destination
    integrity_schedule: str = "@hourly"  # AIIR_INTEGRITY_SCHEDULE (the native test: "none", Asset events only)

    @property
    def dags(self) -> str:
        return f"{self.code}/dags"

    @property
    def plugins(self) -> str:
        return f"{self.code}/plugins"

    @property
    def include(self) -> str:
        return f"{self.code}/include"


COMPOSE = Endpoints(
    postgres="postgres:5432", redis="redis:6379", apiserver="airflow-apiserver:8080", mlflow="mlflow:5000",
    gateway="gateway:8080", bind="0.0.0.0", api_port=8080, mlflow_port=5000, gateway_port=8080,
    aiir_home="/opt/aiir", airflow_home="/opt/airflow", code="/opt/airflow", mlflow_artifacts="s3://aiir-mlflow",
)


def _db_url(ep: Endpoints, s: Secrets, db: str, driver: str = "postgresql+psycopg2") -> str:
    return f"{driver}://{s.postgres_user}:{s.postgres_password}@{ep.postgres}/{db}"


def target_connection(ep: Endpoints, s: Secrets) -> str:
    """Connection ``aiir_target_local`` (JSON form of ``AIRFLOW_CONN_*``): gateway address + admin token.
    Admin calls wait up to :data:`TARGET_TIMEOUT` s (the target's default, 5 s, is for a gateway on the
    same host; across a network and a loaded host a slow answer should not fail containment)."""
    host, _, port = ep.gateway.rpartition(":")
    return json.dumps({"conn_type": "aiir_target", "host": host, "port": int(port), "password": s.gateway_token,
                       "extra": {"timeout": TARGET_TIMEOUT}})


TARGET_TIMEOUT = 15.0


def endpoint_env(ep: Endpoints, s: Secrets) -> dict[str, str]:
    """Every setting of the aiir/Airflow services that depends on the deployment."""
    return {
        "AIRFLOW_HOME": ep.airflow_home,
        "AIRFLOW__CORE__DAGS_FOLDER": ep.dags,
        "AIRFLOW__CORE__PLUGINS_FOLDER": ep.plugins,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _db_url(ep, s, "airflow"),
        "AIRFLOW__CELERY__RESULT_BACKEND": _db_url(ep, s, "airflow", "db+postgresql+psycopg2"),
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:{s.redis_password}@{ep.redis}/0",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{ep.apiserver}/execution/",
        "AIRFLOW__API__HOST": ep.bind,
        "AIRFLOW__API__PORT": str(ep.api_port),
        "AIRFLOW__CORE__FERNET_KEY": s.fernet_key,
        "AIRFLOW__API__SECRET_KEY": s.api_secret_key,
        "AIRFLOW__API_AUTH__JWT_SECRET": s.jwt_secret,
        "AIRFLOW_CONN_AIIR_TARGET_LOCAL": target_connection(ep, s),
        "AIIR_HOME": ep.aiir_home,
        "MLFLOW_TRACKING_URI": f"http://{ep.mlflow}",
        "AIIR_GATEWAY_URL": f"http://{ep.gateway}",
        "AIIR_INTEGRITY_SCHEDULE": ep.integrity_schedule,
        "PYTHONPATH": f"{ep.include}:{ep.plugins}",
    }


# --- services -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServiceSpec:
    """One service. ``image``: ``aiir`` (deploy/airflow/Dockerfile; the Airflow image's entrypoint puts
    ``airflow`` in front of Airflow sub-commands), ``postgres`` or ``redis`` (official images in compose,
    Debian's packages natively). ``command`` is rendered with the endpoints and secrets."""

    name: str
    image: str
    command: tuple[str, ...]
    one_shot: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    health: str = ""  # what "up" means, natively and in the compose health check

    def render(self, ep: Endpoints, s: Secrets) -> list[str]:
        values = {**{k: getattr(ep, k) for k in ep.__dataclass_fields__}, "mlflow_db": _db_url(ep, s, "mlflow"),
                  "model": MODEL}
        return [part.format(**values) for part in self.command]


def _worker(n: int) -> ServiceSpec:
    name = f"airflow-worker-{n}"
    return ServiceSpec(name, "aiir", ("airflow", "celery", "worker", "--celery-hostname", f"{name}@%h"),
                       extra_env={"AIIR_NODE_NAME": name}, health="celery inspect ping")


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("postgres", "postgres", ("postgres",), health="pg_isready"),
    ServiceSpec("redis", "redis", ("redis-server",), health="redis-cli ping"),
    ServiceSpec("airflow-init", "aiir", ("airflow", "db", "migrate"), one_shot=True),
    ServiceSpec("mlflow", "aiir", ("mlflow", "server", "--backend-store-uri", "{mlflow_db}",
                                   "--artifacts-destination", "{mlflow_artifacts}", "--host", "{bind}",
                                   "--port", "{mlflow_port}", "--workers", "1",
                                   "--allowed-hosts", "*"), health="GET /health"),
    ServiceSpec("aiir-bootstrap", "aiir", ("aiir", "bootstrap"), one_shot=True),
    ServiceSpec("gateway", "aiir", ("aiir", "serve", "--model", "{model}", "--host", "{bind}",
                                    "--port", "{gateway_port}"), health="GET /ping"),
    ServiceSpec("airflow-apiserver", "aiir", ("airflow", "api-server"), health="GET /api/v2/monitor/health"),
    ServiceSpec("airflow-scheduler", "aiir", ("airflow", "scheduler"), health="GET :8974/health"),
    ServiceSpec("airflow-dag-processor", "aiir", ("airflow", "dag-processor"), health="airflow jobs check"),
    ServiceSpec("airflow-triggerer", "aiir", ("airflow", "triggerer"), health="airflow jobs check"),
    _worker(1),
    _worker(2),
)


def service(name: str) -> ServiceSpec:
    for s in SERVICES:
        if s.name == name:
            return s
    raise BadInput("service", f"no service {name!r} (known: {', '.join(s.name for s in SERVICES)})")


def service_env(name: str, ep: Endpoints, s: Secrets, settings: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one aiir-image service: shared settings, endpoints, the service's own."""
    spec = service(name)
    if spec.image != "aiir":
        raise BadInput("service", f"{name} runs the {spec.image} image; it has no aiir environment")
    return {**(shared_settings() if settings is None else settings), **endpoint_env(ep, s), **spec.extra_env}


# Settings the native cluster sets and compose does not, each for a reason that only holds natively.
NATIVE_ONLY: dict[str, str] = {
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "two workers share one host: each serves its logs on its own port",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "the triggerer's log server gets a free port",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": "the scheduler's health server gets a free port",
    "PATH": "the venv's bin/ first (the image has its own PATH)",
    "HOME": "each process gets its own home folder, as each container has its own file system",
    "TMPDIR": "each process gets its own temp folder: nothing may pass between tasks through local disk",
}
# Settings compose sets and the native cluster does not.
COMPOSE_ONLY: dict[str, str] = {
    "DUMB_INIT_SETSID": "the image's init must pass signals to Celery's children for a warm shutdown",
    "MLFLOW_S3_ENDPOINT_URL": "MLflow's artifacts go to MinIO in compose, to a folder of the shared store natively",
    "AWS_ACCESS_KEY_ID": "MLflow's MinIO credentials (compose only, see MLFLOW_S3_ENDPOINT_URL)",
    "AWS_SECRET_ACCESS_KEY": "MLflow's MinIO credentials (compose only, see MLFLOW_S3_ENDPOINT_URL)",
    "AIIR_GATEWAY_ADMIN_TOKEN": "airflow-init writes the gateway's token file from it (natively: aiir.cluster)",
}
