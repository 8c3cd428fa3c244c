"""Signing and verifying artifacts with model-signing: every change is detected and named."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from aiir.audit import signing
from aiir.errors import BadInput

from .pki import make_pki


@pytest.fixture
def model_dir(aiir_home, tmp_path):
    d = tmp_path / "models" / "m-1" / "artifacts"
    d.mkdir(parents=True)
    (d / "MLmodel").write_text("flavors: {}\n")
    (d / "model.pkl").write_bytes(os.urandom(64 * 1024))
    (d / "sub").mkdir()
    (d / "sub" / "conda.yaml").write_text("name: x\n")
    return d


@pytest.fixture
def dataset(tmp_path):
    f = tmp_path / "data" / "train.csv"
    f.parent.mkdir()
    f.write_text("a,b,label\n1,2,0\n3,4,1\n5,6,0\n")
    return f


def test_default_key_is_created_once_private_and_ecdsa(aiir_home, model_dir):
    rec = signing.sign_artifact(model_dir, kind="model", name="m/1")
    key = aiir_home / "keys" / signing.ARTIFACT_KEY_FILENAME
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600
    assert (key.parent.stat().st_mode & 0o777) == 0o700
    assert rec["method"] == "key" and rec["key_id"] == signing.key_id(signing.load_or_create_artifact_key())
    # beside the artifact, never inside it
    assert rec["signature"] == str(model_dir.with_name("artifacts.sig"))
    assert not any(p.name.endswith(".sig") for p in model_dir.rglob("*"))
    m = json.loads(model_dir.with_name("artifacts.manifest.json").read_text())
    assert {f["name"] for f in m["files"]} == {"MLmodel", "model.pkl", "sub/conda.yaml"}
    assert m["signature_sha256"] == rec["signature_sha256"] and m["tool"]["name"] == "model-signing"


def test_intact_model_verifies_and_mlflow_volatile_file_is_ignored(aiir_home, model_dir):
    rec = signing.sign_artifact(model_dir, kind="model", name="m/1")
    (model_dir / "registered_model_meta").write_text("written by mlflow on load\n")
    res = signing.verify_artifact(model_dir, expected_signature_sha256=rec["signature_sha256"])
    assert res.ok and res.status == "verified" and res.messages[0].startswith("INTACT")
    assert res.files_checked == 3


def test_one_byte_of_a_model_file_is_named(aiir_home, model_dir):
    signing.sign_artifact(model_dir, kind="model", name="m/1")
    b = bytearray((model_dir / "model.pkl").read_bytes())
    b[1000] ^= 0x01
    (model_dir / "model.pkl").write_bytes(b)
    res = signing.verify_artifact(model_dir)
    assert not res.ok and res.signature_ok is True and res.content_ok is False
    assert res.changed == ["model.pkl"] and res.status == "tampered"
    assert any(m.startswith("CHANGED: model.pkl") for m in res.messages)


def test_added_missing_and_symlinked_files_are_named(aiir_home, model_dir, tmp_path):
    signing.sign_artifact(model_dir, kind="model", name="m/1")
    (model_dir / "sub" / "conda.yaml").unlink()
    (model_dir / "backdoor.py").write_text("import os\n")
    res = signing.verify_artifact(model_dir)
    assert res.missing == ["sub/conda.yaml"] and res.added == ["backdoor.py"] and not res.ok


def test_one_row_of_a_dataset_is_detected(aiir_home, dataset):
    rec = signing.sign_artifact(dataset, kind="dataset", name="train.csv")
    assert signing.verify_artifact(dataset, expected_signature_sha256=rec["signature_sha256"]).ok
    dataset.write_text(dataset.read_text().replace("3,4,1", "3,4,0"))
    res = signing.verify_artifact(dataset)
    assert not res.ok and res.changed == ["train.csv"]


def test_swapped_signature_and_manifest_are_detected(aiir_home, model_dir, tmp_path):
    rec = signing.sign_artifact(model_dir, kind="model", name="m/1")
    other = tmp_path / "models" / "m-2" / "artifacts"
    shutil.copytree(model_dir, other)
    (other / "model.pkl").write_bytes(os.urandom(1000))
    rec2 = signing.sign_artifact(other, kind="model", name="m/2")
    # the other version's (validly signed) signature + manifest put in place of this one's
    shutil.copy(rec2["signature"], rec["signature"])
    shutil.copy(rec2["manifest"], rec["manifest"])
    res = signing.verify_artifact(model_dir, expected_signature_sha256=rec["signature_sha256"])
    assert not res.ok and res.signature_file_ok is False and res.changed == ["model.pkl"]
    assert any("SIGNATURE FILE REPLACED" in m for m in res.messages)


def test_readable_manifest_edited_is_named(aiir_home, model_dir):
    rec = signing.sign_artifact(model_dir, kind="model", name="m/1")
    mp = model_dir.with_name("artifacts.manifest.json")
    m = json.loads(mp.read_text())
    m["files"][0]["sha256"] = "0" * 64
    mp.write_text(json.dumps(m))
    res = signing.verify_artifact(model_dir, expected_signature_sha256=rec["signature_sha256"])
    assert not res.ok and res.manifest_ok is False and res.content_ok is True
    assert any(x.startswith("MANIFEST:") for x in res.messages)


def test_signature_by_an_untrusted_key_is_refused(aiir_home, model_dir, tmp_path):
    attacker = tmp_path / "attacker.pem"
    attacker.write_bytes(signing._pkcs8(ec.generate_private_key(ec.SECP256R1())))
    attacker.chmod(0o600)
    signing.load_or_create_artifact_key()  # this installation's key exists, the attacker's is not trusted
    (model_dir / "model.pkl").write_bytes(b"tampered")
    signing.sign_artifact(model_dir, kind="model", name="m/1",
                          spec=signing.SignerSpec(key_path=attacker), reuse=False)
    res = signing.verify_artifact(model_dir)
    assert not res.ok and res.signature_ok is False
    assert any("not a trusted key" in m for m in res.messages)
    # the same artifact verifies for whoever explicitly trusts that key
    pub = signing.load_ec_public_key(attacker)
    assert signing.verify_artifact(model_dir, trusted_keys=[pub]).ok


def test_dataset_signed_once_and_new_bytes_get_their_own_signature(aiir_home, dataset):
    r1 = signing.sign_artifact(dataset, kind="dataset", name="train.csv")
    assert signing.sign_artifact(dataset, kind="dataset", name="train.csv")["reused"] is True
    dataset.write_text(dataset.read_text() + "7,8,1\n")
    r2 = signing.sign_artifact(dataset, kind="dataset", name="train.csv")
    assert r2["signature"] != r1["signature"] and not r2["reused"]
    assert signing.verify_artifact(dataset, r2["signature"]).ok
    assert not signing.verify_artifact(dataset, r1["signature"]).ok  # the old signature still names the old bytes


def test_certificate_based_signing_with_a_users_pki(aiir_home, model_dir, tmp_path, monkeypatch):
    pki = make_pki(tmp_path / "pki")
    monkeypatch.setenv("AIIR_ARTIFACT_KEY", str(pki["leaf_key"]))
    monkeypatch.setenv("AIIR_ARTIFACT_CERT", str(pki["leaf"]))
    monkeypatch.setenv("AIIR_ARTIFACT_CERT_CHAIN", str(pki["ca"]))
    rec = signing.sign_artifact(model_dir, kind="model", name="m/1")
    assert rec["method"] == "certificate"
    res = signing.verify_artifact(model_dir, trust_chain=[pki["ca"]])
    assert res.ok and res.certificate["subject"] == "CN=ml-release"
    other = make_pki(tmp_path / "other", cn="someone else")
    res = signing.verify_artifact(model_dir, trust_chain=[other["ca"]])
    assert not res.ok and res.signature_ok is False
    monkeypatch.delenv("AIIR_ARTIFACT_CERT_CHAIN")
    res = signing.verify_artifact(model_dir)
    assert not res.ok and any("no trust anchors" in m for m in res.messages)


def test_bad_inputs_name_the_field(aiir_home, tmp_path, dataset):
    with pytest.raises(BadInput, match="must be a folder"):
        signing.sign_artifact(dataset, kind="model", name="x")
    with pytest.raises(BadInput, match="expected 'model' or 'dataset'"):
        signing.sign_artifact(dataset, kind="weights", name="x")
    key = tmp_path / "k.pem"
    key.write_text("not a key")
    key.chmod(0o600)
    with pytest.raises(BadInput, match="artifact signing key"):
        signing.sign_artifact(dataset, kind="dataset", name="x", spec=signing.SignerSpec(key_path=key))
    key.chmod(0o644)
    with pytest.raises(BadInput, match="readable by group or others"):
        signing.sign_artifact(dataset, kind="dataset", name="x", spec=signing.SignerSpec(key_path=key))
    res = signing.verify_artifact(dataset)
    assert not res.ok and res.status == "unsigned"
