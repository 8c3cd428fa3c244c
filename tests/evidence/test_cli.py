"""`aiir evidence add|seal|show` and `aiir verify` exit codes, as a responder uses them with Airflow down."""

from __future__ import annotations

import json
import os

from tests.conftest import run_aiir


def test_preserve_seal_verify_by_hand(aiir_home, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "model.pkl").write_bytes(os.urandom(4096))
    log = tmp_path / "decisions.csv"
    log.write_text("id,score\n1,0.9\n")

    r = run_aiir("evidence", "add", "INC-CLI", str(model), str(log), "-c", "model", "-d", "suspect", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(x["path"] for x in json.loads(r.stdout)) == ["files/decisions.csv", "files/model/MLmodel",
                                                               "files/model/model.pkl"]
    r = run_aiir("evidence", "seal", "INC-CLI", "--json")
    assert r.returncode == 0, r.stderr
    bundle = json.loads(r.stdout)["bundle"]
    assert (aiir_home / "keys" / "evidence_ed25519.pem").exists()

    r = run_aiir("verify", bundle)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("INTACT")
    r = run_aiir("verify", "INC-CLI", "--json")  # an incident id resolves in the store
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True

    pub = tmp_path / "pub.pem"
    r = run_aiir("evidence", "pubkey")
    pub.write_text(r.stdout)
    assert run_aiir("verify", bundle, "--public-key", str(pub)).returncode == 0

    # adding after sealing: identical content is a no-op (exit 0), anything new is refused (exit 2)
    assert run_aiir("evidence", "add", "INC-CLI", str(log), "-c", "model").returncode == 0
    (tmp_path / "late.txt").write_text("late")
    r = run_aiir("evidence", "add", "INC-CLI", str(tmp_path / "late.txt"), "-c", "other")
    assert r.returncode == 2 and "sealed" in r.stderr

    # tamper: one changed, one missing, one added — all named, exit 3
    for root, _dirs, files in os.walk(bundle):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    with open(os.path.join(bundle, "files/model/model.pkl"), "r+b") as fh:
        fh.write(b"\0")
    os.unlink(os.path.join(bundle, "files/decisions.csv"))
    with open(os.path.join(bundle, "files/model/extra.py"), "w") as fh:
        fh.write("import os\n")
    r = run_aiir("verify", bundle)
    assert r.returncode == 3
    for name in ("files/model/model.pkl", "files/decisions.csv", "files/model/extra.py"):
        assert name in r.stdout
    r = run_aiir("verify", bundle, "--json", "--no-record")
    doc = json.loads(r.stdout)
    assert r.returncode == 3 and doc["changed"] == ["files/model/model.pkl"]
    assert doc["missing"] == ["files/decisions.csv"] and doc["added"] == ["files/model/extra.py"]
    assert doc["recorded"] is False

    r = run_aiir("evidence", "show", "INC-CLI", "--json")
    actions = [e["action"] for e in json.loads(r.stdout)["custody"]]
    assert actions[:1] == ["opened"] and "sealed" in actions and actions.count("verified") == 4


def test_verify_bad_input_exits_2(aiir_home, tmp_path):
    (tmp_path / "plain").mkdir()
    assert run_aiir("verify", str(tmp_path / "plain")).returncode == 2
    assert run_aiir("verify", str(tmp_path / "missing")).returncode == 2
    assert run_aiir("verify", "../etc").returncode == 2


def test_verify_wrong_key_exits_3(aiir_home, tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("a")
    assert run_aiir("evidence", "add", "INC-K", str(f), "-c", "other").returncode == 0
    assert run_aiir("evidence", "seal", "INC-K").returncode == 0
    other = tmp_path / "other.pem"
    assert run_aiir("evidence", "pubkey", "--key", str(tmp_path / "other-key.pem")).returncode == 0
    other.write_text(run_aiir("evidence", "pubkey", "--key", str(tmp_path / "other-key.pem")).stdout)
    r = run_aiir("verify", "INC-K", "--public-key", str(other))
    assert r.returncode == 3 and "SIGNATURE" in r.stdout


def test_verify_trusts_only_known_keys_by_default(aiir_home, tmp_path):
    """A bundle re-signed with a key aiir never issued fails (exit 3, says why) unless the key is trusted
    by the operator (--trusted-key, `aiir evidence trust`) or --allow-unknown-key is given."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from aiir.evidence import EvidenceStore
    from aiir.evidence.keys import fingerprint, public_key_pem

    f = tmp_path / "a.txt"
    f.write_text("a")
    attacker = Ed25519PrivateKey.generate()  # made outside aiir: not in the trust store
    b = EvidenceStore(aiir_home / "evidence", fsync=False).open_bundle("INC-EVIL", actor="mallory")
    b.add_file(f, category="other")
    b.seal(attacker)
    r = run_aiir("verify", "INC-EVIL")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "UNTRUSTED KEY" in r.stdout and fingerprint(attacker) in r.stdout and "--allow-unknown-key" in r.stdout
    r = run_aiir("verify", "INC-EVIL", "--allow-unknown-key")
    assert r.returncode == 0 and "NOT a trusted key" in r.stdout, r.stdout
    pem = tmp_path / "attacker.pub.pem"
    pem.write_bytes(public_key_pem(attacker))
    assert run_aiir("verify", "INC-EVIL", "--trusted-key", str(pem), "--no-record").returncode == 0
    assert run_aiir("verify", "INC-EVIL", "--trusted-key", fingerprint(attacker), "--no-record").returncode == 0
    assert run_aiir("verify", "INC-EVIL", "--no-record").returncode == 3
    r = run_aiir("evidence", "trust", str(pem), "--comment", "partner's key")
    assert r.returncode == 0 and fingerprint(attacker) in r.stdout
    store = (aiir_home / "keys" / "trusted_keys")
    assert fingerprint(attacker) in store.read_text() and (store.stat().st_mode & 0o077) == 0
    assert run_aiir("verify", "INC-EVIL", "--no-record").returncode == 0
    bad = tmp_path / "bad-store"
    bad.write_text("not a fingerprint\n")
    r = run_aiir("verify", "INC-EVIL", "--trust-store", str(bad))
    assert r.returncode == 2 and "bad-store:1" in r.stderr
