"""Trigger the evasion playbook through Airflow's REST API, asynchronously.

The gateway's guard hands each trip to :class:`PlaybookTrigger`, whose one background thread POSTs a DAG
run (``POST /api/v2/dags/<dag>/dagRuns``) with the evidence as conf. Scoring never waits for it: ``submit``
only puts the event on a queue. Every outcome (triggered, retried, failed) is appended to the guard's
event log and failures are printed to stderr; nothing is raised into the serving path.

Configuration (environment, never the command line, for the credentials):

=============================  ===================================================================
``AIIR_AIRFLOW_URL``           Airflow base URL (``aiir serve --playbook-url`` overrides); unset: no trigger
``AIIR_AIRFLOW_TOKEN``         a JWT to send as is, or
``AIIR_AIRFLOW_USERNAME``      username and password for ``POST /auth/token``;
``AIIR_AIRFLOW_PASSWORD``      with neither, ``GET /auth/token`` (simple auth manager, all admins: the demo)
``AIIR_EVASION_DAG``           DAG id (default ``incident_adversarial_evasion``)
=============================  ===================================================================
"""

from __future__ import annotations

import json
import os
import queue
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

DEFAULT_DAG = "incident_adversarial_evasion"


def incident_id_for(event: dict[str, Any], model: str) -> str:
    """One incident id per trip (deterministic: a retried trigger is the same DAG run)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{model}-{event['client_id']}").strip("-")[:60]
    stamp = re.sub(r"[^0-9]", "", event["at"])[:14]
    return f"INC-EVA-{stamp}-{slug}"


def playbook_conf(event: dict[str, Any], *, model: str, target_kind: str = "local",
                  target_name: str | None = None) -> dict[str, Any]:
    """The DAG run conf: the incident fields every playbook takes, the trip as a finding with evidence."""
    from aiir.knowledge.taxonomy import suggest

    kind = "extraction" if set(event.get("reasons", [])) == {"ood"} else "evasion"
    ids = suggest(kind)
    return {
        "model_name": model, "target_kind": target_kind, "target_name": target_name or model,
        "incident_id": incident_id_for(event, model), "detected_at": event["at"], "severity": "high",
        "opened_by": "gateway_guard",
        "findings": [{"kind": kind, "severity": "high", "title": f"inline guard tripped on client "
                      f"'{event['client_id']}' ({', '.join(event.get('reasons', []))})",
                      "sources": [event["client_id"]], **ids, "evidence": event}],
    }


class PlaybookTrigger:
    """One daemon thread POSTing DAG runs; ``submit`` never blocks."""

    def __init__(self, url: str, *, dag_id: str = DEFAULT_DAG, token: str | None = None,
                 username: str | None = None, password: str | None = None, timeout: float = 10.0,
                 tries: int = 3, record: Callable[[dict[str, Any]], None] | None = None):
        self.url = url.rstrip("/")
        self.dag_id = dag_id
        self._static_token = token
        self._username, self._password = username, password
        self._token: str | None = None
        self.timeout = timeout
        self.tries = tries
        self.record = record or (lambda _e: None)
        self.q: queue.Queue = queue.Queue(maxsize=1000)
        self.sent = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="aiir-playbook-trigger", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls, url: str | None = None, **kw) -> PlaybookTrigger | None:
        url = url or os.environ.get("AIIR_AIRFLOW_URL")
        if not url:
            return None
        return cls(url, dag_id=os.environ.get("AIIR_EVASION_DAG", DEFAULT_DAG),
                   token=os.environ.get("AIIR_AIRFLOW_TOKEN"), username=os.environ.get("AIIR_AIRFLOW_USERNAME"),
                   password=os.environ.get("AIIR_AIRFLOW_PASSWORD"), **kw)

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "dag_id": self.dag_id, "sent": self.sent, "failed": self.failed,
                "queued": self.q.qsize(),
                "auth": "token" if self._static_token else ("password" if self._username else "open /auth/token")}

    def submit(self, conf: dict[str, Any]) -> bool:
        try:
            self.q.put_nowait((time.time(), conf))
            return True
        except queue.Full:
            self.failed += 1
            print("aiir-guard: playbook trigger queue full; dropping a trigger", file=sys.stderr, flush=True)
            return False

    def wait_idle(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.q.unfinished_tasks == 0:
                return True
            time.sleep(0.02)
        return False

    # ------------------------------------------------------------------ worker
    def _http(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        data = None if body is None else json.dumps(body, default=str).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def _auth(self) -> str:
        if self._static_token:
            return self._static_token
        if self._token is None:
            if self._username:
                r = self._http("POST", "/auth/token", {"username": self._username, "password": self._password or ""})
            else:
                r = self._http("GET", "/auth/token")
            self._token = r["access_token"]
        return self._token

    def _run(self) -> None:
        while True:
            queued_at, conf = self.q.get()
            try:
                self._send(queued_at, conf)
            finally:
                self.q.task_done()

    def _send(self, queued_at: float, conf: dict[str, Any]) -> None:
        run_id = conf["incident_id"]
        last = ""
        for attempt in range(1, self.tries + 1):
            try:
                r = self._http("POST", f"/api/v2/dags/{self.dag_id}/dagRuns",
                               {"dag_run_id": run_id, "logical_date": None, "conf": conf}, token=self._auth())
                self.sent += 1
                self.record({"event": "playbook_triggered", "incident_id": run_id, "dag_id": self.dag_id,
                             "dag_run_id": (r or {}).get("dag_run_id", run_id), "attempt": attempt,
                             "seconds_after_trip": round(time.time() - queued_at, 3)})
                return
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                if exc.code == 409:  # this run exists already: the same incident was triggered before
                    self.record({"event": "playbook_triggered", "incident_id": run_id, "dag_id": self.dag_id,
                                 "dag_run_id": run_id, "attempt": attempt, "already_existed": True})
                    return
                if exc.code == 401:
                    self._token = None
                last = f"HTTP {exc.code}: {detail}"
                if exc.code in (400, 404, 422):
                    break
            except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(min(2.0, 0.25 * 2 ** attempt))
        self.failed += 1
        self.record({"event": "playbook_trigger_failed", "incident_id": run_id, "dag_id": self.dag_id,
                     "url": self.url, "error": last[:500]})
        print(f"aiir-guard: could not trigger {self.dag_id} at {self.url} for {run_id}: {last}",
              file=sys.stderr, flush=True)
