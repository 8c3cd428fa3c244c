"""Reading docker-compose.yaml the way Compose does (merge keys, ${VAR} interpolation, env_file) and
comparing every service with its rendering in :mod:`aiir.deploy`."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
SCHEMA = Path(__file__).with_name("compose_spec.json")
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def load_yaml(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text())


def variables(text: str) -> list[tuple[str, str | None]]:
    """Every ``${VAR...}`` of a compose file: (name, operator) — operator ``:?``/``?`` means required."""
    return [(m.group(1) or m.group(4), m.group(2)) for m in _VAR.finditer(text) if m.group(0) != "$$"]


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings(k) + strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation: ``$$`` → ``$``; ``${V}``, ``${V:-d}``, ``${V-d}``, ``${V:?e}``, ``${V?e}``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1) or m.group(4), m.group(2), m.group(3)
        val = env.get(name)
        if op in (":-", "-"):
            return val if (val if op == ":-" else val is not None) else arg
        if op in (":?", "?") and (val is None or (op == ":?" and val == "")):
            raise KeyError(f"{name}: required ({arg})")
        return val or ""

    return _VAR.sub(sub, value)


def read_example_env(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def service_environment(svc: dict[str, Any], compose_dir: Path = REPO) -> dict[str, str]:
    """env_file first, then environment (which wins), as Compose does."""
    from aiir.deploy import read_env_file

    env: dict[str, str] = {}
    files = svc.get("env_file") or []
    for f in [files] if isinstance(files, str) else files:
        env.update(read_env_file(compose_dir / (f if isinstance(f, str) else f["path"])))
    environment = svc.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    env.update({k: "" if v is None else str(v) for k, v in environment.items()})
    return env


def effective_command(svc: dict[str, Any]) -> list[str]:
    """What the container runs, for aiir-image services: the Airflow image's entrypoint puts ``airflow``
    in front of its command; with ``entrypoint: [dumb-init, --]`` the command runs as is."""
    cmd = svc.get("command") or []
    cmd = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    entry = svc.get("entrypoint")
    if entry is None:
        return ["airflow", *cmd]
    entry = shlex.split(entry) if isinstance(entry, str) else list(entry)
    if entry == ["/usr/bin/dumb-init", "--"]:
        return cmd
    return [*entry, *cmd]


def mismatches(doc: dict[str, Any], example: dict[str, str], native_env=None) -> list[str]:
    """Every difference between the compose document (interpolated with ``example``) and aiir.deploy.
    ``native_env(name) -> dict`` is the native cluster's environment of a service (optional)."""
    from aiir import deploy

    doc = interpolate(doc, example)
    secrets = deploy.Secrets.from_env(example)
    services = doc.get("services", {})
    problems: list[str] = []
    for spec in deploy.SERVICES:
        svc = services.get(spec.name)
        if svc is None:
            problems.append(f"{spec.name}: no such service in docker-compose.yaml")
            continue
        if spec.image != "aiir":
            continue
        if svc.get("build", {}).get("dockerfile") != "deploy/airflow/Dockerfile":
            problems.append(f"{spec.name}: not built from deploy/airflow/Dockerfile")
        want = deploy.service_env(spec.name, deploy.COMPOSE, secrets)
        got = {k: v for k, v in service_environment(svc).items() if k not in deploy.COMPOSE_ONLY}
        for k in sorted(set(want) | set(got)):
            if want.get(k) != got.get(k):
                problems.append(f"{spec.name}: {k} is {got.get(k)!r} in compose, {want.get(k)!r} in aiir.deploy")
        argv = spec.render(deploy.COMPOSE, secrets)
        if spec.one_shot:
            script = " ".join(effective_command(svc))
            if " ".join(argv) not in script:
                problems.append(f"{spec.name}: compose does not run {' '.join(argv)!r}")
        elif effective_command(svc) != argv:
            problems.append(f"{spec.name}: compose runs {effective_command(svc)}, aiir.deploy {argv}")
        if native_env is not None:
            env = native_env(spec.name)
            extra_native = {k for k in env if k not in want and k.startswith(("AIRFLOW", "AIIR", "MLFLOW"))}
            for k in sorted(extra_native - set(deploy.NATIVE_ONLY)):
                problems.append(f"{spec.name}: the native cluster sets {k}, compose does not")
            missing = [k for k in want if k not in env]
            for k in missing:
                problems.append(f"{spec.name}: the native cluster does not set {k}")
            shared = deploy.shared_settings()
            for k, v in shared.items():
                if env.get(k) != v:
                    problems.append(f"{spec.name}: native {k}={env.get(k)!r}, distributed.env says {v!r}")
    return problems
