"""The local gateway as a DeploymentTarget: an HTTP client of ``aiir serve``'s admin API.

Every call names the model it means (``X-Aiir-Model``), so a gateway serving another model refuses
instead of being contained by mistake. The returned :class:`ServingState` is what the gateway reports
after the operation (never assumed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from aiir.errors import BadInput, TargetError
from aiir.targets.base import DeploymentTarget, ServingState, TargetOption


class LocalGatewayTarget(DeploymentTarget):
    kind: ClassVar[str] = "local"
    title: ClassVar[str] = "aiir serving gateway (embedded default)"
    requires: ClassVar[tuple[str, ...]] = ("httpx",)
    default_conn_id: ClassVar[str | None] = "aiir_target_local"
    options: ClassVar[tuple[TargetOption, ...]] = (
        TargetOption("url", description="gateway base URL (default AIIR_GATEWAY_URL or http://127.0.0.1:8080)"),
        TargetOption("token", description="admin bearer token (default: the token file in state_dir)",
                     secret=True),
        TargetOption("state_dir", description="gateway state folder (token file, decision log)"),
        TargetOption("timeout", type="number", default=5.0, description="seconds per admin call"),
        TargetOption("connect_timeout", type="number", default=2.0, description="seconds to connect"),
    )

    @classmethod
    def options_from_connection(cls, *, host=None, port=None, schema=None, login=None, password=None,
                                extra=None) -> dict[str, Any]:
        """host/port/schema give the URL, password the admin token, extras the other options."""
        opts = super().options_from_connection(extra=extra)
        if host:
            opts["url"] = f"{schema or 'http'}://{host}" + (f":{port}" if port else "")
        if password:
            opts["token"] = password
        return opts

    def __init__(self, name: str, url: str | None = None, token: str | None = None,
                 state_dir: str | Path | None = None, *, timeout: float = 5.0, connect_timeout: float = 2.0):
        super().__init__(name)
        from aiir import config

        self.url = (url or config.gateway_url()).rstrip("/")
        self.state_dir = Path(state_dir) if state_dir else config.paths().gateway / name
        self._token = token
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._http = None

    # ------------------------------------------------------------------ plumbing
    def _get_token(self) -> str:
        if self._token:
            return self._token
        from aiir.gateway import TOKEN_FILE
        from aiir.gateway.state import read_token

        try:
            self._token = read_token(self.state_dir / TOKEN_FILE)
        except BadInput as exc:
            raise TargetError(f"{self.ref}: cannot read the gateway admin token ({exc}); start `aiir serve "
                              f"--model {self.name}` once, or pass token=") from None
        return self._token

    def _client(self):
        """One HTTP client per target (kept alive). Plain http:// has no TLS to verify, so no CA bundle is
        loaded (that alone costs 25-70 ms per client); a loopback gateway is never reached through a
        proxy from the environment, so the admin token cannot leak to one."""
        if self._http is None:
            from urllib.parse import urlsplit

            import httpx

            parts = urlsplit(self.url)
            loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
            self._http = httpx.Client(timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                                      verify=parts.scheme == "https", trust_env=not loopback)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 params: dict[str, Any] | None = None) -> Any:
        import httpx

        url = f"{self.url}{path}"
        headers = {"Authorization": f"Bearer {self._get_token()}", "X-Aiir-Model": self.name,
                   "User-Agent": "aiir-local-target"}
        try:
            r = self._client().request(method, url, json=body, params=params, headers=headers)
        except httpx.ConnectError:
            raise TargetError(f"{self.ref}: gateway at {self.url} is unreachable (connection refused or "
                              f"no route) — is `aiir serve --model {self.name}` running there?") from None
        except httpx.TimeoutException:
            raise TargetError(f"{self.ref}: gateway at {self.url} did not answer {method} {path} within "
                              f"{self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise TargetError(f"{self.ref}: {method} {url} failed ({type(exc).__name__}: {exc})") from None
        try:
            data = r.json()
        except (json.JSONDecodeError, ValueError):
            data = None
        if r.status_code == 200 and data is not None:
            return data
        msg = data.get("message") if isinstance(data, dict) else (r.text[:300] or r.reason_phrase)
        if r.status_code == 401:
            raise TargetError(f"{self.ref}: gateway at {self.url} refused the admin token (HTTP 401: {msg})")
        if r.status_code in (400, 404, 422):
            raise BadInput(f"{self.ref} {path}", msg)
        raise TargetError(f"{self.ref}: {method} {path} at {self.url} failed (HTTP {r.status_code}: {msg})")

    def _state(self, data: Any) -> ServingState:
        if not isinstance(data, dict) or "mode" not in data:
            raise TargetError(f"{self.ref}: gateway at {self.url} returned no serving state")
        if data.get("model") != self.name:
            raise TargetError(f"{self.ref}: gateway at {self.url} serves model '{data.get('model')}', "
                              f"not '{self.name}'")
        return ServingState.from_dict(data)

    # ------------------------------------------------------------------ contract
    def describe(self) -> ServingState:
        return self._state(self._request("GET", "/admin/state"))

    def isolate(self, *, fallback_version: str | None = None, quarantine: bool = False,
                reason: str = "") -> ServingState:
        body: dict[str, Any] = {"quarantine": bool(quarantine), "reason": reason}
        if fallback_version is not None:
            body["fallback_version"] = str(fallback_version)
        return self._state(self._request("POST", "/admin/isolate", body))

    def block_clients(self, clients: list[str], *, rate_limit_per_s: float | None = None,
                      reason: str = "") -> ServingState:
        body: dict[str, Any] = {"clients": list(clients), "reason": reason}
        if rate_limit_per_s is not None:
            body["rate_limit_per_s"] = rate_limit_per_s
        return self._state(self._request("POST", "/admin/block", body))

    def restore(self, *, reason: str = "", follow_alias: bool = False) -> ServingState:
        """Lift containment. ``follow_alias`` (gateway extension) also unpins a rolled-back primary."""
        return self._state(self._request("POST", "/admin/restore",
                                         {"reason": reason, "follow_alias": bool(follow_alias)}))

    def rollback(self, version: str, *, reason: str = "") -> ServingState:
        return self._state(self._request("POST", "/admin/rollback", {"version": str(version), "reason": reason}))

    def canary(self, version: str, share: float, *, reason: str = "") -> ServingState:
        return self._state(self._request("POST", "/admin/canary",
                                         {"version": str(version), "share": share, "reason": reason}))

    def decisions(self, since=None, until=None, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Served decisions, oldest first: read straight from the decision log when it is on this machine
        (the state folder), else through the admin API (at most 100,000 rows a call)."""
        from aiir.gateway import DECISIONS_FILE

        since = since.isoformat() if hasattr(since, "isoformat") else since
        until = until.isoformat() if hasattr(until, "isoformat") else until
        path = self.state_dir / DECISIONS_FILE
        if path.exists():
            from aiir.gateway.decision_log import DecisionLog

            return DecisionLog(path).query(since=since, until=until, limit=limit)
        params: dict[str, Any] = {"limit": int(limit or 100_000)}
        if since:
            params["since"] = since
        if until:
            params["until"] = until
        return self._request("GET", "/admin/decisions", params=params).get("decisions", [])

    def snapshot(self, dest: Path, *, decisions: int = 1000) -> list[Path]:
        """Write ``state.json``, ``admin-audit.jsonl``, ``decisions-recent.jsonl`` (the last ``decisions``
        decisions, oldest first) and ``decision-log-head.json`` into ``dest``."""
        from aiir.gateway.state import atomic_write_json

        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        state = self._request("GET", "/admin/state")
        self._state(state)
        audit = self._request("GET", "/admin/audit")
        written = []
        p = dest / "state.json"
        atomic_write_json(p, state)
        written.append(p)
        p = dest / "admin-audit.jsonl"
        _write_lines(p, audit.get("entries", []))
        written.append(p)
        if state.get("extra", {}).get("decision_log", {}).get("enabled", True):
            dec = self._request("GET", "/admin/decisions", params={"limit": int(decisions)})
            p = dest / "decisions-recent.jsonl"
            _write_lines(p, dec.get("decisions", []))
            written.append(p)
            p = dest / "decision-log-head.json"
            atomic_write_json(p, dec.get("head", {}))
            written.append(p)
        return written


def _write_lines(path: Path, rows: list[Any]) -> None:
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, sort_keys=True, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
