"""Evidence bundles: write-once, idempotent, sealed, and every kind of tampering detected."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aiir.errors import BadInput, IntegrityError
from aiir.evidence import EvidenceStore, verify_bundle
from aiir.evidence._util import ZERO_HASH, canonical_json
from aiir.evidence.custody import entry_hash, signer
from aiir.evidence.keys import load_or_create_signing_key


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def writable(path: Path) -> None:
    """What an attacker (or an accident) does first: make the read-only bundle writable again."""
    for root, _dirs, files in os.walk(path):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)


@pytest.fixture
def src(tmp_path) -> Path:
    s = tmp_path / "src"
    (s / "model" / "weights").mkdir(parents=True)
    (s / "model" / "MLmodel").write_text("flavors: {sklearn: {}}\n")
    (s / "model" / "weights" / "w.bin").write_bytes(os.urandom(3 << 20))
    (s / "train.csv").write_text("amount,label\n1,0\n2,1\n")
    return s


@pytest.fixture
def store(tmp_path) -> EvidenceStore:
    return EvidenceStore(tmp_path / "store", fsync=False)


@pytest.fixture
def key(aiir_home) -> Ed25519PrivateKey:
    """This machine's signing key (created on first use, so aiir trusts it and signs custody entries
    appended after sealing with it)."""
    return load_or_create_signing_key()


@pytest.fixture
def sealed(store, src, key):
    b = store.open_bundle("INC-1", actor="alice", host="ir-host",
                          context={"dag_id": "incident_data_poisoning", "run_id": "r1", "task_id": "preserve"})
    b.add_tree(src / "model", "model", category="model", description="suspect model")
    b.add_file(src / "train.csv", "training_data/train.csv", category="training_data", description="train set")
    b.add_json({"kind": "drift", "columns": ["amount"]}, "findings.json", category="finding")
    b.seal(key)
    return b


def test_sealed_bundle_is_intact_and_complete(sealed, src, key):
    m = sealed.manifest
    by_path = {f["path"]: f for f in m["files"]}
    assert sorted(by_path) == ["files/findings.json", "files/model/MLmodel", "files/model/weights/w.bin",
                               "files/training_data/train.csv"]
    w = (src / "model" / "weights" / "w.bin").read_bytes()
    assert by_path["files/model/weights/w.bin"]["sha256"] == sha(w)
    assert by_path["files/model/weights/w.bin"]["size"] == len(w)
    assert by_path["files/training_data/train.csv"]["category"] == "training_data"
    assert by_path["files/training_data/train.csv"]["source"] == str((src / "train.csv").absolute())
    assert m["incident_id"] == "INC-1" and m["tool"]["name"] == "aiir" and m["sealed_at"].endswith("Z")
    assert m["file_count"] == 4 and m["total_bytes"] == sum(f["size"] for f in m["files"])
    # the copies are byte-identical and read-only; folders are locked once sealed
    assert (sealed.path / "files/model/weights/w.bin").read_bytes() == w
    # owner-only, like the decision log's folder (files 0400, folders 0500, the custody log 0600)
    assert stat.S_IMODE((sealed.path / "files/model/weights/w.bin").stat().st_mode) == 0o400
    assert stat.S_IMODE((sealed.path / "files/model").stat().st_mode) == 0o500
    assert stat.S_IMODE(sealed.path.stat().st_mode) == 0o500
    for name in ("manifest.json", "manifest.sig", "public_key.pem"):
        assert stat.S_IMODE((sealed.path / name).stat().st_mode) == 0o400
    assert stat.S_IMODE((sealed.path / "custody.jsonl").stat().st_mode) == 0o600
    # signature over the exact manifest bytes, which are canonical JSON
    raw = (sealed.path / "manifest.json").read_bytes()
    assert raw == canonical_json(json.loads(raw))
    key.public_key().verify((sealed.path / "manifest.sig").read_bytes(), raw)

    res = verify_bundle(sealed.path, key.public_key())
    assert res.ok, res.messages
    assert (res.changed, res.missing, res.added) == ([], [], [])
    assert res.signature_ok and res.custody_ok and res.key_source == "caller"
    assert res.files_checked == 4


def test_custody_chain_records_who_what_when_where(sealed):
    entries = sealed.custody()
    assert [e["action"] for e in entries] == ["opened", "added", "added", "added", "added", "sealed"]
    assert entries[0]["prev"] == ZERO_HASH
    for prev, e in zip(entries, entries[1:], strict=False):
        assert e["prev"] == entry_hash(prev)
    added = entries[1]
    assert added["actor"] == "alice" and added["host"] == "ir-host" and added["pid"] == os.getpid()
    assert added["context"]["run_id"] == "r1" and added["file"] == "files/model/MLmodel"
    assert len(added["sha256"]) == 64 and added["at"].endswith("Z")
    head = sealed.manifest["custody_head"]
    assert head == {"seq": 4, "sha256": entry_hash(entries[4])}
    assert entries[5]["manifest_sha256"] == sha((sealed.path / "manifest.json").read_bytes())
    # verification is logged after sealing, chained like the rest
    verify_bundle(sealed.path, actor="bob")
    last = sealed.custody()[-1]
    assert last["action"] == "verified" and last["actor"] == "bob" and last["outcome"] == "intact"
    assert verify_bundle(sealed.path).ok


def test_readd_same_content_is_a_noop_different_content_is_refused(store, src, key):
    b = store.open_bundle("INC-2", actor="alice")
    first = b.add_file(src / "train.csv", category="training_data")
    n = len(b.custody())
    assert b.add_file(src / "train.csv", category="training_data") == first
    assert b.add_tree(src / "model", category="model") == b.add_tree(src / "model", category="model")
    n = len(b.custody())
    b.add_tree(src / "model", category="model")
    assert len(b.custody()) == n
    other = src / "other" / "train.csv"
    other.parent.mkdir()
    other.write_text("amount,label\n1,1\n")
    with pytest.raises(IntegrityError, match="write-once"):
        b.add_file(other, category="training_data")
    last = b.custody()[-1]
    assert last["action"] == "refused" and last["file"] == "files/train.csv"
    assert (b.path / "files/train.csv").read_bytes() == (src / "train.csv").read_bytes()
    with pytest.raises(IntegrityError):
        b.add_bytes(b"something else", "train.csv", category="training_data")


def test_add_after_seal_is_refused_but_identical_readd_is_a_noop(sealed, src, key):
    with pytest.raises(BadInput, match="sealed"):
        sealed.add_bytes(b"late", "late.txt", category="other")
    n = len(sealed.custody())
    sealed.add_file(src / "train.csv", "training_data/train.csv", category="training_data")  # Airflow retry
    sealed.add_tree(src / "model", "model", category="model")
    assert len(sealed.custody()) == n
    assert not (sealed.path / "files/late.txt").exists()


def test_seal_twice_is_a_noop_and_another_key_is_refused(sealed, key):
    m = sealed.manifest
    assert sealed.seal(key) == m
    assert [e["action"] for e in sealed.custody()].count("sealed") == 1
    with pytest.raises(IntegrityError, match="already sealed"):
        sealed.seal(Ed25519PrivateKey.generate())


def test_open_existing_bundle_writes_nothing(store, sealed):
    n = len(sealed.custody())
    again = store.open_bundle("INC-1", actor="carol")
    assert again.sealed and len(again.custody()) == n and again.bundle_id == sealed.bundle_id


# ---------------------------------------------------------------------------------------- tampering
def test_tampered_copy_is_detected(sealed, key):
    writable(sealed.path)
    p = sealed.path / "files/model/weights/w.bin"
    data = bytearray(p.read_bytes())
    data[1000] ^= 0x01  # same size, one bit
    p.write_bytes(bytes(data))
    res = verify_bundle(sealed.path, key.public_key())
    assert not res.ok
    assert res.changed == ["files/model/weights/w.bin"] and res.missing == [] and res.added == []
    assert res.signature_ok and res.custody_ok
    assert any("files/model/weights/w.bin" in m for m in res.messages)
    assert sealed.custody()[-1]["outcome"] == "failed"


def test_deleted_file_is_detected(sealed, key):
    writable(sealed.path)
    (sealed.path / "files/training_data/train.csv").unlink()
    res = verify_bundle(sealed.path, key.public_key())
    assert not res.ok and res.missing == ["files/training_data/train.csv"] and res.changed == []


def test_added_files_are_detected(sealed, key):
    writable(sealed.path)
    (sealed.path / "files/model/backdoor.pkl").write_bytes(b"x")
    (sealed.path / "notes.txt").write_text("hi")
    res = verify_bundle(sealed.path, key.public_key())
    assert not res.ok and res.added == ["files/model/backdoor.pkl", "notes.txt"]


def test_file_replaced_by_symlink_is_detected(sealed, key, src):
    writable(sealed.path)
    p = sealed.path / "files/training_data/train.csv"
    p.unlink()
    p.symlink_to(src / "train.csv")  # same bytes behind it, but not the preserved copy
    res = verify_bundle(sealed.path, key.public_key())
    assert not res.ok and res.changed == ["files/training_data/train.csv"]


def test_edited_manifest_fails_the_signature(sealed, key):
    writable(sealed.path)
    m = json.loads((sealed.path / "manifest.json").read_bytes())
    m["files"][0]["description"] = "nothing to see"
    (sealed.path / "manifest.json").write_bytes(canonical_json(m))
    res = verify_bundle(sealed.path)
    assert not res.ok and res.signature_ok is False


def test_wrong_key_is_detected(sealed):
    res = verify_bundle(sealed.path, Ed25519PrivateKey.generate().public_key())
    assert not res.ok and res.signature_ok is False and res.key_source == "caller"
    assert (res.changed, res.missing, res.added) == ([], [], [])


def test_edited_custody_entry_breaks_the_chain(sealed, key):
    writable(sealed.path)
    lines = (sealed.path / "custody.jsonl").read_bytes().splitlines()
    e = json.loads(lines[1])
    e["actor"] = "mallory"
    lines[1] = canonical_json(e)
    (sealed.path / "custody.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    res = verify_bundle(sealed.path, key.public_key())
    assert not res.ok and res.custody_ok is False and res.signature_ok
    assert any("line 3" in m and "prev" in m for m in res.messages)


def test_forged_custody_with_recomputed_chain_is_caught_by_the_signed_head(sealed, key):
    """Rewriting history *and* every later prev keeps the chain consistent — but not the signed head."""
    writable(sealed.path)
    entries = [json.loads(x) for x in (sealed.path / "custody.jsonl").read_bytes().splitlines()]
    entries[1]["actor"] = "mallory"
    prev = ZERO_HASH
    for e in entries:
        e["prev"] = prev
        prev = entry_hash(e)
    (sealed.path / "custody.jsonl").write_bytes(b"".join(canonical_json(e) + b"\n" for e in entries))
    res = verify_bundle(sealed.path, key.public_key(), record=False)
    assert not res.ok and res.custody_ok is False
    assert any("custody entries up to sealing were changed" in m for m in res.messages)


def test_inserted_and_truncated_custody_entries_are_detected(sealed, key, tmp_path):
    writable(sealed.path)
    original = (sealed.path / "custody.jsonl").read_bytes()
    lines = original.splitlines()
    forged = dict(json.loads(lines[2]), action="added", file="files/extra", seq=3)
    (sealed.path / "custody.jsonl").write_bytes(b"\n".join([*lines[:3], canonical_json(forged), *lines[3:]]) + b"\n")
    assert verify_bundle(sealed.path, key.public_key(), record=False).custody_ok is False
    # drop the 'sealed' entry (and everything after): the signed manifest has no sealing record
    (sealed.path / "custody.jsonl").write_bytes(b"\n".join(lines[:-1]) + b"\n")
    res = verify_bundle(sealed.path, key.public_key(), record=False)
    assert res.custody_ok is False and any("no 'sealed' entry" in m for m in res.messages)
    (sealed.path / "custody.jsonl").write_bytes(original)
    assert verify_bundle(sealed.path, key.public_key(), record=False).ok


def test_full_forgery_needs_a_trusted_key_to_be_caught(sealed, key):
    """An attacker who rewrites a file, the custody log and the manifest and re-signs with their own
    key produces a self-consistent bundle: only verification against the key you trust catches it."""
    writable(sealed.path)
    p = sealed.path / "files/training_data/train.csv"
    p.write_text("amount,label\n1,1\n")
    new = sha(p.read_bytes())
    entries = [json.loads(x) for x in (sealed.path / "custody.jsonl").read_bytes().splitlines()]
    for e in entries:
        if e.get("file") == "files/training_data/train.csv":
            e["sha256"], e["size"] = new, p.stat().st_size
    prev = ZERO_HASH
    for e in entries[:-1]:
        e["prev"] = prev
        prev = entry_hash(e)
    evil = Ed25519PrivateKey.generate()
    m = json.loads((sealed.path / "manifest.json").read_bytes())
    for f in m["files"]:
        if f["path"] == "files/training_data/train.csv":
            f["sha256"], f["size"] = new, p.stat().st_size
    m["total_bytes"] = sum(f["size"] for f in m["files"])
    m["custody_head"] = {"seq": len(entries) - 2, "sha256": prev}
    from aiir.evidence.keys import fingerprint, public_key_pem

    m["public_key_sha256"] = fingerprint(evil)
    data = canonical_json(m)
    entries[-1].update(prev=prev, manifest_sha256=sha(data), public_key_sha256=fingerprint(evil))
    entries[-1] = signer(evil)(entries[-1])  # the 'sealed' entry re-signed by the forger
    (sealed.path / "custody.jsonl").write_bytes(b"".join(canonical_json(e) + b"\n" for e in entries))
    (sealed.path / "manifest.json").write_bytes(data)
    (sealed.path / "manifest.sig").write_bytes(evil.sign(data))
    (sealed.path / "public_key.pem").write_bytes(public_key_pem(evil))

    # by default the verifier trusts only known keys: the forger's key is not one of them
    default = verify_bundle(sealed.path, record=False)
    assert not default.ok and default.signature_ok and default.key_trusted is False
    assert any(m.startswith("UNTRUSTED KEY") and fingerprint(evil) in m for m in default.messages)
    # self-consistency only, on request: the documented limit
    self_check = verify_bundle(sealed.path, record=False, allow_unknown_key=True)
    assert self_check.ok and self_check.key_source == "bundle" and self_check.key_trusted is False
    assert "NOT a trusted key" in self_check.messages[0]
    trusted = verify_bundle(sealed.path, key.public_key(), record=False)
    assert not trusted.ok and trusted.signature_ok is False


def test_openssl_verifies_the_signature(sealed):
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(sealed.path / "public_key.pem"),
                        "-rawin", "-in", str(sealed.path / "manifest.json"),
                        "-sigfile", str(sealed.path / "manifest.sig")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Signature Verified Successfully" in r.stdout


# ---------------------------------------------------------------------------------------- robustness
def test_unsealed_bundle_is_not_ok(store, src):
    b = store.open_bundle("INC-3")
    b.add_file(src / "train.csv", category="training_data")
    res = verify_bundle(b.path)
    assert not res.ok and not res.sealed and res.signature_ok is None and res.custody_ok
    assert res.changed == [] and res.missing == []


def test_not_a_bundle_is_bad_input(tmp_path):
    with pytest.raises(BadInput):
        verify_bundle(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(BadInput, match="not an aiir evidence bundle"):
        verify_bundle(tmp_path / "plain")


@pytest.mark.parametrize("bad", ["../escape", "/abs/path", "a/../../b", "a\\b", "x\n", ".", ""])
def test_unsafe_names_are_refused(store, src, bad):
    b = store.open_bundle("INC-4")
    with pytest.raises(BadInput):
        b.add_file(src / "train.csv", bad, category="training_data")


@pytest.mark.parametrize("bad", ["../up", "a/b", "", "x" * 200])
def test_unsafe_incident_ids_are_refused(store, bad):
    with pytest.raises(BadInput):
        store.open_bundle(bad)


def test_name_collisions_between_files_and_folders(store, src):
    b = store.open_bundle("INC-5")
    b.add_file(src / "train.csv", "a", category="other")
    with pytest.raises(BadInput, match="already a file"):
        b.add_file(src / "train.csv", "a/b", category="other")
    b.add_file(src / "train.csv", "d/x", category="other")
    with pytest.raises(BadInput, match="already a folder"):
        b.add_file(src / "train.csv", "d", category="other")


def test_fifo_and_special_files_are_refused_without_hanging(store, tmp_path, src):
    fifo = src / "model" / "pipe"
    os.mkfifo(fifo)
    b = store.open_bundle("INC-6")
    with pytest.raises(BadInput, match="not a regular file"):
        b.add_file(fifo, category="other")
    recs = b.add_tree(src / "model", category="model")  # the FIFO is skipped
    assert [r.path for r in recs] == ["files/model/MLmodel", "files/model/weights/w.bin"]


def test_interrupted_add_is_adopted_only_with_identical_bytes(store, src, key):
    b = store.open_bundle("INC-7")
    (b.path / "files").mkdir(exist_ok=True)
    (b.path / "files/train.csv").write_bytes((src / "train.csv").read_bytes())  # linked, not logged
    rec = b.add_file(src / "train.csv", category="training_data")
    assert rec.sha256 == sha((src / "train.csv").read_bytes())
    (b.path / "files/other.bin").write_bytes(b"not what will be added")
    with pytest.raises(IntegrityError, match="not in the custody log"):
        b.add_bytes(b"real content", "other.bin", category="other")
    with pytest.raises(IntegrityError, match="cannot seal"):
        b.seal(key)  # files/other.bin is on disk but unrecorded


def test_broken_custody_log_stops_further_writes(store, src):
    b = store.open_bundle("INC-8")
    b.add_file(src / "train.csv", category="training_data")
    p = b.path / "custody.jsonl"
    lines = p.read_bytes().splitlines()
    e = json.loads(lines[0])
    e["actor"] = "mallory"
    lines[0] = canonical_json(e)
    p.write_bytes(b"\n".join(lines) + b"\n")
    fresh = EvidenceStore(store.root, fsync=False).get("INC-8")
    with pytest.raises(IntegrityError, match="custody log is broken"):
        fresh.add_bytes(b"x", "x", category="other")


def test_record_custom_events_and_reserved_actions(sealed):
    e = sealed.record("exported", destination="s3://legal-hold/INC-1.tar", sha256="0" * 64)
    assert e["action"] == "exported" and sealed.custody()[-1]["destination"].startswith("s3://")
    with pytest.raises(BadInput):
        sealed.record("added", file="x")
    with pytest.raises(BadInput):
        sealed.record("note", actor="someone-else")
    assert verify_bundle(sealed.path).ok


def test_durable_mode_produces_the_same_bundle(tmp_path, src, key):
    b = EvidenceStore(tmp_path / "durable", fsync=True).open_bundle("INC-9")
    b.add_tree(src / "model", category="model")
    b.seal(key)
    assert verify_bundle(b.path, key.public_key()).ok


def _adder(root: str, i: int, payload: bytes) -> None:
    b = EvidenceStore(root, fsync=False).open_bundle("INC-MP", actor=f"worker-{i}")
    for j in range(5):
        b.add_bytes(payload + f"{i}-{j}".encode(), f"w{i}/f{j}.bin", category="other")
    b.add_bytes(b"shared", "shared.txt", category="other")  # every worker adds the same name + bytes


def test_concurrent_adders_keep_one_valid_chain(tmp_path, key):
    root = str(tmp_path / "store")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_adder, args=(root, i, os.urandom(1 << 16))) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    b = EvidenceStore(root, fsync=False).get("INC-MP")
    entries = b.custody()
    assert [e["action"] for e in entries].count("opened") == 1
    assert [e.get("file") for e in entries].count("files/shared.txt") == 1
    assert len(b.files) == 21
    b.seal(key)
    assert verify_bundle(b.path, key.public_key()).ok


@pytest.mark.parametrize("name", ["manifest.json", "manifest.sig", "public_key.pem", "custody.jsonl"])
def test_metadata_replaced_by_a_fifo_fails_without_hanging(sealed, key, name):
    import threading

    writable(sealed.path)
    (sealed.path / name).unlink()
    os.mkfifo(sealed.path / name)
    out: list = []
    t = threading.Thread(target=lambda: out.append(verify_bundle(sealed.path, record=False)), daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), f"verify blocked on a FIFO named {name}"
    assert out and not out[0].ok


def _custody_lines(b) -> list[bytes]:
    return (b.path / "custody.jsonl").read_bytes().splitlines()


def _write_custody(b, lines: list[bytes]) -> None:
    (b.path / "custody.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))


def test_entries_after_sealing_are_signed_so_edits_and_drops_are_caught(sealed, key):
    sealed.record("exported", destination="tape-7")
    assert verify_bundle(sealed.path, actor="bob").ok  # logs a signed 'verified' entry
    sealed.record("transferred", to="legal")
    entries = sealed.custody()
    assert [e["action"] for e in entries[-4:]] == ["sealed", "exported", "verified", "transferred"]
    for e in entries[-4:]:
        assert e["signer"] == sealed.manifest["public_key_sha256"] and len(e["sig"]) > 80
    assert "sig" not in entries[0]  # entries up to the head are covered by the signed manifest instead
    writable(sealed.path)
    original = _custody_lines(sealed)

    # edit the 'sealed' entry and recompute every later link: its own signature no longer verifies
    forged = [json.loads(x) for x in original]
    i = next(n for n, e in enumerate(forged) if e["action"] == "sealed")
    forged[i]["actor"] = "mallory"
    prev = forged[i - 1] and entry_hash(forged[i - 1])
    for e in forged[i:]:
        e["prev"] = prev
        prev = entry_hash(e)
    _write_custody(sealed, [canonical_json(e) for e in forged])
    res = verify_bundle(sealed.path, record=False)
    assert not res.ok and not res.custody_ok
    assert any(f"entry {i} ('sealed', after sealing): signature does not verify" in m for m in res.messages)

    # drop the 'verified' entry in the middle, relinking the rest: the next entry's signed prev breaks
    kept = [json.loads(x) for x in original]
    v = next(n for n, e in enumerate(kept) if e["action"] == "verified")
    del kept[v]
    prev = entry_hash(kept[v - 1])
    for n, e in enumerate(kept[v:], v):
        e["seq"], e["prev"] = n, prev
        prev = entry_hash(e)
    _write_custody(sealed, [canonical_json(e) for e in kept])
    res = verify_bundle(sealed.path, record=False)
    assert not res.ok and any("signature does not verify" in m for m in res.messages), res.messages

    # an unsigned entry appended by hand after sealing
    extra = {"at": "2026-01-01T00:00:00.000000Z", "action": "note", "actor": "mallory", "host": "x", "pid": 1,
             "context": {}, "seq": len(original), "prev": entry_hash(json.loads(original[-1]))}
    _write_custody(sealed, [*original, canonical_json(extra)])
    res = verify_bundle(sealed.path, record=False)
    assert not res.ok and any(f"entry {len(original)} ('note', after sealing): not signed" in m
                              for m in res.messages)

    # an entry signed by an unknown key
    stranger = signer(Ed25519PrivateKey.generate())(extra)
    _write_custody(sealed, [*original, canonical_json(stranger)])
    res = verify_bundle(sealed.path, record=False)
    assert not res.ok and any("neither the bundle's nor a trusted key" in m for m in res.messages)

    _write_custody(sealed, original)
    assert verify_bundle(sealed.path, record=False).ok


def test_verifier_without_a_signing_key_checks_but_does_not_log(sealed, monkeypatch, tmp_path):
    pub = tmp_path / "pub.pem"
    from aiir.evidence.keys import public_key_pem

    pub.write_bytes(public_key_pem(sealed._signing_key))
    monkeypatch.setenv("AIIR_HOME", str(tmp_path / "auditor-home"))  # another machine: no key, no store
    n = len(sealed.custody())
    res = verify_bundle(sealed.path)
    assert not res.ok and res.key_trusted is False  # nothing trusted there yet
    res = verify_bundle(sealed.path, pub)
    assert res.ok and not res.recorded and any("verification not logged" in m for m in res.messages)
    assert len(sealed.custody()) == n
