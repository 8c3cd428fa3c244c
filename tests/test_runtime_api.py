"""aiir.runtime.Airflow's REST calls against a real HTTP server that answers late, as a loaded api-server does:
a trigger whose first try timed out after the run was created returns that run (no second run, no error); a GET
that timed out is asked again; a genuine conflict is still an error."""

from __future__ import annotations

import threading
import time
import urllib.error

import pytest

from aiir import runtime
from tests.httpkit import JSONHandler, QuietServer


class SlowAirflow(JSONHandler):
    runs: dict[str, dict] = {}
    posts: list[dict] = []
    slow_posts = 1  # this many POSTs create the run, then answer only after the client gave up
    slow_gets = 0

    def do_GET(self):
        if self.path == "/auth/token":
            return self._send(200, {"access_token": "t"})
        cls = type(self)
        if cls.slow_gets > 0:
            cls.slow_gets -= 1
            time.sleep(1.5)
        run_id = self.path.rsplit("/", 1)[1]
        if run_id in cls.runs:
            return self._send(200, cls.runs[run_id])
        return self._send(404, {"detail": "no such run"})

    def do_POST(self):
        cls = type(self)
        body = self._body()
        if self.path == "/auth/token":  # the cluster's simple auth manager: a login with the generated password
            ok = body == {"username": "admin", "password": "pw"}
            return self._send(201 if ok else 401, {"access_token": "t"} if ok else {"detail": "bad login"})
        cls.posts.append(body)
        run_id = body["dag_run_id"]
        if self.path.startswith("/api/v2/dags/hang/"):  # busy before it gets to the run: every try times out
            time.sleep(1.0)
            return self._send(503, {"detail": "busy"})
        if run_id in cls.runs:
            return self._send(409, {"detail": f"run {run_id} exists"})
        cls.runs[run_id] = {"dag_run_id": run_id, "state": "queued", "conf": body["conf"]}
        if cls.slow_posts > 0:
            cls.slow_posts -= 1
            time.sleep(1.5)
        return self._send(200, cls.runs[run_id])


@pytest.fixture
def airflow(tmp_path):
    SlowAirflow.runs, SlowAirflow.posts, SlowAirflow.slow_posts, SlowAirflow.slow_gets = {}, [], 1, 0
    server = QuietServer(("127.0.0.1", 0), SlowAirflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    af = runtime.Airflow(port=server.server_address[1], home=tmp_path / "airflow")
    af.timeout = 0.5
    try:
        yield af
    finally:
        server.shutdown()
        server.server_close()


def test_the_cluster_airflow_logs_in_and_has_the_same_timeout_and_retries(airflow, tmp_path, monkeypatch):
    # ClusterAirflow has an __init__ of its own (no process to start): round 6's CI failed on every distributed
    # test because the per-call timeout was set only in Airflow.__init__
    from aiir.cluster import ClusterAirflow

    home = tmp_path / "cluster-airflow"
    home.mkdir()
    (home / "simple_auth_manager_passwords.json.generated").write_text('{"admin": "pw"}')
    monkeypatch.setenv("AIIR_AIRFLOW_API_TIMEOUT", "0.5")
    caf = ClusterAirflow(airflow.url, home)
    assert caf.timeout == 0.5
    SlowAirflow.slow_posts = 0
    caf.trigger("d", {}, run_id="r1")
    SlowAirflow.slow_gets = 1  # the first GET times out; the second is answered
    assert caf.api("GET", "/dags/d/dagRuns/r1")["dag_run_id"] == "r1"


def test_a_trigger_that_timed_out_after_creating_the_run_returns_that_run(airflow):
    run = airflow.trigger("d", {"k": "v"})
    assert len(SlowAirflow.runs) == 1 and run == next(iter(SlowAirflow.runs.values()))
    assert run["dag_run_id"].startswith("manual__") and run["conf"] == {"k": "v"}
    # both tries asked for the same run id: the repeat could only find it, never make a second one
    assert len(SlowAirflow.posts) == 2 and SlowAirflow.posts[0] == SlowAirflow.posts[1]


def test_a_conflict_on_the_first_try_is_an_error(airflow):
    SlowAirflow.slow_posts = 0
    airflow.trigger("d", {}, run_id="INC-1")
    with pytest.raises(urllib.error.HTTPError) as e:
        airflow.trigger("d", {}, run_id="INC-1")
    assert e.value.code == 409


def test_a_get_that_timed_out_is_asked_again(airflow):
    SlowAirflow.slow_posts = 0
    airflow.trigger("d", {}, run_id="r1")
    SlowAirflow.slow_gets = 1
    assert airflow.api("GET", "/dags/d/dagRuns/r1")["dag_run_id"] == "r1"


def test_a_trigger_that_never_gets_an_answer_fails_after_its_tries(airflow):
    airflow.timeout = 0.2
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        airflow.trigger("hang", {}, tries=2)
    assert len(SlowAirflow.posts) == 2 and time.monotonic() - t0 < 5
