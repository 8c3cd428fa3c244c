"""Containment and the decision log survive a restart; SIGTERM loses no decision."""

from __future__ import annotations

import json
import signal
import stat
import threading
import time

import httpx

from aiir.gateway.decision_log import DecisionLog
from tests.gateway.gwkit import ROWS, Gateway, split


def test_restart_keeps_containment_token_and_log(gw_env, tmp_path):
    state = tmp_path / "state"
    g = Gateway(gw_env, state, tmp_path / "serve.log").start()
    try:
        token = g.token
        assert stat.S_IMODE((state / "admin.token").stat().st_mode) == 0o600
        ids = []
        for i in range(25):  # not flushed: SIGTERM must still get every one into the log
            ids += g.score(split(ROWS), client=f"c{i % 3}").json()["decision_ids"]
        g.ok("/admin/isolate", {"reason": "incident before restart"})
        g.ok("/admin/block", {"clients": ["evil"]})
        g.ok("/admin/block", {"clients": ["slow"], "rate_limit_per_s": 1})
        before = g.ok("/admin/state")
    finally:
        rc = g.stop(signal.SIGTERM)
    assert rc == 0
    log = DecisionLog(state / "decisions.db")
    assert [r["decision_id"] for r in log.query()] == ids  # all 100, in order
    assert log.verify_chain().ok
    assert not (state / "decisions.db.rejects.jsonl").exists()

    g2 = Gateway(gw_env, state, tmp_path / "serve2.log")
    g2.port, g2.url = g.port, g.url  # same address, new process
    g2.http = g.http
    g2.start()
    try:
        assert g2.token == token
        after = g2.ok("/admin/state")
        for k in ("mode", "routes", "fallback_version", "blocked_clients", "rate_limits", "reason", "updated_at"):
            assert after[k] == before[k], k
        r = g2.score(split(ROWS[:1]), client="ok")
        assert r.status_code == 200 and r.headers["X-Model-Version"] == "1"
        assert g2.score(split(ROWS[:1]), client="evil").status_code == 403
        codes = [g2.score(split(ROWS[:1]), client="slow").status_code for _ in range(3)]
        assert codes[0] == 200 and 429 in codes
        g2.flush()
        rep = DecisionLog(state / "decisions.db").verify_chain()
        assert rep.ok and rep.rows == 100 + 1 + codes.count(200)
        audit = g2.ok("/admin/audit")["entries"]
        assert [e["action"] for e in audit].count("start") == 2
    finally:
        assert g2.stop() == 0


def test_no_log_mode_serves_without_writing(gw_env, tmp_path):
    state = tmp_path / "state"
    g = Gateway(gw_env, state, tmp_path / "serve.log", extra=("--no-log",)).start()
    try:
        r = g.score(split(ROWS), client="x")
        assert r.status_code == 200 and len(r.json()["decision_ids"]) == 4
        assert g.admin("/admin/decisions").status_code == 409
        assert g.ok("/admin/state")["extra"]["decision_log"] == {"enabled": False}
    finally:
        g.stop()
    assert not (state / "decisions.db").exists()
    assert "decision logging is OFF" in (tmp_path / "serve.log").read_text()


def test_startup_errors_are_one_clear_line(gw_env, tmp_path):
    import socket
    import subprocess

    from tests.gateway.gwkit import AIIR, MODEL

    def serve(*args):
        return subprocess.run([str(AIIR), "serve", "--state-dir", str(tmp_path / "s"), *args], env=gw_env,
                              capture_output=True, text=True, timeout=180)

    r = serve("--model", "no-such-model", "--port", "1")
    assert r.returncode == 2 and "no registered model 'no-such-model'" in r.stderr
    r = serve("--model", MODEL, "--alias", "nope")
    assert r.returncode == 2 and "has no alias 'nope'" in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = serve("--model", MODEL, "--port", str(s.getsockname()[1]))
    assert r.returncode == 1 and "could not listen" in r.stderr and "Traceback" not in r.stderr


def test_durable_mode_commits_before_answering_even_across_sigkill(gw_env, tmp_path):
    """Issue #10's gateway fault: kill -9 in the middle of concurrent traffic (4 clients, requests in
    flight); every decision a client was answered with is in the log and the hash chain verifies."""
    state = tmp_path / "state"
    g = Gateway(gw_env, state, tmp_path / "serve.log", extra=("--durable",)).start()
    answered: list[str] = []
    stop, lock, errors, threads = threading.Event(), threading.Lock(), [], []
    try:
        log = DecisionLog(state / "decisions.db")
        for _ in range(20):
            r = g.score(split(ROWS[:2]), client="d")
            assert r.status_code == 200
            answered += r.json()["decision_ids"]
            assert log.count() == len(answered)  # committed before the response, no flush needed
        assert g.ok("/admin/state")["extra"]["decision_log"]["durable"] is True

        def client(name: str) -> None:
            with httpx.Client(base_url=g.url, timeout=20) as http:
                while not stop.is_set():
                    try:
                        r = http.post("/invocations", content=json.dumps(split(ROWS[:2])),
                                      headers={"Content-Type": "application/json", "X-Client-Id": name})
                    except httpx.HTTPError:
                        return  # the gateway is gone: this request was never answered
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                        return
                    with lock:
                        answered.extend(r.json()["decision_ids"])

        threads += [threading.Thread(target=client, args=(f"c{i}",), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(answered) < 40 + 200 and time.monotonic() < deadline and not errors:
            time.sleep(0.01)
    finally:
        g.stop(signal.SIGKILL)  # mid-traffic, no graceful shutdown at all
        stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(answered) >= 240, len(answered)
    log = DecisionLog(state / "decisions.db")
    logged = [r["decision_id"] for r in log.query()]
    assert logged[:40] == answered[:40]
    missing = set(answered) - set(logged)
    assert not missing, f"{len(missing)} answered decisions are not in the log"
    assert len(logged) - len(answered) <= 8  # at most the requests in flight: committed, answer lost
    rep = log.verify_chain()
    assert rep.ok and rep.rows == len(logged), rep
