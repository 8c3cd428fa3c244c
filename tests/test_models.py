"""The one verified model loader: a model whose artifact changed by one byte is refused before anything
is unpickled — by the loader itself, forensics, triage and the serving gateway alike."""

from __future__ import annotations

import json

import pytest

from aiir.errors import IntegrityError
from tests.conftest import run_aiir


@pytest.fixture(scope="module")
def tampered(demo_home):
    """The demo with one byte of v1's pickled model flipped (v1 = champion and last-known-good)."""
    from aiir import registry

    mv = registry.get_version("fraud-detector", "1")
    pkl = next(p for p in sorted(mv.artifact_dir.rglob("*")) if p.is_file() and p.suffix == ".pkl")
    data = bytearray(pkl.read_bytes())
    data[len(data) // 2] ^= 0x01
    pkl.write_bytes(bytes(data))
    return mv, pkl


def test_loader_refuses_and_names_the_folder_and_both_digests(tampered):
    from aiir.models import load_verified

    mv, _ = tampered
    with pytest.raises(IntegrityError) as exc:
        load_verified("fraud-detector", "1", cache=False)
    msg = str(exc.value)
    assert str(mv.artifact_dir) in msg and mv.tags["aiir.artifact_sha256"] in msg and "changed since" in msg


def test_forensics_scorer_refuses(tampered):
    from aiir.forensics import load_scorer

    with pytest.raises(IntegrityError):
        load_scorer("fraud-detector", "1")


def test_triage_refuses(tampered):
    from aiir import playbook
    from aiir.incident import validate_conf

    rec = validate_conf({"model_name": "fraud-detector", "incident_id": "INC-tamper-triage"})
    playbook.open_incident(rec)
    with pytest.raises(IntegrityError):
        playbook.triage(rec)


def test_gateway_refuses_to_serve_it(tampered, demo_home, tmp_path):
    from tests.gateway.gwkit import free_port

    r = run_aiir("serve", "--model", "fraud-detector", "--port", str(free_port()), timeout=180)
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    assert "changed since registration" in r.stderr and "Traceback" not in r.stderr


def test_an_untampered_version_loads(demo_home):
    """Control: the same loader accepts an intact registered version (v1 of the breast-cancer model)."""
    from aiir import registry
    from aiir.models import load_verified

    names = json.loads((demo_home / "registry" / "models.json").read_text())
    other = next(n for n in names if n != "fraud-detector")
    v = registry.resolve_alias(other, "champion")
    vm = load_verified(other, v, cache=False)
    assert vm.digest == registry.get_version(other, v).tags["aiir.artifact_sha256"]
