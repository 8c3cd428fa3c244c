"""Containment rules, persistence, token and admin audit — without HTTP or MLflow (a fake model store)."""

from __future__ import annotations

import json
import os
import stat
from types import SimpleNamespace

import pytest

from aiir.errors import BadInput
from aiir.gateway.control import ControlError, Controller
from aiir.gateway.models import UnknownVersion
from aiir.gateway.state import StateStore, atomic_write_json, fingerprint, verify_audit


class FakeModels:
    def __init__(self, aliases=None, versions=("1", "2", "3")):
        self.aliases = dict({"champion": "2", "last-known-good": "1"} if aliases is None else aliases)
        self.versions = set(versions)
        self.loaded: dict[str, SimpleNamespace] = {}

    def resolve_alias(self, alias):
        return self.aliases.get(alias)

    def get(self, v):
        if v not in self.versions:
            raise UnknownVersion(f"model 'm' has no version '{v}'")
        return self.loaded.setdefault(v, SimpleNamespace(version=v, digest=f"digest-{v}"))

    def cached(self):
        return dict(self.loaded)


def make(tmp_path, models=None, **kw):
    ctl = Controller("m", models or FakeModels(), StateStore(tmp_path / "state"), **kw)
    ctl.start()
    return ctl


def test_start_serves_the_alias_and_preloads_the_fallback(tmp_path):
    ctl = make(tmp_path)
    d = ctl.describe()
    assert d["target"] == "local:m" and d["model"] == "m" and d["mode"] == "serving"
    assert d["routes"] == [{"version": "2", "share": 1.0}]
    assert d["fallback_version"] == "1"
    assert set(d["extra"]["loaded_versions"]) == {"1", "2"}
    assert ctl.routing.serving.version == "2"
    assert json.loads((tmp_path / "state" / "state.json").read_text())["primary_version"] == "2"


def test_start_without_the_alias_is_a_clear_error(tmp_path):
    with pytest.raises(BadInput, match="no alias 'champion'"):
        make(tmp_path, FakeModels(aliases={}))


def test_isolate_is_idempotent_and_switches_routing_at_once(tmp_path):
    ctl = make(tmp_path)
    a = ctl.isolate(reason="incident 1", actor={"token": "t"})
    assert a["mode"] == "isolated" and a["routes"] == [{"version": "1", "share": 1.0}]
    assert a["fallback_version"] == "1" and a["reason"] == "incident 1"
    assert ctl.pick(ctl.routing).version == "1"
    b = ctl.isolate(reason="again")
    assert b == a  # same state, same updated_at, same reason
    audit = ctl.store.read_audit()
    assert [e["action"] for e in audit] == ["start", "isolate", "isolate"]
    assert audit[1]["changed"] is True and audit[2]["changed"] is False
    assert audit[1]["actor"] == {"token": "t"} and audit[1]["reason"] == "incident 1"


def test_isolate_to_an_explicit_version_and_refusals(tmp_path):
    ctl = make(tmp_path)
    assert ctl.isolate(fallback_version="3")["routes"] == [{"version": "3", "share": 1.0}]
    with pytest.raises(ControlError) as ei:
        ctl.isolate(fallback_version="9")
    assert ei.value.status == 404 and "no version '9'" in ei.value.message
    with pytest.raises(ControlError, match="primary version being isolated"):
        ctl.isolate(fallback_version="2")
    assert ctl.describe()["routes"] == [{"version": "3", "share": 1.0}]  # refused ops change nothing
    ctl2 = make(tmp_path / "b", FakeModels(aliases={"champion": "2"}))
    with pytest.raises(ControlError, match="no fallback version") as ei:
        ctl2.isolate()
    assert ei.value.status == 409


def test_quarantine_then_restore(tmp_path):
    ctl = make(tmp_path)
    q = ctl.isolate(quarantine=True, reason="stop everything")
    assert q["mode"] == "quarantined" and q["routes"] == []
    assert ctl.routing.mode == "quarantined"
    r = ctl.restore(reason="all clear")
    assert r["mode"] == "serving" and r["routes"] == [{"version": "2", "share": 1.0}]
    assert r["blocked_clients"] == [] and r["rate_limits"] == {}


def test_block_and_rate_limit(tmp_path):
    ctl = make(tmp_path)
    s = ctl.block(["evil", "bot"], reason="abuse")
    assert s["blocked_clients"] == ["bot", "evil"]
    assert ctl.block(["evil"]) == s  # idempotent
    s = ctl.block(["bot"], rate_limit_per_s=2)  # blocked → throttled
    assert s["blocked_clients"] == ["evil"] and s["rate_limits"] == {"bot": 2.0}
    assert "bot" not in ctl.routing.blocked and ctl.routing.rate_limits == {"bot": 2.0}
    for bad, words in [([], "non-empty"), ([""], "invalid client"), (["x" * 200], "invalid client"),
                       ("evil", "non-empty list")]:
        with pytest.raises(ControlError, match=words):
            ctl.block(bad)
    for rate in (0, -1, float("inf"), "fast", True):
        with pytest.raises(ControlError, match="rate_limit_per_s"):
            ctl.block(["x"], rate_limit_per_s=rate)
    ctl.restore()
    assert ctl.describe()["blocked_clients"] == [] and ctl.routing.rate_limits == {}


def test_token_bucket(tmp_path, monkeypatch):
    ctl = make(tmp_path)
    now = [1000.0]
    monkeypatch.setattr("aiir.gateway.control.time.monotonic", lambda: now[0])
    results = [ctl.allow("c", 2.0)[0] for _ in range(4)]
    assert results == [True, True, False, False]  # burst of max(1, rate)
    now[0] += 0.5
    assert ctl.allow("c", 2.0)[0] is True and ctl.allow("c", 2.0)[0] is False
    ok, wait = ctl.allow("c", 2.0)
    assert not ok and 0 < wait <= 0.5


def test_rollback_pins_ends_isolation_but_keeps_quarantine_and_blocks(tmp_path):
    ctl = make(tmp_path)
    ctl.isolate()
    ctl.block(["evil"])
    s = ctl.rollback("3", reason="known good")
    assert s["mode"] == "serving" and s["routes"] == [{"version": "3", "share": 1.0}]
    assert s["extra"]["primary_pinned"] is True and s["blocked_clients"] == ["evil"]
    assert ctl.rollback("3") == s
    ctl.isolate(quarantine=True)
    assert ctl.rollback("1")["mode"] == "quarantined"
    # restore keeps the pinned primary; follow_alias unpins it
    assert ctl.restore()["routes"] == [{"version": "1", "share": 1.0}]
    ctl.models.aliases["champion"] = "3"
    s = ctl.restore(follow_alias=True)
    assert s["routes"] == [{"version": "3", "share": 1.0}] and s["extra"]["primary_pinned"] is False
    with pytest.raises(ControlError, match="no version"):
        ctl.rollback("42")
    with pytest.raises(ControlError, match="required"):
        ctl.rollback("")


def test_restore_re_resolves_a_moved_alias(tmp_path):
    ctl = make(tmp_path)
    ctl.models.aliases["champion"] = "3"
    assert ctl.describe()["routes"][0]["version"] == "2"  # not until routing changes
    assert ctl.restore()["routes"] == [{"version": "3", "share": 1.0}]


def test_canary_share_is_respected_exactly(tmp_path):
    ctl = make(tmp_path)
    s = ctl.canary("3", 0.25, reason="try v3")
    assert s["routes"] == [{"version": "2", "share": 0.75}, {"version": "3", "share": 0.25}]
    picks = [ctl.pick(ctl.routing).version for _ in range(400)]
    assert picks.count("3") == 100
    with pytest.raises(ControlError, match="between 0 and 1"):
        ctl.canary("3", 1.5)
    with pytest.raises(ControlError, match="already the primary"):
        ctl.canary("2", 0.1)
    ctl.isolate()
    assert {ctl.pick(ctl.routing).version for _ in range(20)} == {"1"}  # isolation overrides the canary
    with pytest.raises(ControlError, match="restore before starting a canary"):
        ctl.canary("3", 0.5)
    ctl.restore()
    assert ctl.canary("3", 0)["routes"] == [{"version": "2", "share": 1.0}]


def test_state_survives_a_restart(tmp_path):
    ctl = make(tmp_path)
    ctl.isolate(reason="incident 7")
    ctl.block(["evil"])
    ctl.block(["noisy"], rate_limit_per_s=5)
    before = ctl.describe()
    ctl2 = make(tmp_path)  # same state dir: a restarted gateway
    after = ctl2.describe()
    for k in ("mode", "routes", "fallback_version", "blocked_clients", "rate_limits", "reason", "updated_at"):
        assert after[k] == before[k], k
    assert ctl2.routing.serving.version == "1"


def test_state_of_another_model_is_refused(tmp_path):
    make(tmp_path)
    with pytest.raises(BadInput, match="belongs to model 'm'"):
        Controller("other", FakeModels(), StateStore(tmp_path / "state")).start()


def test_corrupt_state_file_is_a_clear_error(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.json").write_text("{half a")
    with pytest.raises(BadInput, match="cannot read gateway state"):
        make(tmp_path)


def test_token_created_0600_and_refused_when_readable_by_others(tmp_path):
    store = StateStore(tmp_path / "s")
    tok = store.token()
    assert len(tok) >= 40 and store.token() == tok
    assert stat.S_IMODE(store.token_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    assert StateStore.check_token(tok, tok) and not StateStore.check_token(tok, tok + "x")
    assert not StateStore.check_token(tok, None)
    assert fingerprint(tok).startswith("sha256:") and tok not in fingerprint(tok)
    os.chmod(store.token_path, 0o644)
    with pytest.raises(BadInput, match="readable by others"):
        store.token()


def test_audit_chain_detects_edits_and_removals(tmp_path):
    ctl = make(tmp_path)
    ctl.isolate(reason="r1")
    ctl.restore(reason="r2")
    path = ctl.store.audit_path
    assert verify_audit(path) == {"ok": True, "entries": 3, "head_hash": ctl.store.read_audit()[-1]["hash"]}
    lines = path.read_text().splitlines()
    edited = lines[:]
    edited[1] = edited[1].replace('"r1"', '"nothing happened"')
    path.write_text("\n".join(edited) + "\n")
    assert verify_audit(path)["problem"] == "line was modified"
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    assert "chain broken" in verify_audit(path)["problem"]


def test_atomic_write_leaves_no_temp_files(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in tmp_path.iterdir()] == ["x.json"]


def test_a_failed_save_is_reported_and_retried(tmp_path, monkeypatch):
    ctl = make(tmp_path)
    real_save = ctl.store.save

    def broken(state):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ctl.store, "save", broken)
    with pytest.raises(ControlError, match="in effect but NOT persisted") as ei:
        ctl.isolate(reason="disk full")
    assert ei.value.status == 500
    assert ctl.routing.serving.version == "1"  # containment took effect anyway
    with pytest.raises(ControlError, match="NOT persisted"):  # an identical retry does not pretend success
        ctl.isolate(reason="disk full")
    monkeypatch.setattr(ctl.store, "save", real_save)
    assert ctl.isolate(reason="disk full")["mode"] == "isolated"
    assert json.loads(ctl.store.state_path.read_text())["mode"] == "isolated"
    assert any(e.get("persist_error") for e in ctl.store.read_audit())


def test_block_now_is_in_the_routing_at_once_and_durable_after_persist(tmp_path):
    """The inline guard's containment: in the routing without touching disk or the registry, then saved and
    audited by persist_pending (off the serving path); a busy controller makes it say so instead of waiting."""
    models = FakeModels()
    ctl = make(tmp_path, models)
    calls = []
    models.get = lambda v: calls.append(v)  # any model load now would be recorded
    saved = (tmp_path / "state" / "state.json").read_text()
    audit_lines = len(ctl.store.read_audit())
    assert ctl.block_now(["Attacker-1"], rate_limit_per_s=1.0, reason="guard", actor={"process": "aiir-guard"})
    assert ctl.routing.rate_limits == {"attacker-1": 1.0} and ctl.describe()["rate_limits"] == {"attacker-1": 1.0}
    assert calls == [] and (tmp_path / "state" / "state.json").read_text() == saved
    assert len(ctl.store.read_audit()) == audit_lines
    ctl.persist_pending()
    assert json.loads((tmp_path / "state" / "state.json").read_text())["rate_limits"] == {"attacker-1": 1.0}
    last = ctl.store.read_audit()[-1]
    assert last["action"] == "block" and last["changed"] and last["actor"] == {"process": "aiir-guard"}
    assert verify_audit(ctl.store.audit_path)["ok"]
    assert ctl.block_now(["attacker-1"], rate_limit_per_s=1.0) and not ctl._pending[-1][-1]  # unchanged
    with ctl._lock:  # another operation holds the controller: never wait on the serving path
        assert ctl.block_now(["attacker-2"]) is False
    assert "attacker-2" not in ctl.routing.blocked
    with pytest.raises(ControlError, match="invalid client id"):
        ctl.block_now(["bad id with spaces"])
    ctl.block(["attacker-3"], reason="admin")  # a later operation audits what was pending first, in order
    actions = [(e["action"], e["params"].get("clients")) for e in ctl.store.read_audit()[-2:]]
    assert actions == [("block", ["attacker-1"]), ("block", ["attacker-3"])]
