"""A local AWS API for the demo, the tests and the benchmarks: moto's server with SageMaker's gaps filled.

``python -m aiir.awssim --port 5055`` runs moto's own WSGI application (``moto.server``: real HTTP on
127.0.0.1, every AWS service moto implements, S3 Object Lock included) in a process of its own, after
extending moto 5.2.5 where a SageMaker incident responder would otherwise be testing against nothing:

* **UpdateEndpoint** — moto has none. Registered here with AWS's semantics: the endpoint must be
  ``InService`` (else ``ValidationException``), the config must exist; the endpoint reports ``Updating``
  for ``--settle`` seconds, then the new config's variants and Data Capture settings, ``InService``.
* **UpdateEndpointWeightsAndCapacities** — moto applies it at once; here it goes through ``Updating`` for
  the same delay, so callers really exercise the settling path. As in moto (and AWS), a variant whose
  ``DesiredInstanceCount`` is omitted loses its capacity setting — callers must send weights *and*
  capacities.
* **Silent rollback** (``POST /_aiir/rollback``): the next update of that kind goes ``Updating`` and then
  back to ``InService`` on the *previous* config/weights with a ``FailureReason`` — what SageMaker does when an
  update fails or a deployment guardrail rolls it back. Callers must re-read to notice.
* **InvokeEndpoint** — moto answers canned bodies. Here it picks a variant by current weight (or the
  ``X-Amzn-SageMaker-Target-Variant`` header), forwards the body to the real model server registered for
  that variant's model (``POST /_aiir/model-servers {"<ModelName>": "http://127.0.0.1:8080"}``, ``"*"`` for any
  other model; e.g.
  ``aiir serve``) and, when the endpoint's config enables Data Capture, writes SageMaker Data Capture JSON
  lines to its ``DestinationS3Uri`` in SageMaker's key layout
  (``<prefix>/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl``), honouring the sampling percentage.
* **AddTags** replaces the value of an existing key (moto appends a duplicate; AWS replaces).
* **S3 checksums and COMPLIANCE retention** — moto stores whatever ``x-amz-checksum-sha256`` a client sends
  and lets COMPLIANCE retention be changed; here a PUT whose checksum does not match its body is refused
  (``BadDigest``) and COMPLIANCE retention cannot be weakened or shortened before it ends, as on S3.
* **Fault injection** (``POST /_aiir/faults {"action": "UpdateEndpoint", "code": "ThrottlingException",
  "status": 400, "count": 3}``): the next ``count`` calls of that SageMaker action answer that error, so
  client retries (botocore's standard/adaptive modes) are tested against real HTTP answers.
* **IAM resources** — with authorisation on (moto's ``INITIAL_NO_AUTH_ACTION_COUNT`` / ``/moto-api/reset-auth``)
  moto checks SageMaker calls against resource ``*``; here against the endpoint / config / model / package ARN
  the call names, as IAM does, so a least-privilege policy scoped to those ARNs is really tested.
* ``GET /_aiir/calls`` lists every SageMaker action the server answered (with the status), ``POST
  /_aiir/settle {"seconds": s}`` changes the delay, ``POST /_aiir/capture/flush`` writes buffered capture.

:class:`AwsSim` starts and stops it as a real process (by its process id). This module imports moto only
in the server process (and inside functions), never in aiir's core paths.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ACCOUNT_ID = "123456789012"
SETTLE_S = 1.0
CONTROL = "/_aiir/"


class _Sim:
    """State the extensions share inside the server process."""

    def __init__(self, settle_s: float = SETTLE_S):
        self.settle_s = settle_s
        self.lock = threading.RLock()
        self.faults: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.rollbacks: dict[str, int] = defaultdict(int)
        self.model_servers: dict[str, str] = {}
        self.calls: list[dict[str, Any]] = []
        self.capture: dict[tuple[str, str, str], list[bytes]] = defaultdict(list)
        self.capture_dest: dict[tuple[str, str, str], tuple[str, str, str]] = {}
        self.capture_first: dict[tuple[str, str, str], float] = {}

    def take_fault(self, action: str) -> dict[str, Any] | None:
        with self.lock:
            queue = self.faults.get(action) or self.faults.get("*")
            if not queue:
                return None
            fault = queue[0]
            fault["count"] -= 1
            if fault["count"] <= 0:
                queue.pop(0)
            return fault

    def take_rollback(self, action: str) -> bool:
        with self.lock:
            if self.rollbacks.get(action, 0) > 0:
                self.rollbacks[action] -= 1
                return True
            return False


SIM = _Sim()


# --------------------------------------------------------------------------------------------- moto patches
def _validation(message: str):
    from moto.sagemaker.exceptions import ValidationError

    return ValidationError(message=message)


def _endpoint(backend, name: str):
    ep = backend.endpoints.get(name)
    if ep is None:
        arn = f"arn:aws:sagemaker:{backend.region_name}:{backend.account_id}:endpoint/{name}"
        raise _validation(f'Could not find endpoint "{arn}".')
    return ep


def _settle_later(ep, apply, *, rollback: bool, what: str) -> None:
    from moto.core.utils import utcnow

    def finish() -> None:
        with SIM.lock:
            if rollback:
                ep.failure_reason = (f"{what} failed and was rolled back to the previous configuration "
                                     "(simulated by aiir.awssim)")
            else:
                apply()
                ep.failure_reason = None
            ep.endpoint_status = "InService"
            ep.last_modified_time = utcnow()

    t = threading.Timer(SIM.settle_s, finish)
    t.daemon = True
    t.start()


def update_endpoint(backend, name: str, config_name: str) -> str:
    from moto.core.utils import utcnow

    with SIM.lock:
        ep = _endpoint(backend, name)
        if ep.endpoint_status != "InService":
            raise _validation(f"Cannot update in-progress endpoint \"{ep.arn}\".")
        cfg = backend.describe_endpoint_config(config_name)
        variants = copy.deepcopy(cfg["ProductionVariants"])
        capture = copy.deepcopy(cfg.get("DataCaptureConfig"))
        ep.endpoint_status = "Updating"
        ep.last_modified_time = utcnow()

        def apply() -> None:
            ep.endpoint_config_name = config_name
            ep.production_variants = ep._process_production_variants(variants)
            ep.data_capture_config = capture

        _settle_later(ep, apply, rollback=SIM.take_rollback("UpdateEndpoint"), what="UpdateEndpoint")
        return ep.arn


def update_weights(backend, name: str, desired: list[dict[str, Any]]) -> str:
    from moto.core.utils import utcnow

    with SIM.lock:
        ep = _endpoint(backend, name)
        if ep.endpoint_status != "InService":
            raise _validation(f"Cannot update in-progress endpoint \"{ep.arn}\".")
        seen: list[str] = []
        for d in desired or []:
            vname = d.get("VariantName")
            if vname in seen:
                raise _validation(f'The variant name "{vname}" was non-unique within the request.')
            if not any(v["VariantName"] == vname for v in ep.production_variants):
                raise _validation(f'The variant name(s) "{vname}" is/are not present within endpoint '
                                  f'configuration "{ep.endpoint_config_name}".')
            seen.append(vname)
        desired = copy.deepcopy(desired)
        ep.endpoint_status = "Updating"
        ep.last_modified_time = utcnow()

        def apply() -> None:
            for d in desired:
                for v in ep.production_variants:
                    if v["VariantName"] == d["VariantName"]:
                        v["DesiredWeight"] = v["CurrentWeight"] = d.get("DesiredWeight")
                        v["DesiredInstanceCount"] = v["CurrentInstanceCount"] = d.get("DesiredInstanceCount")

        _settle_later(ep, apply, rollback=SIM.take_rollback("UpdateEndpointWeightsAndCapacities"),
                      what="UpdateEndpointWeightsAndCapacities")
        return ep.arn


def _patch_sagemaker() -> None:
    from moto.core.responses import ActionResult
    from moto.sagemaker import models as sm_models
    from moto.sagemaker.responses import SageMakerResponse

    def _update_endpoint(self) -> ActionResult:
        arn = update_endpoint(self.sagemaker_backend, self._get_param("EndpointName"),
                              self._get_param("EndpointConfigName"))
        return ActionResult({"EndpointArn": arn})

    def _update_weights(self) -> ActionResult:
        arn = update_weights(self.sagemaker_backend, self._get_param("EndpointName"),
                             self._get_param("DesiredWeightsAndCapacities"))
        return ActionResult({"EndpointArn": arn})

    def _determine_resource(self) -> str:
        """The resource ARN IAM authorises a SageMaker call against (moto uses ``*`` for every call, so a
        policy scoped to ``endpoint/*`` could not be tested). List calls stay ``*``, as in IAM."""
        if self._get_action().startswith("List") and self._get_action() != "ListTags":
            return "*"
        if self._get_param("ResourceArn"):
            return self._get_param("ResourceArn")
        base = f"arn:aws:sagemaker:{self.region}:{self.current_account}"
        for param, kind in (("EndpointName", "endpoint"), ("EndpointConfigName", "endpoint-config"),
                            ("ModelName", "model"), ("ModelPackageName", "model-package"),
                            ("ModelPackageGroupName", "model-package-group")):
            value = self._get_param(param)
            if value:
                return value if str(value).startswith("arn:") else f"{base}:{kind}/{str(value).lower()}"
        return "*"

    SageMakerResponse._determine_resource = _determine_resource
    SageMakerResponse.update_endpoint = _update_endpoint
    SageMakerResponse.update_endpoint_weights_and_capacities = _update_weights

    def add_tags(self, arn: str, tags: list[dict[str, str]]) -> list[dict[str, str]]:
        resource = self._get_resource_from_arn(arn)
        new = {t["Key"]: t["Value"] for t in tags}
        resource.tags = [t for t in resource.tags if t["Key"] not in new] + [dict(t) for t in tags]
        return resource.tags

    sm_models.SageMakerModelBackend.add_tags = add_tags


def _patch_s3() -> None:
    """S3 semantics moto skips: a PUT whose ``x-amz-checksum-sha256`` does not match the body is refused
    (``BadDigest``), and COMPLIANCE retention cannot be weakened or shortened before it ends."""
    import base64
    import hashlib

    from moto.s3 import models as s3_models
    from moto.s3.exceptions import AccessDeniedByLock, S3ClientError

    original_put = s3_models.S3Backend.put_object
    original_retention = s3_models.S3Backend.put_object_retention

    def put_object(self, bucket_name, key_name, value, *args, **kwargs):
        given = kwargs.get("checksum_value")
        if isinstance(given, bytes):
            given = given.decode()
        if given and len(given) == 44:  # base64 of 32 bytes: a SHA-256
            actual = base64.b64encode(hashlib.sha256(value or b"").digest()).decode()
            if given != actual:
                raise S3ClientError("BadDigest", "The SHA256 you specified did not match the calculated checksum.")
        return original_put(self, bucket_name, key_name, value, *args, **kwargs)

    def _when(text):
        if not text:
            return None
        try:
            return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError:
            return None

    def put_object_retention(self, bucket_name, key_name, version_id, retention):
        key = self.get_object(bucket_name, key_name, version_id=version_id)
        old_until, new_until = _when(key.lock_until), _when(retention[1])
        if key.lock_mode == "COMPLIANCE" and old_until is not None and old_until > datetime.now(UTC):
            if retention[0] != "COMPLIANCE" or new_until is None or new_until < old_until:
                raise AccessDeniedByLock()
        return original_retention(self, bucket_name, key_name, version_id, retention)

    s3_models.S3Backend.put_object = put_object
    s3_models.S3Backend.put_object_retention = put_object_retention


def _patch_runtime() -> None:
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    def _invoke(self):
        return invoke_endpoint(self)

    SageMakerRuntimeResponse.invoke_endpoint = _invoke


def _error(status: int, code: str, message: str, extra_headers: dict[str, str] | None = None):
    headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}
    headers.update(extra_headers or {})
    return status, headers, json.dumps({"__type": code, "message": message, "Message": message})


def invoke_endpoint(resp) -> tuple[int, dict[str, str], bytes | str]:
    """InvokeEndpoint: variant by weight → the model server registered for its model → Data Capture."""
    from moto.sagemaker.models import sagemaker_backends

    name = resp.path.split("/")[2]
    backend = sagemaker_backends[resp.current_account][resp.region]
    ep = backend.endpoints.get(name)
    if ep is None:
        return _error(400, "ValidationError", f"Endpoint {name} of account {resp.current_account} not found.")
    if ep.endpoint_status not in ("InService", "Updating"):
        return _error(400, "ValidationError", f"Endpoint {name} is {ep.endpoint_status}, not InService.")
    cfg = backend.endpoint_configs[ep.endpoint_config_name]
    models = {v["VariantName"]: v["ModelName"] for v in cfg.production_variants}
    variants = [v for v in ep.production_variants if v["VariantName"] in models]
    wanted = resp.headers.get("X-Amzn-SageMaker-Target-Variant")
    if wanted:
        pick = next((v for v in variants if v["VariantName"] == wanted), None)
        if pick is None:
            return _error(400, "ValidationError", f"Variant {wanted} not found on endpoint {name}.")
    else:
        weights = [float(v.get("CurrentWeight") or 0) for v in variants]
        if not variants or sum(weights) <= 0:
            return _error(400, "ValidationError", f"Endpoint {name} has no variant with a positive weight.")
        pick = random.choices(variants, weights=weights)[0]
    variant = pick["VariantName"]
    model_name = models[variant]
    url = SIM.model_servers.get(model_name) or SIM.model_servers.get("*")  # "*": any other model
    if not url:
        return _error(424, "ModelError", f"no model server is registered for model {model_name} "
                                         f"(POST {CONTROL}model-servers)")
    body = resp.raw_body if isinstance(resp.raw_body, bytes) else (resp.raw_body or "").encode()
    ctype = resp.headers.get("Content-Type") or "application/json"
    accept = resp.headers.get("Accept") or "application/json"
    inference_id = resp.headers.get("X-Amzn-SageMaker-Inference-Id")
    fwd = {"Content-Type": ctype, "Accept": accept}
    if inference_id:
        fwd["X-Request-Id"] = inference_id
    custom = resp.headers.get("X-Amzn-SageMaker-Custom-Attributes")
    client = _client_from_attributes(custom)
    if client:
        fwd["X-Client-Id"] = client
    req = urllib.request.Request(url.rstrip("/") + "/invocations", data=body, headers=fwd, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            out, out_type, status = r.read(), r.headers.get("Content-Type") or "application/json", r.status
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        return _error(424, "ModelError", f"Received client error ({exc.code}) from primary with message "
                                         f"\"{detail}\"", {"x-Amzn-Invoked-Production-Variant": variant})
    except OSError as exc:
        return _error(424, "ModelError", f"model server for {model_name} at {url} did not answer ({exc})",
                      {"x-Amzn-Invoked-Production-Variant": variant})
    _capture(backend, ep, variant, body, ctype, out, out_type, inference_id)
    headers = {"Content-Type": out_type, "x-Amzn-Invoked-Production-Variant": variant}
    if custom:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = custom
    return status, headers, out


def _client_from_attributes(custom: str | None) -> str | None:
    """``client_id=<id>`` in the custom attributes (a convention the gateway's decision log understands)."""
    for part in (custom or "").split(","):
        k, _, v = part.strip().partition("=")
        if k in ("client_id", "client") and v:
            return v[:128]
    return None


def _encoding(ctype: str) -> str:
    c = ctype.lower()
    return "CSV" if "csv" in c else "JSON" if "json" in c else "BASE64"


def _part(data: bytes, ctype: str, mode: str) -> dict[str, Any]:
    import base64

    enc = _encoding(ctype)
    try:
        text = data.decode("utf-8") if enc != "BASE64" else base64.b64encode(data).decode()
    except UnicodeDecodeError:
        enc, text = "BASE64", base64.b64encode(data).decode()
    return {"observedContentType": ctype, "mode": mode, "data": text, "encoding": enc}


def _capture(backend, ep, variant: str, body: bytes, ctype: str, out: bytes, out_type: str,
             inference_id: str | None) -> None:
    dc = ep.data_capture_config or {}
    if not dc or not dc.get("EnableCapture", True) or not dc.get("DestinationS3Uri"):
        return
    pct = float(dc.get("InitialSamplingPercentage", 100))
    if pct < 100 and random.uniform(0, 100) >= pct:
        return
    opts = {o.get("CaptureMode") for o in dc.get("CaptureOptions") or [{"CaptureMode": "Input"},
                                                                        {"CaptureMode": "Output"}]}
    now = datetime.now(UTC)
    meta: dict[str, Any] = {"eventId": str(uuid.uuid4()),
                            "inferenceTime": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"}
    if inference_id:
        meta["inferenceId"] = inference_id
    cap: dict[str, Any] = {}
    if "Input" in opts or "InputAndOutput" in opts:
        cap["endpointInput"] = _part(body, ctype, "INPUT")
    if "Output" in opts or "InputAndOutput" in opts:
        cap["endpointOutput"] = _part(out, out_type, "OUTPUT")
    if "endpointInput" not in cap:
        return
    line = json.dumps({"captureData": cap, "eventMetadata": meta, "eventVersion": "0"},
                      separators=(",", ":")).encode() + b"\n"
    uri = dc["DestinationS3Uri"]
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    hour = now.strftime("%Y/%m/%d/%H")
    key = (ep.endpoint_name, variant, hour)
    with SIM.lock:
        SIM.capture[key].append(line)
        SIM.capture_dest[key] = (bucket, prefix.strip("/"), backend.account_id)
        SIM.capture_first.setdefault(key, time.monotonic())
        if len(SIM.capture[key]) >= 50:
            _flush_one(key)


def _flush_one(key: tuple[str, str, str]) -> None:
    from moto.s3.models import s3_backends

    lines = SIM.capture.pop(key, [])
    SIM.capture_first.pop(key, None)
    if not lines:
        return
    bucket, prefix, account = SIM.capture_dest[key]
    endpoint, variant, hour = key
    now = datetime.now(UTC)
    name = f"{now:%M-%S}-{now.microsecond // 1000:03d}-{uuid.uuid4().hex[:8]}.jsonl"
    s3_key = "/".join(p for p in (prefix, endpoint, variant, hour, name) if p)
    try:
        s3_backends[account]["aws"].put_object(bucket, s3_key, b"".join(lines))
    except Exception as exc:  # a missing bucket loses capture, as on AWS; say so in the server log
        print(f"awssim: data capture to s3://{bucket}/{s3_key} failed: {exc}", file=sys.stderr, flush=True)


def flush_capture(max_age: float | None = None) -> int:
    with SIM.lock:
        keys = [k for k, t in SIM.capture_first.items() if max_age is None or time.monotonic() - t >= max_age]
        for k in keys:
            _flush_one(k)
        return len(keys)


def _flusher() -> None:
    while True:
        time.sleep(0.5)
        try:
            flush_capture(max_age=1.0)
        except Exception as exc:  # keep flushing whatever one write did
            print(f"awssim: capture flush failed: {exc}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- WSGI wrapper
class SimApp:
    """moto's dispatcher behind a thin layer: control routes, fault injection, the call log."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL):
            return self._control(environ, start_response, path[len(CONTROL):])
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        action = target.split(".", 1)[1] if target.startswith("SageMaker.") else None
        if action is None and path.startswith("/endpoints/") and path.endswith("/invocations"):
            action = "InvokeEndpoint"
        if action is None:
            return self.inner(environ, start_response)
        fault = SIM.take_fault(action)
        if fault is not None:
            _drain(environ)
            status, headers, body = _error(int(fault["status"]), fault["code"], fault["message"])
            SIM.calls.append({"action": action, "status": status, "injected": True})
            start_response(f"{status} {_reason(status)}", list(headers.items()))
            return [body.encode()]
        seen: dict[str, Any] = {}

        def recording_start(status, headers, exc_info=None):
            seen["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        out = self.inner(environ, recording_start)
        SIM.calls.append({"action": action, "status": seen.get("status"), "injected": False})
        return out

    def _control(self, environ, start_response, route: str):
        method = environ.get("REQUEST_METHOD", "GET")
        body = _drain(environ)
        try:
            data = json.loads(body) if body else {}
        except json.JSONDecodeError:
            return _json(start_response, 400, {"error": "body is not JSON"})
        if route == "health":
            return _json(start_response, 200, {"ok": True, "settle_s": SIM.settle_s})
        if route == "faults" and method == "POST":
            fault = {"code": data.get("code", "ThrottlingException"), "status": int(data.get("status", 400)),
                     "count": int(data.get("count", 1)),
                     "message": data.get("message") or ("Rate exceeded" if int(data.get("status", 400)) < 500
                                                         else "We encountered an internal error")
                     + " (injected by aiir.awssim)"}
            with SIM.lock:
                SIM.faults[data.get("action", "*")].append(fault)
            return _json(start_response, 200, {"armed": fault})
        if route == "faults" and method == "DELETE":
            with SIM.lock:
                SIM.faults.clear()
                SIM.rollbacks.clear()
            return _json(start_response, 200, {"cleared": True})
        if route == "rollback" and method == "POST":
            with SIM.lock:
                SIM.rollbacks[data.get("action", "UpdateEndpoint")] += int(data.get("count", 1))
            return _json(start_response, 200, {"armed": dict(SIM.rollbacks)})
        if route == "settle" and method == "POST":
            SIM.settle_s = float(data["seconds"])
            return _json(start_response, 200, {"settle_s": SIM.settle_s})
        if route == "model-servers" and method == "POST":
            with SIM.lock:
                SIM.model_servers.update({str(k): str(v) for k, v in data.items()})
            return _json(start_response, 200, {"model_servers": SIM.model_servers})
        if route == "capture/flush" and method == "POST":
            return _json(start_response, 200, {"flushed": flush_capture()})
        if route == "calls":
            if method == "DELETE":
                SIM.calls.clear()
            return _json(start_response, 200, {"calls": list(SIM.calls)})
        return _json(start_response, 404, {"error": f"no control route {method} {CONTROL}{route}"})


def _drain(environ) -> bytes:
    try:
        n = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        n = 0
    return environ["wsgi.input"].read(n) if n > 0 else b""


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _json(start_response, status: int, obj: Any):
    body = json.dumps(obj).encode()
    start_response(f"{status} {_reason(status)}", [("Content-Type", "application/json"),
                                                  ("Content-Length", str(len(body)))])
    return [body]


def serve(host: str = "127.0.0.1", port: int = 5055, settle_s: float = SETTLE_S) -> None:
    import logging

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(port))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per request
    SIM.settle_s = settle_s
    _patch_sagemaker()
    _patch_s3()
    _patch_runtime()
    threading.Thread(target=_flusher, name="awssim-capture", daemon=True).start()
    app = SimApp(DomainDispatcherApplication(create_backend_app))
    print(f"awssim: moto server with SageMaker extensions on http://{host}:{port} (settle {settle_s:g}s)",
          flush=True)
    run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)


# --------------------------------------------------------------------------------------------- the process
class AwsSim:
    """The extended moto server as a real process on 127.0.0.1, stopped by its process id."""

    def __init__(self, *, port: int | None = None, settle_s: float = SETTLE_S, log: Path | None = None,
                 env: dict[str, str] | None = None):
        from aiir import runtime

        self.port = port or runtime.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settle_s = settle_s
        self.log = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"aiir-awssim-{self.port}.log"
        self.env = {**os.environ, **(env or {})}
        # the server runs the same aiir as this process (a worktree's, not whatever the venv points at)
        here = str(Path(__file__).resolve().parents[1])
        self.env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep)
                                                          if p and p != here])
        self.service = None

    def start(self, timeout: float = 60.0) -> AwsSim:
        from aiir import runtime

        argv = [sys.executable, "-m", "aiir.awssim", "--port", str(self.port), "--settle", str(self.settle_s)]
        self.service = runtime._spawn("awssim", argv, self.env, self.log, self.url)
        runtime.wait_until(lambda: runtime.http_json("GET", f"{self.url}{CONTROL}health", timeout=2),
                           timeout=timeout, interval=0.1, what="the AWS simulator (moto) to answer",
                           service=self.service)
        return self

    @property
    def pid(self) -> int:
        return self.service.pid if self.service else -1

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()

    def __enter__(self) -> AwsSim:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ control
    def control(self, method: str, route: str, body: Any = None) -> Any:
        from aiir import runtime

        return runtime.http_json(method, f"{self.url}{CONTROL}{route}", body)

    def inject(self, action: str, code: str = "ThrottlingException", *, status: int = 400, count: int = 1,
               message: str | None = None) -> None:
        self.control("POST", "faults", {"action": action, "code": code, "status": status, "count": count,
                                        "message": message})

    def clear_faults(self) -> None:
        self.control("DELETE", "faults")

    def arm_silent_rollback(self, action: str = "UpdateEndpoint", count: int = 1) -> None:
        self.control("POST", "rollback", {"action": action, "count": count})

    def set_settle(self, seconds: float) -> None:
        self.control("POST", "settle", {"seconds": seconds})

    def register_model_servers(self, mapping: dict[str, str]) -> None:
        self.control("POST", "model-servers", mapping)

    def flush_capture(self) -> int:
        return self.control("POST", "capture/flush")["flushed"]

    def calls(self, *, clear: bool = False) -> list[dict[str, Any]]:
        return self.control("DELETE" if clear else "GET", "calls")["calls"]

    def require_iam(self, after: int = 0) -> None:
        """From the next request on (after ``after`` more), every call must be signed by a known IAM user
        and allowed by its policies (moto's own authorisation, with the resource ARNs of this launcher)."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=str(after).encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def client_env(self, region: str = "us-east-1") -> dict[str, str]:
        """Environment for boto3 clients and Airflow's aws connection pointing at this server."""
        extra = json.dumps({"region_name": region, "endpoint_url": self.url})
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": region,
                "AWS_ENDPOINT_URL": self.url,
                "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "login": "testing",
                                                        "password": "testing", "extra": json.loads(extra)})}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m aiir.awssim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5055)
    ap.add_argument("--settle", type=float, default=SETTLE_S, help="seconds an endpoint update stays Updating")
    a = ap.parse_args(argv)
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("the simulator listens on loopback only")
    serve(a.host, a.port, a.settle)


if __name__ == "__main__":
    main()
