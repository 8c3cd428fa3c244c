"""The gateway's HTTP surface (Starlette on uvicorn, one process, one event loop).

Scoring runs inline on the event loop (the demo models take well under a millisecond; a thread hop
would cost more than it saves). Decisions are handed to the log writer (by default a child process,
:mod:`aiir.gateway.log_writer`) *before* the response is sent; if the log cannot keep up, or its writer
died, the request is refused (503) rather than served unlogged.
Admin operations run in a worker thread (they may load a model version) and swap the routing in one
assignment.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import re
import signal
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from aiir.gateway.apikeys import Identity, IdentityRefused
from aiir.gateway.control import ControlError, Controller
from aiir.gateway.decision_log import (
    DecisionLog,
    DecisionWriter,
    LogBacklogFull,
    _json_default,
    new_decision_ids,
)
from aiir.gateway.identity import (
    RULE,
    InvalidClientId,
    normalise_client_id,
    rate_limit_key,
)
from aiir.gateway.scoring import InputError, parse_body
from aiir.gateway.state import fingerprint, utc_now

DEFAULT_MAX_BODY = 8 * 1024 * 1024
GUARD_EVENTS_FILE = "guard-events.jsonl"
ADMIN_MODEL_HEADER = "x-aiir-model"
# X-Request-Id: ASCII, starts with a letter or digit (it is exported to CSV and shown in reports)
GUARD_FAULT = object()  # what a request gets from the guard when the guard itself failed on it
GUARD_FAULT_LOG_EVERY_S = 60.0  # a failing guard's traceback and event are written at most this often
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")


_PATH_RE = re.compile(r"(?<![\w.~])(?:/[^\s'\"(),:;]+)+/?")


def scrub_paths(text: str) -> str:
    """``text`` with absolute file-system paths replaced by ``<path>``: bodies clients can read (scoring
    errors, health) must not map the server's layout."""
    return _PATH_RE.sub("<path>", text)


# Every answer is JSON that may quote client-supplied text: never let a browser sniff or render it as a page.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff",
                    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
                    "Cache-Control": "no-store"}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=_json_default).encode()


def create_app(ctl: Controller, *, token: str, log: DecisionLog | None, writer: Any | None,
               max_body_bytes: int = DEFAULT_MAX_BODY, durable: bool = False,
               identity: Identity | None = None, guard: Any | None = None, trigger: Any | None = None,
               target_name: str | None = None):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    model_name = ctl.name
    stats = ctl.stats
    by_version = ctl.by_version
    auth_failures: list[float] = []
    ident = identity or Identity(None)
    guard_events = ctl.store.dir / GUARD_EVENTS_FILE
    notified: set[str] = set()
    background = None
    if guard is not None:
        from concurrent.futures import ThreadPoolExecutor

        # imported now (with the ATLAS/OWASP taxonomy it reads), not on the first trip
        from aiir.evasion.trigger import playbook_conf

        playbook_conf({"client_id": "warm-up", "at": utc_now(), "reasons": []}, model=model_name)
        # one worker for the trips' durable part, in order (state save + audit, event log, playbook trigger)
        background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiir-guard")
        background.submit(lambda: None).result()  # its thread exists before the first trip

    fault_logged = [-math.inf]  # when a guard fault was last written out

    def guard_fault() -> object:
        """The guard raised on a request (a bug, or input it was not built for): the request is answered with
        the guard's conservative fallback — never a 500 for the model's clients, never an unguarded answer —
        counted in stats.guard_errors, and the traceback and a ``guard_error`` event are written at most once
        a minute (with the count since), so a guard failing on every request cannot flood the logs."""
        stats["guard_errors"] += 1
        now = time.monotonic()
        if now - fault_logged[0] >= GUARD_FAULT_LOG_EVERY_S:
            fault_logged[0] = now
            exc = sys.exc_info()[1]
            print("aiir-guard: the guard failed on a request; it is answered with the conservative fallback "
                  f"(guard errors so far: {stats['guard_errors']})", file=sys.stderr, flush=True)
            traceback.print_exc(file=sys.stderr)
            entry = {"event": "guard_error", "error": scrub_paths(f"{type(exc).__name__}: {str(exc)[:300]}"),
                     "guard_errors": stats["guard_errors"], "answered_with": "fallback"}
            background.submit(trigger_record, entry)
        return GUARD_FAULT

    def record_guard_event(entry: dict[str, Any]) -> None:
        line = json.dumps({"time": utc_now(), **entry}, default=str, sort_keys=True)
        with open(guard_events, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def contain_now(ev: dict[str, Any], t_trip: float) -> None:
        """On the serving path, before the tripping request is answered: the block / rate limit goes into the
        routing in memory (no disk, no registry, never a wait on another admin operation), so every later
        request of the client meets it. Falls back to the background path when the controller is busy."""
        rate = guard.rate_limit if guard.action == "fallback" else None
        try:
            fast = ctl.block_now([ev["client_id"]], rate_limit_per_s=rate,
                                 reason=f"inline evasion guard: {', '.join(ev['reasons'])}",
                                 actor={"process": "aiir-guard"})
        except ControlError as exc:  # e.g. an id the admin API would refuse: the guard's fallback still holds
            print(f"aiir-guard: cannot contain {ev['client_id']!r} in the routing: {exc.message}", file=sys.stderr,
                  flush=True)
            fast = False
        ev["containment"] = {"in_force": "serving_path" if fast else "background",
                             "in_force_after_trip_s": round(time.perf_counter() - t_trip, 6) if fast else None}

    def contain_tripped(ev: dict[str, Any], t_trip: float) -> None:
        """Background work after a trip (the serving path already answers conservatively and, normally, has
        put the rate limit / block in the routing): make it durable through the controller (state.json +
        admin audit), log the trip with its timings, trigger the playbook."""
        client = ev["client_id"]
        t0 = time.perf_counter()
        cont = ev.setdefault("containment", {"in_force": "background", "in_force_after_trip_s": None})
        try:
            if cont["in_force"] == "serving_path":
                ctl.persist_pending()
            else:
                rate = guard.rate_limit if guard.action == "fallback" else None
                ctl.block([client], rate_limit_per_s=rate, reason=f"inline evasion guard: {', '.join(ev['reasons'])}",
                          actor={"process": "aiir-guard"})
                cont["in_force_after_trip_s"] = round(time.perf_counter() - t_trip, 6)
            persisted = True
        except Exception as exc:  # the in-memory containment stays in effect
            persisted = False
            print(f"aiir-guard: could not persist the containment of {client!r}: {exc}", file=sys.stderr,
                  flush=True)
        cont["persisted_after_trip_s"] = round(time.perf_counter() - t_trip, 6) if persisted else None
        try:
            record_guard_event({**ev, "persisted": persisted,
                                "persist_seconds": round(time.perf_counter() - t0, 4)})
        except OSError as exc:
            print(f"aiir-guard: cannot write {guard_events}: {exc}", file=sys.stderr, flush=True)
        if trigger is not None:
            trigger.submit(playbook_conf(ev, model=model_name, target_name=target_name or model_name))

    def trigger_record(entry: dict[str, Any]) -> None:
        try:
            record_guard_event(entry)
        except OSError:
            pass

    if trigger is not None:
        trigger.record = trigger_record

    def jresp(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(_dumps(obj), status_code=status, media_type="application/json",
                        headers={**SECURITY_HEADERS, **(headers or {})})

    def err(status: int, code: str, message: str, request_id: str | None = None, **extra: Any) -> Response:
        stats[f"http_{status}"] += 1
        body = {"error": code, "message": message, **extra}
        if request_id:
            body["request_id"] = request_id
        headers = {"X-Request-Id": request_id} if request_id else None
        return jresp(body, status, headers)

    async def read_body(request: Request) -> bytes:
        cl = request.headers.get("content-length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                raise InputError("invalid Content-Length header", code="bad_request") from None
            if n > max_body_bytes:
                raise InputError(f"request body is {n} bytes; the limit is {max_body_bytes} bytes",
                                 code="body_too_large", status=413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise InputError(f"request body exceeds the limit of {max_body_bytes} bytes",
                                 code="body_too_large", status=413)
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------ scoring
    async def ping(request: Request) -> Response:
        r = ctl.routing
        body = {"status": "ok", "model": model_name, "mode": r.mode,
                "serving_version": r.serving.version if r.mode != "quarantined" else None,
                "identity": "api_key" if ident.key_mode else "header", "identity_trusting": not ident.key_mode}
        if writer is not None and getattr(writer, "dead", None):
            body.update(status="degraded", problem=scrub_paths(f"decision log writer is down: {writer.dead}"))
            return jresp(body, 503)
        return jresp(body)

    async def invocations(request: Request) -> Response:
        t0 = time.perf_counter()
        t_epoch = time.time()
        headers = request.headers
        rid = headers.get("x-request-id")
        if rid is None:
            rid = uuid.uuid4().hex
        elif not _REQUEST_ID_RE.fullmatch(rid):
            return err(400, "bad_request_id", "X-Request-Id must be 1-128 ASCII letters, digits or . _ : / + = @ -, "
                       "starting with a letter or digit", uuid.uuid4().hex)
        try:
            client, key_id = ident.resolve(headers)
        except IdentityRefused as exc:
            return err(exc.status, exc.code, exc.message, rid)
        stats["requests"] += 1
        try:
            r = ctl.routing
            if client in r.blocked or (key_id is not None and "key:" + key_id in r.blocked):
                stats["refused_blocked"] += 1
                return err(403, "client_blocked", f"client '{client}' is blocked by incident containment",
                           rid, reason=ctl.state.reason)
            if r.mode == "quarantined":
                stats["refused_quarantined"] += 1
                return err(503, "model_quarantined", f"model '{model_name}' is quarantined: scoring is "
                           "suspended by incident containment", rid, reason=ctl.state.reason)
            limit = rate_limit_key(client, r.rate_limits) if r.rate_limits else None
            if limit is not None:
                bucket, rate = limit
                ok, wait = ctl.allow(bucket, rate)
                if not ok:
                    stats["refused_rate_limited"] += 1
                    shared = " (shared by every client id without a limit of its own)" if bucket != client else ""
                    resp = err(429, "rate_limited", f"client '{bucket}' is limited to {rate:g} requests/s{shared}",
                               rid, retry_after_s=round(wait, 3))
                    resp.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
                    return resp
            lv = ctl.pick(r)
            body = await read_body(request)
            cols, rows = parse_body(body, headers.get("content-type"), lv.schema)
            df = lv.schema.to_frame(cols, rows)
            try:
                preds, scores = lv.predict(df)
            except (ValueError, TypeError) as exc:
                return err(422, "model_rejected_input", f"model version {lv.version} could not score the "
                           f"input: {scrub_paths(str(exc).splitlines()[0][:300])}", rid)
            n = len(rows)
            ids = new_decision_ids(n)
            source = "gateway"
            served_preds, served_scores = preds, scores
            guarded_by = None
            if guard is not None:
                try:
                    ev = guard.observe(client, cols, rows, preds, scores, ids, key_id=key_id)
                except Exception:  # a fault in the guard: neither a 500 nor an unguarded answer (docs/evasion.md)
                    ev = guard_fault()
                if ev is GUARD_FAULT:
                    served_preds, served_scores = guard.conservative(preds, scores)
                    source, guarded_by = "gateway-guard", "fallback-guard-error"
                elif ev is not None:
                    if guard.new_trips:  # this request tripped the client (and maybe a cluster's members)
                        t_trip = time.perf_counter()
                        for trip in guard.drain_trips():
                            if trip["client_id"] not in notified:
                                notified.add(trip["client_id"])
                                stats["guard_trips"] += 1
                                contain_now(trip, t_trip)
                                background.submit(contain_tripped, trip, t_trip)
                    if guard.action == "block":
                        stats["refused_guard"] += 1
                        guard.stats["refused"] += 1
                        return err(403, "client_blocked", f"client '{client}' is blocked by the inline evasion "
                                   "guard", rid, reason=f"inline evasion guard: {', '.join(ev['reasons'])}")
                    served_preds, served_scores = guard.conservative(preds, scores)
                    source, guarded_by = "gateway-guard", "fallback"
            latency_ms = (time.perf_counter() - t0) * 1000.0
            if writer is not None:
                try:
                    mark = writer.submit((t_epoch, client, rid, model_name, lv.version, lv.digest, cols, rows,
                                          ids, served_preds, scores, latency_ms, source))
                    if durable:  # answer only once the decisions are committed
                        await writer.committed(mark)
                except LogBacklogFull as exc:
                    return err(503, "decision_log_unavailable",
                               scrub_paths(f"refusing to serve unlogged decisions: {exc}"), rid)
            stats["decisions"] += n
            by_version[lv.version] += 1
            out = {"predictions": served_preds,
                   "scores": served_scores if served_scores is not None else [None] * n,
                   "decision_ids": ids, "model": model_name, "model_version": lv.version}
            hdrs = {**SECURITY_HEADERS, "X-Model-Version": lv.version, "X-Request-Id": rid}
            if guarded_by:
                hdrs["X-Aiir-Guard"] = guarded_by
            return Response(_dumps(out), media_type="application/json", headers=hdrs)
        except InputError as exc:
            stats["bad_requests"] += 1
            return err(exc.status, exc.code, exc.message, rid)
        except Exception as exc:  # never let one request take the server down
            stats["internal_errors"] += 1
            traceback.print_exc(file=sys.stderr)
            return err(500, "internal_error", scrub_paths(f"{type(exc).__name__}: {str(exc)[:300]}"), rid)

    # ------------------------------------------------------------------ admin
    def authorize(request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        remote = request.client.host if request.client else None
        auth = request.headers.get("authorization")
        presented = None
        if auth and auth[:7].lower() == "bearer ":
            presented = auth[7:].strip()
        if presented is None or not ctl.store.check_token(token, presented):
            now = time.monotonic()
            auth_failures[:] = [t for t in auth_failures if now - t < 60][-100:]
            if len(auth_failures) < 60:  # audit refused admin calls, at most 60 a minute
                auth_failures.append(now)
                ctl.store.audit({"action": "auth_refused", "actor": {"remote": remote},
                                 "params": {"path": request.url.path, "token_presented": presented is not None},
                                 "changed": False, "reason": ""})
            stats["admin_auth_refused"] += 1
            # names no server path: the operator knows where the token is (`aiir serve` prints it at start)
            msg = ("missing admin token: send 'Authorization: Bearer <token>' (the token is in the gateway's "
                   "state folder, file admin.token)" if presented is None else "invalid admin token")
            return None, jresp({"error": "unauthorized", "message": msg}, 401,
                               {"WWW-Authenticate": 'Bearer realm="aiir-gateway"'})
        want = request.headers.get(ADMIN_MODEL_HEADER)
        if want is not None and want != model_name:
            return None, jresp({"error": "wrong_model", "message": f"this gateway serves model '{model_name}', "
                                f"not '{want}'"}, 409)
        return {"token": fingerprint(presented), "remote": remote,
                "user_agent": request.headers.get("user-agent", "")[:200]}, None

    async def json_body(request: Request) -> dict[str, Any]:
        body = await read_body(request)
        if not body.strip():
            return {}
        try:
            obj = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"admin body is not valid JSON ({exc})", code="bad_json") from None
        if not isinstance(obj, dict):
            raise InputError("admin body must be a JSON object", code="bad_format")
        return obj

    def admin(op):
        async def endpoint(request: Request) -> Response:
            actor, refusal = authorize(request)
            if refusal is not None:
                return refusal
            try:
                body = await json_body(request) if request.method == "POST" else {}
                result = await op(request, body, actor)
                return result if isinstance(result, Response) else jresp(result)
            except InputError as exc:
                return err(exc.status, exc.code, exc.message)
            except ControlError as exc:
                return err(exc.status, exc.code, exc.message)
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                return err(500, "internal_error", f"{type(exc).__name__}: {str(exc)[:300]}")
        return endpoint

    def reason_of(body: dict) -> str:
        r = body.get("reason", "")
        if not isinstance(r, str):
            raise InputError("'reason' must be a string", code="bad_format")
        return r[:2000]

    def known(body: dict, allowed: set[str]) -> None:
        bad = sorted(set(body) - allowed - {"reason"})
        if bad:
            raise InputError(f"unknown field(s): {', '.join(bad)} (allowed: {', '.join(sorted(allowed | {'reason'}))})",
                             code="bad_format")

    async def op_state(request, body, actor):
        d = ctl.describe()
        d["extra"]["stats"] = {**stats, "by_version": dict(by_version)}
        d["extra"]["decision_log"] = ({"enabled": True, "path": str(log.path), **writer.stats()}
                                      if writer is not None else {"enabled": False})
        d["extra"]["identity"] = ident.describe()
        d["extra"]["guard"] = guard.describe() if guard is not None else {"enabled": False}
        if trigger is not None:
            d["extra"]["guard"]["playbook_trigger"] = trigger.describe()
        d["extra"]["native_threads"] = native_threads()
        d["extra"]["gc"] = gc_state()
        return d

    async def op_isolate(request, body, actor):
        known(body, {"fallback_version", "quarantine"})
        q = body.get("quarantine", False)
        if not isinstance(q, bool):
            raise InputError("'quarantine' must be true or false", code="bad_format")
        fb = body.get("fallback_version")
        if fb is not None and (isinstance(fb, bool) or not isinstance(fb, str | int)):
            raise InputError("'fallback_version' must be a version number", code="bad_format")
        return await run_in_threadpool(ctl.isolate, fallback_version=None if fb is None else str(fb),
                                       quarantine=q, reason=reason_of(body), actor=actor)

    async def op_block(request, body, actor):
        known(body, {"clients", "rate_limit_per_s"})
        return await run_in_threadpool(ctl.block, body.get("clients"),
                                       rate_limit_per_s=body.get("rate_limit_per_s"),
                                       reason=reason_of(body), actor=actor)

    async def op_restore(request, body, actor):
        known(body, {"follow_alias"})
        fa = body.get("follow_alias", False)
        if not isinstance(fa, bool):
            raise InputError("'follow_alias' must be true or false", code="bad_format")
        out = await run_in_threadpool(ctl.restore, reason=reason_of(body), follow_alias=fa, actor=actor)
        if guard is not None:  # restore lifts the guard's containment too
            guard.release()
            notified.clear()
        return out

    async def op_guard(request, body, actor):
        if guard is None:
            return {"enabled": False, "events": []}
        limit = _int_param(request, "limit", 1000, 100_000)

        def read():
            if not guard_events.exists():
                return []
            lines = guard_events.read_text(encoding="utf-8").splitlines()[-limit:]
            return [json.loads(x) for x in lines if x.strip()]
        return {**guard.describe(), "events": await run_in_threadpool(read),
                "playbook_trigger": trigger.describe() if trigger is not None else None}

    async def op_rollback(request, body, actor):
        known(body, {"version"})
        return await run_in_threadpool(ctl.rollback, body.get("version"), reason=reason_of(body), actor=actor)

    async def op_canary(request, body, actor):
        known(body, {"version", "share"})
        if "share" not in body:
            raise InputError("'share' is required (0..1)", code="bad_format")
        return await run_in_threadpool(ctl.canary, body.get("version"), body.get("share"),
                                       reason=reason_of(body), actor=actor)

    def _int_param(request, name: str, default: int | None, hi: int) -> int | None:
        v = request.query_params.get(name)
        if v is None:
            return default
        try:
            n = int(v)
        except ValueError:
            raise InputError(f"query parameter '{name}' must be an integer", code="bad_format") from None
        if not 0 <= n <= hi:
            raise InputError(f"query parameter '{name}' must be between 0 and {hi}", code="bad_format")
        return n

    async def op_decisions(request, body, actor):
        if log is None:
            raise InputError("decision logging is off (--no-log)", code="log_disabled", status=409)
        qp = request.query_params
        limit = _int_param(request, "limit", 100, 100_000)
        if writer is not None:
            await writer.aflush(10.0)

        client = qp.get("client")
        if client is not None:
            try:
                client = normalise_client_id(client)
            except InvalidClientId as exc:
                raise InputError(f"query parameter 'client': {exc} (expected {RULE})", code="bad_format") from None

        def q():
            from aiir.errors import BadInput
            try:
                rows = log.query(since=qp.get("since"), until=qp.get("until"), version=qp.get("version"),
                                 client=client, limit=limit, newest_first=True)
            except BadInput as exc:
                raise InputError(str(exc), code="bad_format") from None
            rows.reverse()
            return rows
        return {"decisions": await run_in_threadpool(q), "head": await run_in_threadpool(log.head)}

    async def op_audit(request, body, actor):
        limit = _int_param(request, "limit", None, 1_000_000)
        return {"entries": await run_in_threadpool(ctl.store.read_audit, limit)}

    async def op_flush(request, body, actor):
        ok = True
        if writer is not None:
            ok = await writer.aflush(10.0)
        return {"flushed": ok, "head": (await run_in_threadpool(log.head)) if log else None}

    routes = [
        Route("/ping", ping, methods=["GET"]),
        Route("/health", ping, methods=["GET"]),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/admin/state", admin(op_state), methods=["GET"]),
        Route("/admin/isolate", admin(op_isolate), methods=["POST"]),
        Route("/admin/block", admin(op_block), methods=["POST"]),
        Route("/admin/restore", admin(op_restore), methods=["POST"]),
        Route("/admin/rollback", admin(op_rollback), methods=["POST"]),
        Route("/admin/canary", admin(op_canary), methods=["POST"]),
        Route("/admin/decisions", admin(op_decisions), methods=["GET"]),
        Route("/admin/audit", admin(op_audit), methods=["GET"]),
        Route("/admin/flush", admin(op_flush), methods=["POST"]),
        Route("/admin/guard", admin(op_guard), methods=["GET"]),
    ]

    async def not_found(request, exc):
        return jresp({"error": "not_found", "message": f"no route {request.method} {request.url.path}"}, 404)

    async def not_allowed(request, exc):
        return jresp({"error": "method_not_allowed", "message": f"{request.method} is not allowed on "
                      f"{request.url.path}"}, 405)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if background is not None:  # trips in force are made durable before the process goes
            background.shutdown(wait=True)
        # graceful shutdown (SIGTERM/SIGINT): every decision handed to the writer is committed before
        # the process goes — uvicorn re-raises the signal after this, so it cannot wait for later
        if writer is not None:
            writer.close()

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed}, lifespan=lifespan)


def _one_native_thread() -> None:
    """Native thread pools (OpenMP, BLAS) of the loaded model libraries limited to one thread for the server's
    life. A request scores one to a few hundred rows; a HistGradientBoosting pipeline (the demo's fraud model)
    starting its OpenMP team on every call answered a single row in ~107 ms instead of ~10 ms on 2 cores shared
    with other work, and the gateway's concurrency comes from serving requests side by side anyway. Called once
    the serving versions are loaded (threadpoolctl limits the libraries loaded at that point)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        return
    threadpool_limits(1)


def _freeze_startup_heap() -> None:
    """What the server has loaded before it serves (libraries, the serving versions, the guard's profile: ~10^5-10^6
    objects that live as long as the process) moved out of the cyclic collector's generations (``gc.freeze``),
    after one collection so that no garbage is kept. A full collection then traverses only what serving created,
    not the whole startup heap (over the gateway's libraries alone ~120 ms on this 2-core machine: a stall of the
    event loop, so of every request in flight; docs/gateway.md). Versions loaded
    later (a canary, a promotion) are collected as before; a version loaded at startup and retired later is freed
    by reference counting, and only the cycles in it stay (once per process: the startup heap is frozen once)."""
    gc.collect()
    gc.freeze()


def gc_state() -> dict[str, Any]:
    """The cyclic collector as the server runs it: on, objects frozen at startup, collections per generation."""
    return {"enabled": gc.isenabled(), "frozen_at_start": gc.get_freeze_count(),
            "collections": [s["collections"] for s in gc.get_stats()]}


def native_threads() -> dict[str, int]:
    """Threads of each native pool loaded in this process (``openmp``, ``openblas``, ...): 1 in a server."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return {}
    out: dict[str, int] = {}
    for lib in threadpool_info():
        out[lib.get("internal_api", "?")] = max(out.get(lib.get("internal_api", "?"), 0), int(lib["num_threads"]))
    return out


def run_server(*, model: str, alias: str = "champion", fallback_alias: str | None = "last-known-good",
               host: str = "127.0.0.1", port: int = 8080, state_dir: str | Path | None = None,
               tracking_uri: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY,
               max_rows: int = 10_000, log_decisions: bool = True, log_writer: str = "process",
               durable: bool = False, require_api_key: bool = False, guard: bool = False,
               guard_reference: str | Path | None = None, guard_thresholds: str | Path | None = None,
               playbook_url: str | None = None, encrypt_fields: list[str] | None = None) -> None:
    """Start the gateway and block until SIGINT/SIGTERM; flushes the decision log on the way out.

    ``encrypt_fields``: features stored AES-GCM encrypted in the decision log (``["*"]`` for all); the key
    comes from ``AIIR_DECISION_LOG_KEY`` / ``AIIR_DECISION_LOG_KEY_FILE`` (see aiir.audit.fieldcrypt)."""
    import uvicorn

    from aiir import config
    from aiir.cli._util import progress
    from aiir.gateway import DECISIONS_FILE
    from aiir.gateway.models import ModelStore
    from aiir.gateway.state import StateStore

    p = config.paths()
    sdir = Path(state_dir) if state_dir else p.gateway / model
    uri = tracking_uri or p.mlflow_tracking_uri
    store = StateStore(sdir)
    token = store.token()
    progress(f"loading model '{model}' from {uri}")
    models = ModelStore(model, uri, max_rows=max_rows)
    ctl = Controller(model, models, store, alias=alias, fallback_alias=fallback_alias)
    try:
        st = ctl.start()
    except ControlError as exc:  # e.g. the serving version's artifact fails its digest check
        from aiir.errors import IntegrityError

        if exc.code == "integrity_failed":
            raise IntegrityError(exc.message) from None
        from aiir.errors import TargetError

        raise TargetError(f"gateway for '{model}' cannot start: {exc.message}") from None
    for w in ctl.warnings:
        progress(f"warning: {w}")
    _one_native_thread()
    log = writer = encryptor = None
    if encrypt_fields:
        from aiir.audit.fieldcrypt import FieldEncryptor, load_key

        key = load_key(required=True)
        encryptor = FieldEncryptor(key, encrypt_fields)
        progress(f"decision log: features {', '.join(encryptor.fields)} stored encrypted (key id {encryptor.kid})")
    if log_decisions:
        log = DecisionLog(sdir / DECISIONS_FILE)
        if log_writer == "process":
            from aiir.gateway.log_writer import ProcessDecisionWriter

            writer = ProcessDecisionWriter(log.path, durable=durable,
                                           encryptor_env=encryptor.env(key) if encryptor else None)
        else:
            if durable:
                from aiir.errors import BadInput

                raise BadInput("--durable", "needs the process log writer (--log-writer process)")
            writer = DecisionWriter(log, encryptor=encryptor)
    else:
        progress("warning: decision logging is OFF (--no-log); decisions are not recorded")
    identity = Identity(sdir, require_key=require_api_key)
    if identity.key_mode:
        progress(f"client identity: API keys ({identity.describe()['keys_active']} active, {identity.keys.path})")
    else:
        progress("client identity: X-Client-Id header (TRUSTING: callers choose their own id; issue keys with "
                 "`aiir gateway keys issue` or start with --require-api-key)")
    the_guard = trigger = None
    if guard:
        from aiir.evasion.guard import guard_from_options
        from aiir.evasion.trigger import PlaybookTrigger

        lv = ctl.routing.serving
        positive = lv.classes[1] if lv.classes and len(lv.classes) == 2 else 1
        the_guard = guard_from_options(reference=str(guard_reference) if guard_reference else None,
                                       thresholds=str(guard_thresholds) if guard_thresholds else None,
                                       positive_class=positive, columns=lv.schema.columns)
        trigger = PlaybookTrigger.from_env(playbook_url)
        g = the_guard.describe()
        progress(f"inline evasion guard on: action {g['action']}, scaling from {g['scaling']}, outlier model "
                 f"{'on' if g['outlier_model'] else 'off (no --guard-reference)'}; playbook trigger "
                 + (f"{trigger.url} ({trigger.dag_id})" if trigger else "off (no --playbook-url / AIIR_AIRFLOW_URL)"))
        if not identity.key_mode:
            progress("warning: the guard runs on self-declared client ids (header mode): an attacker can "
                     "rotate ids; use API keys")
    app = create_app(ctl, token=token, log=log, writer=writer, max_body_bytes=max_body_bytes,
                     durable=durable and writer is not None, identity=identity, guard=the_guard,
                     trigger=trigger, target_name=model)
    progress(f"serving '{model}' v{ctl.routing.serving.version} ({st.mode}) on http://{host}:{port} — "
             f"state {sdir}, admin token in {store.token_path}")
    cfg = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                         timeout_graceful_shutdown=5, server_header=False)
    server = uvicorn.Server(cfg)
    # uvicorn handles SIGINT/SIGTERM (graceful shutdown, log writer closed in the lifespan), then re-raises
    # the signal to the handler that was installed before it: make that a no-op so we end normally (exit 0)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    _freeze_startup_heap()
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits 3 when it cannot bind; aiir's exit 3 means "incident"
        if server.started:
            raise
        from aiir.errors import TargetError

        raise TargetError(f"gateway could not listen on {host}:{port} (uvicorn exit {exc.code}: address in "
                          "use or not allowed — see the line above)") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if writer is not None:
            writer.close()
            progress(f"decision log flushed: {writer.written} rows written"
                     + (f", {writer.rejected} rejected" if writer.rejected else ""))
        if log is not None:
            log.close()
