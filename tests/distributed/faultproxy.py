"""A TCP proxy in front of the gateway that can hold one kind of request, so a test can kill the worker
that sent it while the task is provably in the middle of its work.

Armed with ``hold("POST /admin/isolate")``, the next request whose first line starts with that method and
path is held (not forwarded) until the client hangs up — its worker was killed — or ``max_hold`` seconds
pass, after which it is forwarded normally. A held request whose client died is dropped: the gateway
never sees it, as when a machine dies before its request leaves it. Everything else passes through.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class Held:
    line: str
    client_port: int
    at: float
    outcome: str = "held"  # held → dropped (client died) | forwarded


class FaultProxy:
    """HTTP/1.1 proxy (keep-alive: the target's client reuses one connection for several calls)."""

    def __init__(self, upstream_port: int, max_hold: float = 4.0):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.upstream_port = upstream_port
        self.max_hold = max_hold
        self.held: list[Held] = []
        self.forwarded = 0
        self._armed: str | None = None
        self._armed_max = max_hold
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                proxy._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True, name="faultproxy").start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def hold(self, prefix: str, max_hold: float | None = None) -> None:
        """Hold the next request starting with ``prefix`` for up to ``max_hold`` s (default: the proxy's);
        keep it below the client's own timeout, or the client gives up first."""
        with self._lock:
            self._armed = prefix
            self._armed_max = self.max_hold if max_hold is None else max_hold

    def disarm(self) -> None:
        with self._lock:
            self._armed = None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------
    def _handle(self, h) -> None:
        import http.client

        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        line = f"{h.command} {h.path}"
        with self._lock:
            hit = self._armed is not None and line.startswith(self._armed)
            if hit:
                self._armed = None  # one request per arming
                max_hold = self._armed_max
        if hit:
            held = Held(line, h.client_address[1], time.time())
            self.held.append(held)
            if self._wait_for_hangup(h.connection, max_hold):
                held.outcome = "dropped"
                h.close_connection = True
                return
            held.outcome = "forwarded"
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in ("connection", "keep-alive")}
            conn.request(h.command, h.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:
            h.send_error(502, f"upstream: {exc}")
            return
        finally:
            conn.close()
        self.forwarded += 1
        h.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _wait_for_hangup(client: socket.socket, seconds: float) -> bool:
        """True when the client closed its end (or was killed) within ``seconds``."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            r, _, _ = select.select([client], [], [], 0.05)
            if r:
                try:
                    if client.recv(1, socket.MSG_PEEK) == b"":
                        return True
                except OSError:
                    return True
        return False
