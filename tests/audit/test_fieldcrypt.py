"""Field-level encryption of logged features: stored encrypted, bound to its row, decrypted only with the key."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import pytest

from aiir.audit import fieldcrypt as fc
from aiir.errors import BadInput
from aiir.gateway.decision_log import DecisionLog, DecisionWriter, new_decision_ids
from aiir.gateway.log_writer import ProcessDecisionWriter

KEY = bytes(range(32))
COLS = ["age", "diagnosis_code", "amount"]


def _item(ids, rows):
    return (time.time(), "clinic-7", "req-1", "diag", "3", "d" * 64, COLS, rows, ids, [1] * len(ids),
            [0.9] * len(ids), 1.5, "gateway")


def test_key_formats_and_bad_keys():
    assert fc.parse_key(base64.b64encode(KEY).decode()) == KEY
    assert fc.parse_key(KEY.hex()) == KEY
    assert fc.parse_key(base64.urlsafe_b64encode(KEY).decode().rstrip("=")) == KEY
    with pytest.raises(BadInput, match="AIIR_DECISION_LOG_KEY: expected a 256-bit key"):
        fc.parse_key("c2hvcnQ=")


def test_key_from_env_and_file(monkeypatch, tmp_path):
    monkeypatch.delenv(fc.KEY_ENV, raising=False)
    monkeypatch.delenv(fc.KEY_FILE_ENV, raising=False)
    assert fc.load_key() is None
    with pytest.raises(BadInput, match="needs a key"):
        fc.load_key(required=True)
    f = tmp_path / "k"
    f.write_text(KEY.hex())
    f.chmod(0o644)
    monkeypatch.setenv(fc.KEY_FILE_ENV, str(f))
    with pytest.raises(BadInput, match="readable by group or others"):
        fc.load_key()
    f.chmod(0o600)
    assert fc.load_key() == KEY
    monkeypatch.setenv(fc.KEY_ENV, base64.b64encode(bytes(32)).decode())
    assert fc.load_key() == bytes(32)  # the value wins over the file


def test_roundtrip_binding_and_wrong_key():
    enc = fc.FieldEncryptor(KEY, ["age", "diagnosis_code"])
    text = enc.encrypt_features("d1", {"age": 54, "diagnosis_code": "E11.9", "amount": 12.5})
    stored = json.loads(text)
    assert stored["amount"] == 12.5 and fc.encrypted_fields(stored) == ["age", "diagnosis_code"]
    # the envelopes hold only the algorithm, key id, iv and ciphertext; with the random base64
    # of iv and ct taken out, no plaintext is left (base64 itself may contain "54" by chance)
    for f in ("age", "diagnosis_code"):
        assert set(stored[f]) == {"$aiir_enc", "kid", "iv", "ct"}
    bare = text
    for f in ("age", "diagnosis_code"):
        for part in ("kid", "iv", "ct"):
            bare = bare.replace(stored[f][part], "")
    assert "E11.9" not in bare and "54" not in bare
    plain, done, problems = fc.decrypt_features("d1", stored, [KEY])
    assert plain == {"age": 54, "diagnosis_code": "E11.9", "amount": 12.5} and done == ["age", "diagnosis_code"]
    assert not problems
    # the same ciphertext under another decision id (moved to another row) does not decrypt
    _, done, problems = fc.decrypt_features("d2", stored, [KEY])
    assert not done and len(problems) == 2 and "moved from another row" in problems[0]
    # the other field's ciphertext under this field's name does not either
    swapped = {**stored, "age": stored["diagnosis_code"]}
    _, done, problems = fc.decrypt_features("d1", swapped, [KEY])
    assert done == ["diagnosis_code"] and problems[0].startswith("age:")
    _, done, problems = fc.decrypt_features("d1", stored, [bytes(32)])
    assert not done and "which was not given" in problems[0]
    with pytest.raises(BadInput, match="--encrypt-fields"):
        fc.FieldEncryptor(KEY, [" "])


def test_thread_writer_stores_only_ciphertext_and_the_chain_holds(tmp_path):
    log = DecisionLog(tmp_path / "decisions.db")
    w = DecisionWriter(log, encryptor=fc.FieldEncryptor(KEY, ["*"]), linger=0.001)
    ids = new_decision_ids(2)
    w.submit(_item(ids, [[54, "E11.9", 12.5], [61, "I10", 3.0]]))
    assert w.flush(10)
    w.close()
    rows = log.query()
    assert [r["decision_id"] for r in rows] == ids
    assert all(fc.encrypted_fields(r["features"]) == sorted(COLS) for r in rows)
    assert log.verify_chain().ok
    log.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"E11.9" not in raw and b"\"I10\"" not in raw  # quoted: base64 may hold I10 by chance
    plain, _, _ = fc.decrypt_features(ids[1], rows[1]["features"], [KEY])
    assert plain == {"age": 61, "diagnosis_code": "I10", "amount": 3.0}


def test_process_writer_gets_the_key_through_its_environment_only(tmp_path):
    enc = fc.FieldEncryptor(KEY, ["diagnosis_code"])
    path = tmp_path / "decisions.db"
    ids = new_decision_ids(3)

    async def go():
        w = ProcessDecisionWriter(path, encryptor_env=enc.env(KEY), linger=0.002)
        assert all(base64.b64encode(KEY).decode() not in a for a in w.proc.args)
        w.submit(_item(ids, [[54, "E11.9", 12.5], [61, "I10", 3.0], [33, "Z00", 1.0]]))
        assert await w.aflush(20)
        w.close()
        assert w.written == 3

    asyncio.run(go())
    rows = DecisionLog(path).query()
    assert [fc.encrypted_fields(r["features"]) for r in rows] == [["diagnosis_code"]] * 3
    assert rows[0]["features"]["age"] == 54
    assert b"E11.9" not in b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())


def test_process_writer_without_encryption_ignores_a_stale_fields_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(fc.FIELDS_ENV, "age")  # left in the gateway's environment; no key
    path = tmp_path / "decisions.db"
    ids = new_decision_ids(1)

    async def go():
        w = ProcessDecisionWriter(path, linger=0.002)
        w.submit(_item(ids, [[54, "E11.9", 12.5]]))
        assert await w.aflush(20)
        w.close()

    asyncio.run(go())
    assert DecisionLog(path).query()[0]["features"]["diagnosis_code"] == "E11.9"
    assert os.environ[fc.FIELDS_ENV] == "age"
