"""docker-compose.yaml: valid against the Compose Specification's JSON schema, and the same services,
commands and settings as the native cluster (both rendered from aiir.deploy).

The schema (``compose_spec.json``) is the Compose Specification's schema as shipped in the PyPI package
docker-compose 1.29.2 (file ``compose/config/compose_spec.json``); sha256 pinned below. No network.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re

import pytest

from tests.distributed import compose_check as cc

SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"


def _validator():
    import jsonschema

    schema = json.loads(cc.SCHEMA.read_text())
    return jsonschema.Draft201909Validator(schema)


def test_vendored_schema_is_the_pinned_file():
    assert hashlib.sha256(cc.SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256


def test_compose_file_is_valid_against_the_compose_spec_schema():
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in _validator().iter_errors(cc.load_yaml())]
    assert errors == []


def test_the_schema_check_can_fail():
    doc = json.loads(json.dumps(cc.load_yaml()))  # a deep copy: anchors load as shared objects
    doc["services"]["redis"]["restrat"] = "always"
    doc["services"]["airflow-scheduler"]["depends_on"]["postgres"]["condition"] = "service_ready"
    errors = {"/".join(map(str, e.path)) for e in _validator().iter_errors(doc)}
    assert errors == {"services/redis", "services/airflow-scheduler/depends_on"}


def test_every_native_service_has_its_compose_counterpart_with_the_same_settings(tmp_path):
    from aiir.cluster import NativeCluster

    native = NativeCluster(tmp_path)
    assert cc.mismatches(cc.load_yaml(), cc.read_example_env(), native_env=native.env) == []


def test_the_counterpart_check_can_fail():
    example = cc.read_example_env()
    doc = json.loads(json.dumps(cc.load_yaml()))
    doc["x-airflow-common"]["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = "http://elsewhere/"
    doc["services"]["airflow-worker-2"]["command"] = ["celery", "worker"]
    del doc["services"]["gateway"]
    import yaml

    # anchors are resolved at load time: re-load so the change reaches every service
    doc = yaml.safe_load(yaml.safe_dump(doc))
    problems = cc.mismatches(doc, example)
    assert any("gateway: no such service" in p for p in problems)
    assert any("airflow-worker-2: compose runs" in p for p in problems)
    changed = json.loads(json.dumps(cc.load_yaml()))
    for svc in changed["services"].values():
        if isinstance(svc.get("environment"), dict) and "AIRFLOW__CORE__EXECUTION_API_SERVER_URL" in svc["environment"]:
            svc["environment"] = {**svc["environment"], "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://elsewhere/"}
    assert any("EXECUTION_API_SERVER_URL" in p for p in cc.mismatches(changed, example))


def test_native_settings_missing_from_compose_are_reported(tmp_path):
    from aiir.cluster import NativeCluster

    native = NativeCluster(tmp_path)
    problems = cc.mismatches(cc.load_yaml(), cc.read_example_env(),
                             native_env=lambda n: {**native.env(n), "AIRFLOW__CORE__SECRET_SAUCE": "1"})
    assert any("the native cluster sets AIRFLOW__CORE__SECRET_SAUCE" in p for p in problems)


def _commented(text: str, name: str) -> bool:
    """The assignment of ``name`` sits under a comment (other assignments of the same group may be between)."""
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith(f"{name}="))
    while i > 0 and re.match(r"^[A-Z_]+=", lines[i - 1]):
        i -= 1
    return i > 0 and lines[i - 1].startswith("# ")


def test_every_variable_is_documented_in_env_example_and_secrets_have_no_default():
    from aiir import deploy

    text = "\n".join(cc.strings(cc.load_yaml()))  # values only: comments may say $EDITOR
    example_text = cc.ENV_EXAMPLE.read_text()
    documented = cc.read_example_env()
    used = cc.variables(text)
    undocumented = sorted({name for name, _ in used if name not in documented})
    assert undocumented == []
    for name in deploy.SECRET_VARS:
        ops = {op for n, op in used if n == name}
        assert ops == {":?"}, f"{name} must be required (${{{name}:?...}}) everywhere, found {ops}"
        assert _commented(example_text, name), f"{name} has no comment in .env.example"
    # every secret placeholder is visibly not a real value
    for name in deploy.SECRET_VARS:
        if name != "POSTGRES_USER":
            assert documented[name].startswith("CHANGE_ME"), name
    for name in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        assert documented[name].startswith("CHANGE_ME") and (name, ":?") in used


def test_compose_refuses_to_start_without_a_secret():
    example = cc.read_example_env()
    del example["AIRFLOW_JWT_SECRET"]
    with pytest.raises(KeyError, match="AIRFLOW_JWT_SECRET"):
        cc.interpolate(cc.load_yaml(), example)


def test_long_running_services_have_health_checks_and_restart():
    from aiir import deploy

    services = cc.load_yaml()["services"]
    for spec in deploy.SERVICES:
        svc = services[spec.name]
        if spec.one_shot:
            assert "restart" not in svc and "healthcheck" not in svc, spec.name
        else:
            assert svc.get("restart") == "always", spec.name
            assert svc.get("healthcheck", {}).get("test"), spec.name
    for name in ("minio",):
        assert services[name]["healthcheck"]["test"]


def test_code_is_mounted_and_the_shared_store_is_one_volume():
    services = cc.load_yaml()["services"]
    for name in ("airflow-scheduler", "airflow-worker-1", "airflow-worker-2", "gateway", "mlflow"):
        vols = services[name]["volumes"]
        for folder in ("dags", "plugins", "include"):
            assert f"./{folder}:/opt/airflow/{folder}:ro" in vols, (name, folder)
        assert "aiir-home:/opt/aiir" in vols, name


def test_evidence_bucket_is_created_with_object_lock():
    init = cc.load_yaml()["services"]["minio-init"]
    script = " ".join(init["command"])
    assert "mc mb --ignore-existing --with-lock local/aiir-evidence" in script
    assert "mc retention set --default COMPLIANCE" in script
    assert cc.load_yaml()["services"]["mlflow"]["depends_on"]["minio-init"]["condition"] == \
        "service_completed_successfully"


def test_image_extends_the_official_airflow_image_with_requirements():
    dockerfile = (cc.REPO / "deploy" / "airflow" / "Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11$", dockerfile, re.M)
    assert "-r /tmp/aiir/requirements.txt" in dockerfile
    reqs = (cc.REPO / "requirements.txt").read_text().splitlines()
    assert "apache-airflow-providers-celery==3.26.0" in reqs


def test_postgres_serves_both_databases():
    from aiir import deploy

    pg = cc.load_yaml()["services"]["postgres"]
    script = (cc.REPO / "deploy" / "postgres" / "create-databases.sh").read_text()
    created = {pg["environment"]["POSTGRES_DB"], *re.findall(r"CREATE DATABASE (\w+);", script)}
    assert created == set(deploy.DATABASES)


def test_settings_file_errors_name_the_line(tmp_path):
    from aiir.deploy import read_env_file
    from aiir.errors import BadInput

    bad = tmp_path / "bad.env"
    bad.write_text("# ok\nAIRFLOW__CORE__EXECUTOR=CeleryExecutor\nthis is not a setting\n")
    with pytest.raises(BadInput, match=r"bad.env:3: expected KEY=VALUE"):
        read_env_file(bad)
    bad.write_text("A=1\nA=2\n")
    with pytest.raises(BadInput, match=r"bad.env:2: A is set twice"):
        read_env_file(bad)
    bad.write_text("A=${B}\n")
    with pytest.raises(BadInput, match="no quotes"):
        read_env_file(bad)
    with pytest.raises(BadInput, match="cannot read"):
        read_env_file(tmp_path / "missing.env")


def test_secrets_from_the_environment_are_checked():
    from aiir.deploy import Secrets
    from aiir.errors import BadInput

    env = cc.read_example_env()
    assert Secrets.from_env(env).postgres_user == "aiir"
    with pytest.raises(BadInput, match="REDIS_PASSWORD: not set"):
        Secrets.from_env({k: v for k, v in env.items() if k != "REDIS_PASSWORD"})
    with pytest.raises(BadInput, match="POSTGRES_PASSWORD: letters"):
        Secrets.from_env({**env, "POSTGRES_PASSWORD": "p@ss/word"})


def test_node_name_default_and_override(monkeypatch):
    import socket

    from aiir.deploy import node_name

    monkeypatch.delenv("AIIR_NODE_NAME", raising=False)
    assert node_name() == socket.getfqdn()
    monkeypatch.setenv("AIIR_NODE_NAME", "airflow-worker-2")
    assert node_name() == "airflow-worker-2"


def test_interpolation_follows_compose():
    env = {"A": "x", "E": ""}
    assert cc.interpolate("$${A}-${A}-${B:-d}-${E:-d}-${E-d}-${B-d}", env) == "${A}-x-d-d--d"
    with pytest.raises(KeyError):
        cc.interpolate("${E:?needed}", env)
    assert copy.deepcopy(cc.interpolate({"k": ["${A}"]}, env)) == {"k": ["x"]}
