"""API-key identity: keys hashed at rest, issue/revoke/list, key mode on a real `aiir serve`."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from aiir.errors import BadInput
from aiir.gateway.apikeys import KEYS_FILE, Identity, IdentityRefused, KeyFile
from tests.conftest import run_aiir
from tests.gateway.gwkit import ROWS, Gateway, split


def test_issue_stores_only_the_digest_0600(tmp_path):
    kf = KeyFile(tmp_path)
    out = kf.issue("merchant-17", label="ops")
    key = out["key"]
    assert key.startswith("aiirk_") and out["client_id"] == "merchant-17" and out["active"]
    text = (tmp_path / KEYS_FILE).read_text()
    assert key not in text and key.split("_")[-1] not in text
    assert stat.S_IMODE((tmp_path / KEYS_FILE).stat().st_mode) == 0o600
    listed = kf.list()
    assert listed == [{k: v for k, v in out.items() if k not in ("key", "key_file")}]
    assert "sha256" not in listed[0]


def test_identity_resolves_key_ignores_header_and_refuses(tmp_path):
    kf = KeyFile(tmp_path)
    a = kf.issue("alice")["key"]
    ident = Identity(tmp_path)
    assert ident.key_mode and not ident.describe()["trusting"]
    assert ident.resolve({"x-api-key": a, "x-client-id": "bob"})[0] == "alice"
    assert ident.resolve({"authorization": f"Bearer {a}"})[0] == "alice"
    for headers, code in (({}, "api_key_required"), ({"x-client-id": "alice"}, "api_key_required"),
                          ({"x-api-key": a[:-1] + ("A" if a[-1] != "A" else "B")}, "invalid_api_key"),
                          ({"x-api-key": "nonsense"}, "invalid_api_key")):
        with pytest.raises(IdentityRefused) as ei:
            ident.resolve(headers)
        assert ei.value.status == 401 and ei.value.code == code
    kid = a.split("_")[1]
    assert kf.revoke(key_id=kid)[0]["active"] is False
    assert kf.revoke(key_id=kid)[0]["active"] is False  # idempotent
    ident.reload(force=True)
    with pytest.raises(IdentityRefused) as ei:
        ident.resolve({"x-api-key": a})
    assert ei.value.code == "api_key_revoked"


def test_header_mode_is_trusting_by_default(tmp_path):
    ident = Identity(tmp_path)
    assert not ident.key_mode and ident.describe()["mode"] == "header" and ident.describe()["trusting"]
    assert ident.resolve({"x-client-id": "anyone"}) == ("anyone", None)
    assert ident.resolve({}) == ("anonymous", None)
    with pytest.raises(IdentityRefused):
        ident.resolve({"x-client-id": "x" * 129})


def test_required_key_mode_without_keys_refuses(tmp_path):
    ident = Identity(tmp_path, require_key=True)
    with pytest.raises(IdentityRefused):
        ident.resolve({"x-client-id": "a"})


def test_deleting_the_key_file_keeps_key_mode(tmp_path):
    KeyFile(tmp_path).issue("a")
    ident = Identity(tmp_path)
    (tmp_path / KEYS_FILE).unlink()
    ident.reload(force=True)
    assert ident.key_mode
    with pytest.raises(IdentityRefused):
        ident.resolve({"x-client-id": "a"})


def test_bad_inputs_name_the_option(tmp_path):
    kf = KeyFile(tmp_path)
    with pytest.raises(BadInput, match="--client"):
        kf.issue("bad\nid")
    with pytest.raises(BadInput, match="exactly one"):
        kf.revoke()
    with pytest.raises(BadInput, match="no API key"):
        kf.revoke(key_id="000000000000")
    (tmp_path / KEYS_FILE).write_text("{not json")
    with pytest.raises(BadInput, match=KEYS_FILE):
        kf.list()


def test_cli_issue_list_revoke(tmp_path):
    sd = tmp_path / "gw"
    r = run_aiir("gateway", "keys", "issue", "--client", "acq-eu", "--state-dir", str(sd))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["key"].startswith("aiirk_") and "not shown again" in r.stderr
    r = run_aiir("gateway", "keys", "list", "--state-dir", str(sd))
    assert r.returncode == 0 and out["key"] not in r.stdout
    listed = json.loads(r.stdout)
    assert listed["key_mode"] and listed["keys"][0]["key_id"] == out["key_id"]
    r = run_aiir("gateway", "keys", "revoke", "--key-id", out["key_id"], "--state-dir", str(sd))
    assert r.returncode == 0 and json.loads(r.stdout)["revoked"][0]["active"] is False
    r = run_aiir("gateway", "keys", "revoke", "--key-id", "ffffffffffff", "--state-dir", str(sd))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "ffffffffffff" in r.stderr
    r = run_aiir("gateway", "keys", "list")
    assert r.returncode == 2 and "--name" in r.stderr


@pytest.fixture(scope="module")
def keyed(gw_env, tmp_path_factory):
    sd = tmp_path_factory.mktemp("gw-keyed") / "state"
    kf = KeyFile(sd)
    keys = {c: kf.issue(c)["key"] for c in ("alice", "bob")}
    g = Gateway(gw_env, sd, sd.parent / "serve.log", extra=("--require-api-key",)).start()
    yield g, kf, keys
    g.stop()


def test_served_identity_comes_from_the_key(keyed):
    g, kf, keys = keyed
    ping = g.http.get("/ping").json()
    assert ping["identity"] == "api_key" and ping["identity_trusting"] is False
    r = g.score(split(ROWS[:1]), client="alice")  # header alone: refused
    assert r.status_code == 401 and r.json()["error"] == "api_key_required"
    r = g.score(split(ROWS[:2]), client="bob", headers={"X-Api-Key": keys["alice"]})
    assert r.status_code == 200
    g.flush()
    rows = g.ok("/admin/decisions?limit=10")["decisions"]
    assert {d["client_id"] for d in rows if d["decision_id"] in r.json()["decision_ids"]} == {"alice"}
    ident = g.ok("/admin/state")["extra"]["identity"]
    assert ident["mode"] == "api_key" and ident["keys_active"] == 2 and ident["refused"] >= 1


def test_blocking_applies_to_the_key_holder(keyed):
    g, kf, keys = keyed
    g.ok("/admin/block", {"clients": ["alice"], "reason": "test"})
    try:
        r = g.score(split(ROWS[:1]), client="carol", headers={"X-Api-Key": keys["alice"]})
        assert r.status_code == 403  # a spoofed header does not escape the block
        assert g.score(split(ROWS[:1]), headers={"X-Api-Key": keys["bob"]}).status_code == 200
    finally:
        g.ok("/admin/restore", {"reason": "test"})
    kid = keys["bob"].split("_")[1]
    g.ok("/admin/block", {"clients": [f"key:{kid}"], "reason": "one key"})
    try:
        assert g.score(split(ROWS[:1]), headers={"X-Api-Key": keys["bob"]}).status_code == 403
    finally:
        g.ok("/admin/restore", {"reason": "test"})


def test_revocation_reaches_a_running_gateway(keyed):
    g, kf, keys = keyed
    new = kf.issue("dave")["key"]
    deadline = time.time() + 3
    while g.score(split(ROWS[:1]), headers={"X-Api-Key": new}).status_code != 200:
        assert time.time() < deadline, "issued key not picked up"
        time.sleep(0.1)
    kf.revoke(client_id="dave")
    deadline = time.time() + 3
    while (r := g.score(split(ROWS[:1]), headers={"X-Api-Key": new})).status_code == 200:
        assert time.time() < deadline, "revoked key still accepted"
        time.sleep(0.1)
    assert r.status_code == 401 and r.json()["error"] == "api_key_revoked"
    assert os.stat(kf.path).st_mode & 0o077 == 0


def test_default_gateway_is_header_mode_and_says_trusting(gw):
    ping = gw.http.get("/ping").json()
    assert ping["identity"] == "header" and ping["identity_trusting"] is True
    assert gw.ok("/admin/state")["extra"]["identity"]["trusting"] is True
