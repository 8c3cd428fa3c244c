"""The one verified model loader: a model whose artifact changed by one byte, or whose signature fails (swapped,
manifest swapped, re-signed by an unknown key) while its bytes still match the digest, is refused before
anything is unpickled — by the loader itself, forensics, triage and the serving gateway alike."""

from __future__ import annotations

import json

import pytest

from aiir.errors import IntegrityError
from tests.conftest import run_aiir

# ------------------------------------------------------------------------------------ the signature at load
# These run first (the module's `tampered` fixture below flips a byte of v1 for good): the artifact bytes
# stay exactly as registered (the digest matches), only the signature beside it is attacked; each test puts
# the files and the tag back.

ATTACKS = ("signature_swapped", "manifest_swapped", "resigned_by_unknown_key")


@pytest.fixture
def attacked(demo_home, request, tmp_path):
    """fraud-detector v1 with its signature attacked as ``request.param`` says, restored afterwards."""
    import shutil
    from pathlib import Path

    from aiir import registry
    from aiir.audit import signing

    mv = registry.get_version("fraud-detector", "1")
    other = json.loads(registry.get_version("diagnosis-classifier", "1").tags["aiir.signature"])
    rec = json.loads(mv.tags["aiir.signature"])
    sig, man = Path(rec["signature"]), Path(rec["manifest"])
    saved = {f: f.read_bytes() for f in (sig, man)}
    c = registry.client()
    if request.param == "signature_swapped":  # a validly signed signature of another model, the tag made to match
        shutil.copyfile(other["signature"], sig)
        shutil.copyfile(other["manifest"], man)
        forged = {**rec, "signature_sha256": other["signature_sha256"]}
        want = "CHANGED: model.pkl"
    elif request.param == "manifest_swapped":  # the readable file list of another model
        shutil.copyfile(other["manifest"], man)
        forged = rec
        want = "MANIFEST: artifacts.manifest.json does not match the signed statement"
    else:  # the same, unchanged files signed again by a key nobody trusts; the tag updated to the new file
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        r = signing.sign_artifact(mv.artifact_dir, kind="model", name="fraud-detector/1", reuse=False,
                                  spec=signing.SignerSpec(key_pem=signing._pkcs8(key)))
        forged = {**rec, "signature_sha256": r["signature_sha256"]}
        want = f"signed by key {signing.key_id(key)}, which is not a trusted key"
    c.set_model_version_tag("fraud-detector", "1", "aiir.signature", json.dumps(forged))
    from aiir.models import artifact_digest

    assert artifact_digest(mv.artifact_dir) == mv.tags["aiir.artifact_sha256"]  # the bytes are as registered
    yield {"kind": request.param, "want": want, "folder": str(mv.artifact_dir)}
    for f, b in saved.items():
        f.write_bytes(b)
    c.set_model_version_tag("fraud-detector", "1", "aiir.signature", json.dumps(rec))


@pytest.mark.parametrize("attacked", ATTACKS, indirect=True)
def test_loader_refuses_a_model_whose_signature_fails_and_names_what(attacked):
    from aiir.audit import signing
    from aiir.models import load_verified

    with pytest.raises(IntegrityError) as exc:
        load_verified("fraud-detector", "1", cache=False)
    msg = str(exc.value)
    assert attacked["folder"] in msg and "fraud-detector v1" in msg and "does not match its signature" in msg
    assert attacked["want"] in msg, msg
    # the loader's check agrees with model_signing's own verification (`aiir verify`)
    from aiir import registry

    rec = json.loads(registry.get_version("fraud-detector", "1").tags["aiir.signature"])
    full = signing.verify_artifact(attacked["folder"], rec["signature"], kind="model",
                                   expected_signature_sha256=rec["signature_sha256"])
    assert not full.ok


@pytest.mark.parametrize("attacked", ATTACKS, indirect=True)
def test_forensics_and_triage_refuse_it(attacked):
    from aiir import playbook
    from aiir.forensics import load_scorer
    from aiir.incident import validate_conf

    with pytest.raises(IntegrityError, match="does not match its signature"):
        load_scorer("fraud-detector", "1")
    rec = validate_conf({"model_name": "fraud-detector", "incident_id": f"INC-sig-triage-{attacked['kind']}"})
    playbook.open_incident(rec)
    with pytest.raises(IntegrityError, match="does not match its signature"):
        playbook.triage(rec)


@pytest.mark.parametrize("attacked", ("signature_swapped", "resigned_by_unknown_key"), indirect=True)
def test_gateway_refuses_to_serve_it_at_start(attacked):
    from tests.gateway.gwkit import free_port

    r = run_aiir("serve", "--model", "fraud-detector", "--port", str(free_port()), timeout=180)
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    assert "does not match its signature" in r.stderr and attacked["want"] in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_a_good_signature_loads_without_importing_model_signing(demo_home):
    """The check at load needs `cryptography` only: a containment path never waits on model_signing/sigstore."""
    import subprocess
    import sys

    code = ("import sys, json; from aiir.models import load_verified; vm = load_verified('fraud-detector', '1'); "
            "print(json.dumps({'sig': vm.signature, 'ms': [m for m in sys.modules if m.split('.')[0] in "
            "('model_signing', 'sigstore')]}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"sig": "verified", "ms": []}


def test_an_unsigned_version_is_refused_unless_allowed(demo_home, monkeypatch):
    """Registered before signing existed (digest, no signature): refused by default, with the remedy;
    AIIR_ALLOW_UNSIGNED_MODELS=1 accepts it knowingly (the digest is still checked)."""
    from aiir import registry
    from aiir.models import ALLOW_UNSIGNED_ENV, load_verified

    c = registry.client()
    raw = registry.get_version("diagnosis-classifier", "1").tags["aiir.signature"]
    c.delete_model_version_tag("diagnosis-classifier", "1", "aiir.signature")
    try:
        monkeypatch.delenv(ALLOW_UNSIGNED_ENV, raising=False)
        with pytest.raises(IntegrityError, match=r"no recorded signature .*aiir sign model:NAME/VERSION"):
            load_verified("diagnosis-classifier", "1", cache=False)
        monkeypatch.setenv(ALLOW_UNSIGNED_ENV, "1")
        assert load_verified("diagnosis-classifier", "1", cache=False).signature == "unsigned (allowed)"
    finally:
        c.set_model_version_tag("diagnosis-classifier", "1", "aiir.signature", raw)
    monkeypatch.delenv(ALLOW_UNSIGNED_ENV)
    assert load_verified("diagnosis-classifier", "1", cache=False).signature == "verified"


# ------------------------------------------------------------------------------------ the digest at load

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
