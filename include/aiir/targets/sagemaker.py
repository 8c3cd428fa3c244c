"""An Amazon SageMaker real-time endpoint as a DeploymentTarget (boto3; no Airflow).

How each operation maps onto SageMaker (docs/targets.md, "SageMaker"):

* **isolate** — 100 % of traffic to the last-known-good variant with ``UpdateEndpointWeightsAndCapacities``
  (weights *and* instance counts are sent: an omitted capacity is reset), when a variant of the endpoint
  serves that version; otherwise a new endpoint config serving only last-known-good and ``UpdateEndpoint``.
  ``quarantine`` switches the endpoint to the configured quarantine endpoint config (SageMaker itself cannot
  refuse requests). What was serving before is kept in the endpoint's tags (``aiir:restore``), so
  ``restore`` works from any process.
* **rollback / canary** — always a *new* endpoint config (configs in use are never edited; the name is a
  digest of its content, so repeating the call reuses it), then ``UpdateEndpoint`` — or ``CreateEndpoint``
  when the endpoint does not exist yet. A canary already on the endpoint only has its weight changed.
* **settling** — every change records what it asked for in the endpoint's tags (``aiir:intent``).
  :meth:`describe` reports ``settled=False`` with ``pending`` while the endpoint is ``Updating``/``Creating``;
  once it is ``InService`` it re-reads ``EndpointConfigName`` and the variant weights and compares them with
  the intent: SageMaker rolls an update back silently when it fails (or a deployment guardrail trips), and
  the endpoint is then ``InService`` on the *old* config. :func:`check_applied` turns that into a
  TargetError naming both. With ``wait=True`` (default) each operation waits and checks itself; the
  deferrable Airflow operators pass ``wait=False`` and check the trigger's event.
* **last-known-good** — the version given, else option ``fallback_version``, else the variant named by
  ``fallback_variant``, else the endpoint tag ``aiir:last-known-good``, else the SageMaker Model Registry
  (newest *Approved* package of ``model_package_group`` that the endpoint was not serving before
  containment), else (``last_known_good="mlflow"``) MLflow's ``last-known-good`` alias.
* **decisions** — the endpoint's Data Capture JSON lines in S3, read as served decisions.
* **snapshot** — endpoint, configs, models, model packages and tags as JSON; model data and Data Capture files.

A version is what a SageMaker model serves: the version of its model package
(``PrimaryContainer.ModelPackageName``), else its ``AIIR_MODEL_VERSION`` environment variable, else its name.
Throttling and 5xx answers are retried by botocore (``retry_mode`` standard/adaptive, ``max_attempts``);
what still fails raises TargetError naming the call, the error and the attempts, and leaves the endpoint as
the last successful call left it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, ClassVar

from aiir.errors import BadInput, TargetError
from aiir.targets.base import DECISION_FIELDS, DeploymentTarget, ServingState, TargetOption, TrafficRoute

TAG_PREFIX = "aiir:"
TAG_MODE = "aiir:mode"
TAG_REASON = "aiir:reason"
TAG_RESTORE = "aiir:restore"
TAG_INTENT = "aiir:intent"
TAG_LKG = "aiir:last-known-good"
TAG_UPDATED = "aiir:updated-at"
_TAG_VALUE_MAX = 256
_TAG_BAD = re.compile(r"[^\w\s.:/=+\-@]", re.UNICODE)
_NAME_BAD = re.compile(r"[^a-zA-Z0-9-]")
SETTLING = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")
#: what the target calls, per service: deploy/aws/iam-policy.json grants exactly these
API_CALLS = {
    "sagemaker": ("DescribeEndpoint", "DescribeEndpointConfig", "DescribeModel", "DescribeModelPackage",
                  "ListModelPackages", "ListTags", "AddTags", "DeleteTags", "CreateEndpointConfig",
                  "CreateEndpoint", "CreateModel", "UpdateEndpoint", "UpdateEndpointWeightsAndCapacities"),
    "s3": ("ListObjectsV2", "GetObject"),
}


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tag_value(text: str) -> str:
    """A tag value AWS accepts: letters, digits, spaces and ``_.:/=+-@``, at most 256 characters."""
    return _TAG_BAD.sub("_", str(text))[:_TAG_VALUE_MAX]


def _encode_routing(config: str, weights: dict[str, float]) -> str:
    return " ".join([config] + [f"{v}={w:g}" for v, w in sorted(weights.items())])


def _decode_routing(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    parts = text.split()
    weights = {}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        try:
            weights[k] = float(v)
        except ValueError:
            return None
    return {"config": parts[0], "weights": weights}


def _norm(weights: dict[str, float]) -> dict[str, float]:
    total = sum(w for w in weights.values() if w and w > 0)
    return {k: round((w or 0) / total, 6) if total > 0 else 0.0 for k, w in weights.items()}


def check_applied(state: ServingState | dict[str, Any]) -> None:
    """Raise TargetError if the settled endpoint is not what the last aiir change asked for (a silent
    rollback by SageMaker, or another hand). Pure: works on a state dict from a trigger event."""
    d = state.to_dict() if isinstance(state, ServingState) else state
    extra = d.get("extra") or {}
    mismatch = extra.get("intent_mismatch")
    if extra.get("endpoint_status") == "Failed":
        raise TargetError(f"{d.get('target')}: the endpoint is Failed ({extra.get('failure_reason') or 'no reason'})")
    if mismatch:
        raise TargetError(
            f"{d.get('target')}: SageMaker did not keep the change — expected endpoint config "
            f"{mismatch['expected']['config']} with weights {mismatch['expected']['weights']}, the endpoint "
            f"reports {mismatch['actual']['config']} with weights {mismatch['actual']['weights']}"
            + (f" (FailureReason: {extra['failure_reason']})" if extra.get("failure_reason") else "")
            + "; it was rolled back or changed by someone else — nothing is contained until this is resolved")


class SageMakerTarget(DeploymentTarget):
    kind: ClassVar[str] = "sagemaker"
    title: ClassVar[str] = "Amazon SageMaker real-time endpoint"
    requires: ClassVar[tuple[str, ...]] = ("boto3",)
    default_conn_id: ClassVar[str | None] = "aws_default"
    # block_clients / rate_limit: SageMaker endpoints have no caller identity to refuse (see block_clients)
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"isolate", "quarantine", "restore", "rollback", "canary", "snapshot", "decisions"})
    options: ClassVar[tuple[TargetOption, ...]] = (
        TargetOption("region", description="AWS region (default: the environment's / profile's)"),
        TargetOption("endpoint_url", description="AWS API endpoint (a VPC endpoint, or a local test server)"),
        TargetOption("profile", description="AWS shared-config profile"),
        TargetOption("role_arn", description="IAM role to assume for every call (STS AssumeRole)"),
        TargetOption("aws_access_key_id", description="access key id (default: boto3's credential chain)"),
        TargetOption("aws_secret_access_key", secret=True, description="secret access key"),
        TargetOption("aws_session_token", secret=True, description="session token"),
        TargetOption("retry_mode", default="standard",
                     description="botocore retry mode for throttling and 5xx: standard or adaptive"),
        TargetOption("max_attempts", type="integer", default=8,
                     description="attempts per call, the first included (botocore total_max_attempts)"),
        TargetOption("model_name", description="the model's name in aiir / MLflow (default: the endpoint name)"),
        TargetOption("fallback_version", description="last-known-good version (overrides every other source)"),
        TargetOption("fallback_variant", description="the production variant that serves last-known-good"),
        TargetOption("quarantine_endpoint_config",
                     description="endpoint config that quarantine switches to (a model that refuses requests)"),
        TargetOption("model_package_group", description="SageMaker Model Registry group of this model"),
        TargetOption("last_known_good", default="auto",
                     description="where last-known-good comes from: auto (tags, Model Registry), mlflow, none"),
        TargetOption("execution_role_arn", description="role for models created from model packages"),
        TargetOption("model_data_url_template",
                     description="for a version no SageMaker model serves yet: create <model>-v<version> from the "
                                 "primary's container with this ModelDataUrl ({model}, {version} filled in), "
                                 "e.g. s3://bucket/models/{model}/{version}/model.tar.gz"),
        TargetOption("keep_fallback_variant", type="boolean", default=True,
                     description="rollback keeps last-known-good as a zero-weight variant, so isolation "
                                 "is a weight shift (seconds), not an endpoint update (minutes)"),
        TargetOption("data_capture_s3_uri",
                     description="configs aiir creates capture requests and responses here (default: as the "
                                 "endpoint's current config does)"),
        TargetOption("feature_columns", description="comma-separated names of CSV inputs in Data Capture"),
        TargetOption("wait", type="boolean", default=True,
                     description="each change waits until InService and re-reads the endpoint"),
        TargetOption("wait_timeout", type="number", default=1800.0, description="seconds to wait for InService"),
        TargetOption("poll", type="number", default=10.0, description="seconds between DescribeEndpoint polls"),
        TargetOption("snapshot_max_bytes", type="integer", default=2 * 1024 ** 3,
                     description="cap on model data + Data Capture bytes a snapshot copies"),
    )

    @classmethod
    def options_from_connection(cls, *, host=None, port=None, schema=None, login=None, password=None,
                                extra=None) -> dict[str, Any]:
        """An Airflow ``aws`` connection: login/password are the access key, extras ``region_name``,
        ``endpoint_url``, ``profile_name``, ``role_arn``, ``aws_session_token``, ``config_kwargs.retries``;
        any of this target's own options may also sit in the extras."""
        extra = dict(extra or {})
        opts = super().options_from_connection(extra=extra)
        for src, dst in (("region_name", "region"), ("profile_name", "profile"), ("endpoint_url", "endpoint_url"),
                         ("role_arn", "role_arn"), ("aws_session_token", "aws_session_token")):
            if extra.get(src):
                opts[dst] = extra[src]
        if isinstance(extra.get("service_config"), dict):  # per-service endpoint, as the amazon provider has it
            url = (extra["service_config"].get("sagemaker") or {}).get("endpoint_url")
            if url:
                opts["endpoint_url"] = url
        retries = (extra.get("config_kwargs") or {}).get("retries") or {}
        if retries.get("mode"):
            opts["retry_mode"] = retries["mode"]
        if retries.get("total_max_attempts"):
            opts["max_attempts"] = int(retries["total_max_attempts"])
        elif retries.get("max_attempts"):  # botocore's key counts retries, not attempts
            opts["max_attempts"] = int(retries["max_attempts"]) + 1
        if login:
            opts["aws_access_key_id"] = login
        if password:
            opts["aws_secret_access_key"] = password
        return opts

    def __init__(self, name: str, *, region: str | None = None, endpoint_url: str | None = None,
                 profile: str | None = None, role_arn: str | None = None, aws_access_key_id: str | None = None,
                 aws_secret_access_key: str | None = None, aws_session_token: str | None = None,
                 retry_mode: str = "standard", max_attempts: int = 8, model_name: str | None = None,
                 fallback_version: str | None = None, fallback_variant: str | None = None,
                 quarantine_endpoint_config: str | None = None, model_package_group: str | None = None,
                 last_known_good: str = "auto", execution_role_arn: str | None = None,
                 model_data_url_template: str | None = None,
                 keep_fallback_variant: bool = True, data_capture_s3_uri: str | None = None,
                 feature_columns: str | list[str] | None = None,
                 wait: bool = True, wait_timeout: float = 1800.0, poll: float = 10.0,
                 snapshot_max_bytes: int = 2 * 1024 ** 3, sagemaker_client: Any = None, s3_client: Any = None):
        super().__init__(name)
        if retry_mode not in ("standard", "adaptive", "legacy"):
            raise BadInput("retry_mode", f"'{retry_mode}': expected standard or adaptive")
        if last_known_good not in ("auto", "mlflow", "none"):
            raise BadInput("last_known_good", f"'{last_known_good}': expected auto, mlflow or none")
        try:
            self.max_attempts = int(max_attempts)
            self.wait_timeout, self.poll = float(wait_timeout), float(poll)
            self.snapshot_max_bytes = int(snapshot_max_bytes)
        except (TypeError, ValueError) as exc:
            raise BadInput("sagemaker target options", f"a number was expected ({exc})") from None
        if self.max_attempts < 1:
            raise BadInput("max_attempts", "must be at least 1")
        self.region, self.endpoint_url, self.profile, self.role_arn = region, endpoint_url, profile, role_arn
        self._keys = (aws_access_key_id, aws_secret_access_key, aws_session_token)
        self.retry_mode = retry_mode
        self.model = model_name or name
        self.fallback_version_opt = str(fallback_version) if fallback_version not in (None, "") else None
        self.fallback_variant = fallback_variant or None
        self.quarantine_endpoint_config = quarantine_endpoint_config or None
        self.model_package_group = model_package_group or None
        self.last_known_good_source = last_known_good
        self.execution_role_arn = execution_role_arn or None
        if model_data_url_template and not str(model_data_url_template).startswith("s3://"):
            raise BadInput("model_data_url_template", f"{model_data_url_template!r}: expected s3://…/{{version}}/…")
        self.model_data_url_template = model_data_url_template or None
        self.keep_fallback_variant = _as_bool(keep_fallback_variant)
        if data_capture_s3_uri and not str(data_capture_s3_uri).startswith("s3://"):
            raise BadInput("data_capture_s3_uri", f"{data_capture_s3_uri!r}: expected s3://bucket/prefix")
        self.data_capture_s3_uri = data_capture_s3_uri or None
        if isinstance(feature_columns, str):
            feature_columns = [c.strip() for c in feature_columns.split(",") if c.strip()]
        self.feature_columns = list(feature_columns) if feature_columns else None
        self.wait = _as_bool(wait)
        self._sm = sagemaker_client
        self._s3 = s3_client
        self.api_calls: list[str] = []  # "service:Operation" of every call made, in order
        for c in (self._sm, self._s3):
            if c is not None:
                self._instrument(c)
        self._configs: dict[str, dict[str, Any]] = {}
        self._models: dict[str, dict[str, Any]] = {}
        self._lkg: tuple[str | None, str] | None = None
        self._written_tags: tuple[str, dict[str, str]] | None = None

    # ------------------------------------------------------------------ clients
    def _instrument(self, client) -> None:
        service = client.meta.service_model.service_name

        def record(model, **_kw):
            self.api_calls.append(f"{service}:{model.name}")

        client.meta.events.register("before-call.*.*", record)

    def _session(self):
        key, secret, token = self._keys
        session = _shared_session(self.profile, self.region, key, secret, token)
        if self.role_arn:
            sts = session.client("sts", endpoint_url=self.endpoint_url, config=self._config_obj())
            try:
                creds = sts.assume_role(RoleArn=self.role_arn, RoleSessionName=f"aiir-{self.name}"[:64])["Credentials"]
            except Exception as exc:
                raise TargetError(f"{self.ref}: cannot assume role {self.role_arn}: {exc}") from None
            import boto3

            session = boto3.session.Session(region_name=session.region_name, aws_access_key_id=creds["AccessKeyId"],
                                            aws_secret_access_key=creds["SecretAccessKey"],
                                            aws_session_token=creds["SessionToken"])
        if not session.region_name:
            raise BadInput("region", "no AWS region: set the target's region option (the aws connection's "
                                     "region_name extra) or AWS_DEFAULT_REGION")
        return session

    def _config_obj(self):
        from botocore.config import Config

        # total_max_attempts counts the first try (botocore's max_attempts would count retries only)
        return Config(retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
                      connect_timeout=5, read_timeout=60, user_agent_extra="aiir")

    def _build(self, service: str):
        client = self._session().client(service, endpoint_url=self.endpoint_url, config=self._config_obj())
        self._instrument(client)
        return client

    @property
    def sm(self):
        if self._sm is None:
            self._sm = self._build("sagemaker")
        return self._sm

    @property
    def s3(self):
        if self._s3 is None:
            self._s3 = self._build("s3")
        return self._s3

    def close(self) -> None:
        for c in (self._sm, self._s3):
            if c is not None and hasattr(c, "close"):
                c.close()

    def _call(self, client, op: str, **params) -> dict[str, Any]:
        """One API call; errors that survive botocore's retries become one clear line."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(client, op)(**params)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code, msg = err.get("Code", "?"), err.get("Message", "")
            if msg.lstrip().startswith("<"):  # an XML error body to a JSON client: take its Code and Message
                code, msg = _xml_field(msg, "Code", code), _xml_field(msg, "Message", "")
            attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
            api = exc.operation_name
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("InvalidClientTokenId", "UnrecognizedClientException", "ExpiredToken",
                        "ExpiredTokenException", "SignatureDoesNotMatch", "InvalidSignatureException"):
                raise TargetError(f"{self.ref}: {api}: AWS did not accept the credentials ({code}: {msg}); check "
                                  "the aws connection's key / role and the region") from None
            if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation") or status == 403:
                raise TargetError(f"{self.ref}: {api} was refused ({code}: {msg}); the calling role needs the "
                                  f"permission (deploy/aws/iam-policy.json lists every call aiir makes)") from None
            raise TargetError(f"{self.ref}: {api} failed after {attempts} attempt(s) ({code}: {msg})") from None
        except BotoCoreError as exc:
            raise TargetError(f"{self.ref}: {op} failed: {exc}") from None

    @staticmethod
    def _not_found(exc: TargetError) -> bool:
        text = str(exc)
        return "Could not find" in text or "not found" in text.lower() or "does not exist" in text

    # ------------------------------------------------------------------ reading
    def _endpoint(self) -> dict[str, Any]:
        try:
            return self._call(self.sm, "describe_endpoint", EndpointName=self.name)
        except TargetError as exc:
            if self._not_found(exc):
                raise BadInput("target_name", f"no SageMaker endpoint named '{self.name}' in "
                                              f"{self.sm.meta.region_name}") from None
            raise

    def _endpoint_or_none(self) -> dict[str, Any] | None:
        try:
            return self._endpoint()
        except BadInput:
            return None

    def _config(self, name: str) -> dict[str, Any]:
        """Endpoint configs are immutable: each is read once per target."""
        if name not in self._configs:
            self._configs[name] = self._call(self.sm, "describe_endpoint_config", EndpointConfigName=name)
        return self._configs[name]

    def _config_or_none(self, name: str) -> dict[str, Any] | None:
        try:
            return self._config(name)
        except TargetError as exc:
            if self._not_found(exc):
                return None
            raise

    def _model(self, name: str) -> dict[str, Any] | None:
        """Models are immutable too."""
        if name not in self._models:
            try:
                self._models[name] = self._call(self.sm, "describe_model", ModelName=name)
            except TargetError as exc:
                if self._not_found(exc):
                    return None
                raise
        return self._models[name]

    def _tags(self, arn: str) -> dict[str, str]:
        out: dict[str, str] = {}
        token = None
        while True:
            kw = {"ResourceArn": arn, **({"NextToken": token} if token else {})}
            page = self._call(self.sm, "list_tags", **kw)
            for t in page.get("Tags", []):
                out[t["Key"]] = t["Value"]
            token = page.get("NextToken")
            if not token:
                return out

    @staticmethod
    def _joined(tags: dict[str, str], key: str) -> str | None:
        if key not in tags:
            return None
        parts, i = [tags[key]], 1
        while f"{key}.{i}" in tags:
            parts.append(tags[f"{key}.{i}"])
            i += 1
        return "".join(parts)

    def version_of_model(self, model_name: str) -> str:
        m = self._model(model_name) or {}
        container = m.get("PrimaryContainer") or (m.get("Containers") or [{}])[0]
        pkg = container.get("ModelPackageName") or ""
        tail = pkg.rsplit("/", 1)[-1] if pkg else ""
        if tail.isdigit():
            return tail
        env = container.get("Environment") or {}
        if env.get("AIIR_MODEL_VERSION"):
            return str(env["AIIR_MODEL_VERSION"])
        return model_name

    def _variants(self, ep: dict[str, Any], cfg: dict[str, Any]) -> list[dict[str, Any]]:
        spec = {v["VariantName"]: v for v in cfg.get("ProductionVariants", [])}
        out = []
        for v in ep.get("ProductionVariants") or cfg.get("ProductionVariants", []):
            s = spec.get(v["VariantName"], {})
            weight = v.get("CurrentWeight", v.get("DesiredWeight", s.get("InitialVariantWeight", 1.0)))
            count = v.get("CurrentInstanceCount", v.get("DesiredInstanceCount", s.get("InitialInstanceCount")))
            model = s.get("ModelName")
            out.append({"variant": v["VariantName"], "model": model,
                        "version": self.version_of_model(model) if model else None,
                        "weight": float(weight if weight is not None else 0.0), "instances": count,
                        "desired_weight": v.get("DesiredWeight"), "desired_instances": v.get("DesiredInstanceCount"),
                        "instance_type": s.get("InstanceType")})
        return out

    def _read(self) -> dict[str, Any]:
        ep = self._endpoint()
        cfg = self._config(ep["EndpointConfigName"])
        cached = self._written_tags
        if ep.get("EndpointStatus") in SETTLING and cached and cached[0] == ep["EndpointArn"]:
            tags = dict(cached[1])  # polling our own change: the tags are the ones just written
        else:
            tags = self._tags(ep["EndpointArn"])
        return {"endpoint": ep, "config": cfg, "tags": tags, "variants": self._variants(ep, cfg)}

    def describe(self) -> ServingState:
        return self._state(self._read())

    def _state(self, r: dict[str, Any]) -> ServingState:
        ep, tags, variants = r["endpoint"], r["tags"], r["variants"]
        status = ep.get("EndpointStatus", "?")
        settled = status not in SETTLING
        weights = {v["variant"]: v["weight"] for v in variants}
        shares = _norm(weights)
        by_version: dict[str, float] = {}
        for v in variants:
            key = str(v["version"])
            by_version[key] = round(by_version.get(key, 0.0) + shares.get(v["variant"], 0.0), 6)
        mode = tags.get(TAG_MODE, "serving")
        if mode not in ("serving", "isolated", "quarantined"):
            mode = "serving"
        intent = _decode_routing(self._joined(tags, TAG_INTENT))
        extra: dict[str, Any] = {
            "endpoint_status": status, "endpoint_config_name": ep.get("EndpointConfigName"),
            "endpoint_arn": ep.get("EndpointArn"), "variants": variants,
            "failure_reason": ep.get("FailureReason"), "intent": intent,
            "restore": _decode_routing(self._joined(tags, TAG_RESTORE)),
            "data_capture": r["config"].get("DataCaptureConfig"),
            "last_modified": str(ep.get("LastModifiedTime", "")),
        }
        if settled and intent is not None:
            actual = {"config": ep.get("EndpointConfigName"), "weights": _norm(weights)}
            expected = {"config": intent["config"], "weights": _norm(intent["weights"])}
            if actual["config"] != expected["config"] or any(
                    abs(actual["weights"].get(k, 0.0) - w) > 1e-6 for k, w in expected["weights"].items()):
                extra["intent_mismatch"] = {"expected": expected, "actual": actual}
        try:
            fallback = self.last_known_good(r)
        except TargetError as exc:
            fallback, extra["last_known_good_problem"] = None, str(exc)
        return ServingState(
            target=self.ref, model=self.model, mode=mode,  # type: ignore[arg-type]
            routes=[TrafficRoute(version=k, share=s) for k, s in by_version.items()],
            fallback_version=fallback, reason=tags.get(TAG_REASON, ""),
            updated_at=tags.get(TAG_UPDATED, ""), extra=extra, settled=settled,
            pending="" if settled else f"endpoint {status}"
            + (f" (config {ep.get('EndpointConfigName')})" if ep.get("EndpointConfigName") else ""))

    # ------------------------------------------------------------------ last-known-good
    def last_known_good(self, r: dict[str, Any] | None = None) -> str | None:
        """The version containment falls back to (see the module docstring for the order)."""
        if self.fallback_version_opt:
            return self.fallback_version_opt
        r = r or self._read()
        if self.fallback_variant:
            for v in r["variants"]:
                if v["variant"] == self.fallback_variant:
                    return str(v["version"])
            raise TargetError(f"{self.ref}: fallback_variant '{self.fallback_variant}' is not a variant of "
                              f"endpoint config {r['endpoint'].get('EndpointConfigName')}")
        if r["tags"].get(TAG_LKG):
            return r["tags"][TAG_LKG]
        if self.last_known_good_source == "none":
            return None
        if self._lkg is not None:
            return self._lkg[0]
        found: str | None = None
        if self.model_package_group:
            found = self._lkg_from_registry(r)
        elif self.last_known_good_source == "mlflow":
            found = self._lkg_from_mlflow()
        self._lkg = (found, "registry" if self.model_package_group else self.last_known_good_source)
        return found

    def _suspects(self, r: dict[str, Any]) -> set[str]:
        """The versions the endpoint served before containment (now, when not contained)."""
        restore = _decode_routing(self._joined(r["tags"], TAG_RESTORE))
        if restore:
            cfg = self._config_or_none(restore["config"]) or {}
            models = {v["VariantName"]: v.get("ModelName") for v in cfg.get("ProductionVariants", [])}
            return {self.version_of_model(models[k]) for k, w in restore["weights"].items()
                    if w > 0 and models.get(k)}
        return {str(v["version"]) for v in r["variants"] if v["weight"] > 0}

    def _approved_packages(self) -> list[dict[str, Any]]:
        out, token = [], None
        while True:
            kw: dict[str, Any] = {"ModelPackageGroupName": self.model_package_group, "ModelApprovalStatus": "Approved",
                                  "SortBy": "CreationTime", "SortOrder": "Descending", "MaxResults": 100}
            if token:
                kw["NextToken"] = token
            page = self._call(self.sm, "list_model_packages", **kw)
            out += page.get("ModelPackageSummaryList", [])
            token = page.get("NextToken")
            if not token:
                return out

    def _lkg_from_registry(self, r: dict[str, Any]) -> str | None:
        suspects = self._suspects(r)
        for p in self._approved_packages():
            v = str(p.get("ModelPackageVersion") or p["ModelPackageArn"].rsplit("/", 1)[-1])
            if v not in suspects:
                return v
        return None

    def _lkg_from_mlflow(self) -> str | None:
        from aiir import registry

        try:
            return str(registry.get_version(self.model, registry.LAST_KNOWN_GOOD).version)
        except BadInput:
            return None

    # ------------------------------------------------------------------ writing
    def _put_tags(self, arn: str, values: dict[str, str | None], current: dict[str, str]) -> None:
        """Set (value) or remove (None) tags; long values are split over ``key``, ``key.1`` …"""
        add: list[dict[str, str]] = []
        remove: list[str] = []
        for key, value in values.items():
            old = [k for k in current if k == key or re.fullmatch(re.escape(key) + r"\.\d+", k)]
            if value is None:
                remove += old
                continue
            chunk = _tag_list({key: value})
            add += chunk
            remove += [k for k in old if k not in {t["Key"] for t in chunk}]
        self._written_tags = None
        if remove:
            self._call(self.sm, "delete_tags", ResourceArn=arn, TagKeys=sorted(set(remove)))
        if add:
            self._call(self.sm, "add_tags", ResourceArn=arn, Tags=add)
        after = {k: v for k, v in current.items() if k not in set(remove)}
        after.update({t["Key"]: t["Value"] for t in add})
        self._written_tags = (arn, after)

    def _revert_tags(self, arn: str, before: dict[str, str], changed: dict[str, str | None]) -> None:
        """The update was refused: put the tags back as they were, so the endpoint reads as it really is."""
        keys = set(changed) | {TAG_INTENT}
        self._put_tags(arn, {k: self._joined(before, k) for k in keys}, self._tags(arn))

    def _ready(self, r: dict[str, Any]) -> dict[str, Any]:
        """SageMaker refuses a change while the endpoint is updating: wait (or, with wait=False, say so)."""
        status = r["endpoint"].get("EndpointStatus")
        if status in SETTLING:
            if not self.wait:
                raise TargetError(f"{self.ref}: endpoint is {status}; SageMaker accepts no change until it is "
                                  "InService (the task's retry will try again)")
            self.wait_settled(timeout=self.wait_timeout, poll=self.poll)
            r = self._read()
        if r["endpoint"].get("EndpointStatus") == "Failed":
            raise TargetError(f"{self.ref}: endpoint is Failed ({r['endpoint'].get('FailureReason')}); "
                              "redeploy it before containment can use it")
        return r

    def _instances(self, v: dict[str, Any]) -> int:
        n = v.get("instances")
        if n is None:
            n = v.get("desired_instances")
        return int(n) if n is not None else 1

    def _shift(self, r: dict[str, Any], weights: dict[str, float], tags: dict[str, str | None]) -> None:
        """UpdateEndpointWeightsAndCapacities with every variant's weight *and* instance count."""
        ep = r["endpoint"]
        desired = [{"VariantName": v["variant"], "DesiredWeight": float(weights.get(v["variant"], 0.0)),
                    "DesiredInstanceCount": self._instances(v)} for v in r["variants"]]
        self._put_tags(ep["EndpointArn"], {**tags, TAG_INTENT: _encode_routing(ep["EndpointConfigName"], weights)},
                       r["tags"])
        try:
            self._call(self.sm, "update_endpoint_weights_and_capacities", EndpointName=self.name,
                       DesiredWeightsAndCapacities=desired)
        except TargetError:
            self._revert_tags(ep["EndpointArn"], r["tags"], tags)
            raise

    def _switch(self, r: dict[str, Any] | None, config: str, tags: dict[str, str | None]) -> None:
        """UpdateEndpoint to ``config`` (CreateEndpoint when there is no endpoint yet)."""
        cfg = self._config(config)
        weights = {v["VariantName"]: float(v.get("InitialVariantWeight", 1.0)) for v in cfg["ProductionVariants"]}
        intent = _encode_routing(config, weights)
        if r is None:
            self._call(self.sm, "create_endpoint", EndpointName=self.name, EndpointConfigName=config,
                       Tags=_tag_list({k: v for k, v in {**tags, TAG_INTENT: intent}.items() if v is not None}))
            return
        arn = r["endpoint"]["EndpointArn"]
        self._put_tags(arn, {**tags, TAG_INTENT: intent}, r["tags"])
        try:
            self._call(self.sm, "update_endpoint", EndpointName=self.name, EndpointConfigName=config)
        except TargetError:
            self._revert_tags(arn, r["tags"], tags)
            raise

    def _finish(self) -> ServingState:
        """With ``wait``: until InService, then re-read and compare with the intent. Else: the state now."""
        if not self.wait:
            return self.describe()
        state = self.wait_settled(timeout=self.wait_timeout, poll=self.poll)
        check_applied(state)
        return state

    def wait_settled(self, *, timeout: float | None = None, poll: float | None = None, progress=None) -> ServingState:
        return super().wait_settled(timeout=self.wait_timeout if timeout is None else timeout,
                                    poll=self.poll if poll is None else poll, progress=progress)

    def _stamp(self, reason: str) -> dict[str, str | None]:
        return {TAG_REASON: _tag_value(reason) if reason else None, TAG_UPDATED: _now()}

    # ------------------------------------------------------------------ configs and models
    def _model_for(self, version: str, r: dict[str, Any] | None) -> str:
        """The SageMaker model serving ``version``: one on the endpoint, one named ``<model>-v<version>``, or
        one created from the approved model package of that version."""
        version = str(version)
        if r is not None:
            for v in r["variants"]:
                if str(v["version"]) == version and v["model"]:
                    return v["model"]
            restore = _decode_routing(self._joined(r["tags"], TAG_RESTORE))
            if restore:
                for sv in (self._config_or_none(restore["config"]) or {}).get("ProductionVariants", []):
                    if self.version_of_model(sv["ModelName"]) == version:
                        return sv["ModelName"]
        name = _NAME_BAD.sub("-", f"{self.model}-v{version}")[:63].strip("-")
        if self._model(name) is not None:
            if self.version_of_model(name) != version:
                raise TargetError(f"{self.ref}: SageMaker model {name} serves version "
                                  f"{self.version_of_model(name)}, not {version}")
            return name
        if self.model_package_group:
            pkg = next((p for p in self._approved_packages()
                        if str(p.get("ModelPackageVersion") or p["ModelPackageArn"].rsplit("/", 1)[-1]) == version),
                       None)
            if pkg is not None:
                role = self.execution_role_arn or self._any_execution_role(r)
                if not role:
                    raise BadInput("execution_role_arn", f"creating a model from package {pkg['ModelPackageArn']} "
                                                         "needs an execution role")
                self._call(self.sm, "create_model", ModelName=name, ExecutionRoleArn=role,
                           PrimaryContainer={"ModelPackageName": pkg["ModelPackageArn"]},
                           Tags=[{"Key": "aiir:model", "Value": _tag_value(self.model)},
                                 {"Key": "aiir:version", "Value": version}])
                self._models.pop(name, None)
                return name
        if self.model_data_url_template and r is not None:
            return self._model_from_template(name, version, r)
        raise BadInput("version", f"no SageMaker model serves version {version} of {self.model}: none on endpoint "
                                  f"{self.name}, no model named {name}"
                       + (f", no approved package {version} in {self.model_package_group}"
                          if self.model_package_group else " (set model_package_group to create it from the "
                                                           "Model Registry)"))

    def _model_from_template(self, name: str, version: str, r: dict[str, Any]) -> str:
        """A new SageMaker model for ``version``: the primary's image, role and environment, the version's
        model data (``model_data_url_template``) — what a deploy pipeline does for each registered version."""
        primary = max(r["variants"], key=lambda v: v["weight"], default=None)
        base = self._model(primary["model"]) if primary and primary.get("model") else None
        container = dict((base or {}).get("PrimaryContainer") or {})
        if not container.get("Image"):
            raise BadInput("model_data_url_template", f"the primary model of {self.name} has no container image to "
                                                      "copy (a model from a package: use model_package_group)")
        container.pop("ModelPackageName", None)
        container["ModelDataUrl"] = self.model_data_url_template.format(model=self.model, version=version)
        container["Environment"] = {**(container.get("Environment") or {}), "AIIR_MODEL_VERSION": version}
        role = self.execution_role_arn or (base or {}).get("ExecutionRoleArn")
        self._call(self.sm, "create_model", ModelName=name, ExecutionRoleArn=role, PrimaryContainer=container,
                   Tags=[{"Key": "aiir:model", "Value": _tag_value(self.model)}, {"Key": "aiir:version", "Value": version}])
        self._models.pop(name, None)
        return name

    def _any_execution_role(self, r: dict[str, Any] | None) -> str | None:
        for v in (r or {}).get("variants", []):
            m = self._model(v["model"]) if v.get("model") else None
            if m and m.get("ExecutionRoleArn"):
                return m["ExecutionRoleArn"]
        return None

    def _ensure_config(self, variants: list[dict[str, Any]], r: dict[str, Any] | None, purpose: str) -> str:
        """A new endpoint config for ``variants``, named by the digest of its content, created once."""
        capture = (r or {}).get("config", {}).get("DataCaptureConfig")
        if not capture and self.data_capture_s3_uri:
            capture = {"EnableCapture": True, "InitialSamplingPercentage": 100,
                       "DestinationS3Uri": self.data_capture_s3_uri,
                       "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                       "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"],
                                                    "JsonContentTypes": ["application/json"]}}
        body: dict[str, Any] = {"ProductionVariants": variants}
        if capture:
            body["DataCaptureConfig"] = capture
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:10]
        name = f"{_NAME_BAD.sub('-', self.name)[:40].strip('-')}-aiir-{purpose}-{digest}"[:63]
        existing = self._config_or_none(name)
        if existing is not None:
            have = [{k: v.get(k) for k in ("VariantName", "ModelName", "InitialVariantWeight")}
                    for v in existing.get("ProductionVariants", [])]
            want = [{k: v.get(k) for k in ("VariantName", "ModelName", "InitialVariantWeight")} for v in variants]
            if have != want:
                raise TargetError(f"{self.ref}: endpoint config {name} exists with other variants ({have}); "
                                  "aiir never edits an endpoint config — delete or rename it")
            return name
        self._call(self.sm, "create_endpoint_config", EndpointConfigName=name, **body,
                   Tags=[{"Key": "aiir:created-for", "Value": _tag_value(f"{self.name} {purpose}")}])
        return name

    def _variant_spec(self, name: str, model: str, weight: float, template: dict[str, Any] | None) -> dict[str, Any]:
        t = template or {}
        spec: dict[str, Any] = {"VariantName": _NAME_BAD.sub("-", name)[:63], "ModelName": model,
                                "InitialVariantWeight": float(weight)}
        if t.get("ServerlessConfig"):
            spec["ServerlessConfig"] = t["ServerlessConfig"]
        else:
            spec["InstanceType"] = t.get("InstanceType") or "ml.m5.large"
            spec["InitialInstanceCount"] = int(t.get("InitialInstanceCount") or 1)
        return spec

    def _template(self, r: dict[str, Any] | None) -> dict[str, Any] | None:
        if r is None:
            return None
        specs = r["config"].get("ProductionVariants", [])
        primary = max(r["variants"], key=lambda v: v["weight"], default=None)
        return next((s for s in specs if primary and s["VariantName"] == primary["variant"]), specs[0] if specs else None)

    # ------------------------------------------------------------------ contract
    def isolate(self, *, fallback_version: str | None = None, quarantine: bool = False,
                reason: str = "") -> ServingState:
        r = self._ready(self._read())
        tags = r["tags"]
        contained = tags.get(TAG_MODE) in ("isolated", "quarantined")
        ep = r["endpoint"]
        current = {v["variant"]: v["weight"] for v in r["variants"]}
        restore = None if contained else _encode_routing(ep["EndpointConfigName"], current)
        base = {**self._stamp(reason), **({TAG_RESTORE: restore} if restore else {})}
        if quarantine:
            qcfg = self.quarantine_endpoint_config
            if not qcfg:
                raise TargetError(f"{self.ref}: quarantine needs the option quarantine_endpoint_config (an endpoint "
                                  "config whose model refuses every request): SageMaker itself cannot refuse "
                                  "traffic to an endpoint")
            if ep["EndpointConfigName"] == qcfg and tags.get(TAG_MODE) == "quarantined":
                return self._finish()
            self._switch(r, qcfg, {**base, TAG_MODE: "quarantined"})
            return self._finish()
        fb = str(fallback_version) if fallback_version not in (None, "") else self.last_known_good(r)
        if not fb:
            raise TargetError(f"{self.ref}: no last-known-good version is known (set fallback_version, "
                              "fallback_variant or model_package_group, or tag the endpoint aiir:last-known-good)")
        hit = next((v for v in r["variants"] if str(v["version"]) == fb), None)
        if hit is not None:
            weights = {v["variant"]: (1.0 if v["variant"] == hit["variant"] else 0.0) for v in r["variants"]}
            if _norm(current) == _norm(weights) and tags.get(TAG_MODE) == "isolated":
                return self._finish()
            self._shift(r, weights, {**base, TAG_MODE: "isolated"})
            return self._finish()
        model = self._model_for(fb, r)
        cfg = self._ensure_config([self._variant_spec(f"v{fb}", model, 1.0, self._template(r))], r, "isolate")
        if ep["EndpointConfigName"] == cfg and tags.get(TAG_MODE) == "isolated":
            return self._finish()
        self._switch(r, cfg, {**base, TAG_MODE: "isolated"})
        return self._finish()

    def block_clients(self, clients: list[str], *, rate_limit_per_s: float | None = None,
                      reason: str = "") -> ServingState:
        raise TargetError(f"{self.ref}: a SageMaker endpoint cannot refuse or throttle individual clients — "
                          "InvokeEndpoint carries no client identity the endpoint could act on, only the IAM "
                          "principal. Deny the principal in IAM (an explicit Deny on sagemaker:InvokeEndpoint), "
                          "or block the client at the API gateway in front of the endpoint")

    def restore(self, *, reason: str = "") -> ServingState:
        r = self._ready(self._read())
        tags = r["tags"]
        saved = _decode_routing(self._joined(tags, TAG_RESTORE))
        clear: dict[str, str | None] = {TAG_MODE: None, TAG_RESTORE: None, **self._stamp(reason)}
        if saved is None:
            if tags.get(TAG_MODE) in (None, "serving"):
                return self._finish()
            raise TargetError(f"{self.ref}: marked {tags.get(TAG_MODE)} but the tag {TAG_RESTORE} with the routing "
                              "to restore is missing; roll back to a version explicitly")
        ep = r["endpoint"]
        if ep["EndpointConfigName"] != saved["config"]:
            if self._config_or_none(saved["config"]) is None:
                raise TargetError(f"{self.ref}: the endpoint config to restore ({saved['config']}) no longer exists")
            self._switch(r, saved["config"], clear)
            state = self._finish()
            if not self.wait:
                return state
            r = self._read()
            if _norm({v["variant"]: v["weight"] for v in r["variants"]}) == _norm(saved["weights"]):
                return state
        self._shift(r, saved["weights"], clear)
        return self._finish()

    def rollback(self, version: str, *, reason: str = "") -> ServingState:
        """Serve ``version`` with 100 % of traffic from a new endpoint config (and, with
        ``keep_fallback_variant``, last-known-good as a zero-weight standby). Creates the endpoint if it does
        not exist. Lifts any containment (the new config replaces what was serving)."""
        version = str(version)
        state = self._ready(self._read()) if self._endpoint_or_none() is not None else None
        model = self._model_for(version, state)
        template = self._template(state)
        variants = [self._variant_spec(f"v{version}", model, 1.0, template)]
        lkg = None
        if self.keep_fallback_variant and state is not None:
            try:
                lkg = self.last_known_good(state)
            except TargetError:
                lkg = None
        if lkg and lkg != version:
            try:
                variants.append(self._variant_spec(f"v{lkg}", self._model_for(lkg, state), 0.0, template))
            except BadInput:
                pass  # no model for last-known-good: nothing to keep warm
        cfg = self._ensure_config(variants, state, "v" + _NAME_BAD.sub("-", version)[:12])
        tags: dict[str, str | None] = {TAG_MODE: None, TAG_RESTORE: None, **self._stamp(reason)}
        if state is not None and state["endpoint"]["EndpointConfigName"] == cfg:
            want = {v["VariantName"]: v["InitialVariantWeight"] for v in variants}
            have = {v["variant"]: v["weight"] for v in state["variants"]}
            if _norm(have) == _norm(want) and state["tags"].get(TAG_MODE) in (None, "serving"):
                return self._finish()
            self._shift(state, want, tags)
            return self._finish()
        self._switch(state, cfg, tags)
        return self._finish()

    def canary(self, version: str, share: float, *, reason: str = "") -> ServingState:
        """``share`` of traffic to ``version`` beside the current primary; 0 takes the canary off (weight
        shift), 1 promotes it (:meth:`rollback` to it)."""
        version = str(version)
        try:
            share = float(share)
        except (TypeError, ValueError):
            raise BadInput("share", f"{share!r}: expected a number between 0 and 1") from None
        if not 0.0 <= share <= 1.0:
            raise BadInput("share", f"{share:g}: expected a number between 0 and 1")
        if share >= 1.0:
            return self.rollback(version, reason=reason)
        r = self._ready(self._read())
        if r["tags"].get(TAG_MODE) in ("isolated", "quarantined"):
            raise TargetError(f"{self.ref}: the endpoint is {r['tags'][TAG_MODE]}; restore it before a canary")
        current = {v["variant"]: v["weight"] for v in r["variants"]}
        hit = next((v for v in r["variants"] if str(v["version"]) == version), None)
        others = {k: w for k, w in _norm(current).items() if hit is None or k != hit["variant"]}
        rest = sum(others.values())
        if rest <= 0:
            raise TargetError(f"{self.ref}: no other variant serves traffic beside version {version}; "
                              "use rollback to serve it alone")
        weights = {k: round(w / rest * (1.0 - share), 6) for k, w in others.items()}
        if hit is not None:
            weights[hit["variant"]] = share
            if _norm(current) == _norm(weights):
                return self._finish()
            self._shift(r, weights, self._stamp(reason))
            return self._finish()
        if share <= 0.0:
            return self._finish()
        specs = {s["VariantName"]: s for s in r["config"]["ProductionVariants"]}
        variants = [{**specs[k], "InitialVariantWeight": float(w)} for k, w in weights.items()]
        variants += [{**specs[v["variant"]], "InitialVariantWeight": 0.0}
                     for v in r["variants"] if v["variant"] not in weights]
        variants.append(self._variant_spec(f"v{version}", self._model_for(version, r), share, self._template(r)))
        cfg = self._ensure_config(variants, r, "canary")
        self._switch(r, cfg, self._stamp(reason))
        return self._finish()

    def set_last_known_good(self, version: str) -> None:
        """Record last-known-good on the endpoint itself (tag ``aiir:last-known-good``), as a deploy
        pipeline would after a model passed its gate."""
        ep = self._endpoint()
        self._put_tags(ep["EndpointArn"], {TAG_LKG: _tag_value(str(version))}, self._tags(ep["EndpointArn"]))
        self._lkg = None

    # ------------------------------------------------------------------ decisions
    def _capture_location(self, r: dict[str, Any]) -> tuple[str, str]:
        dc = r["config"].get("DataCaptureConfig") or {}
        uri = dc.get("DestinationS3Uri")
        if not uri or not dc.get("EnableCapture", True):
            raise TargetError(f"{self.ref}: Data Capture is not enabled on endpoint config "
                              f"{r['endpoint'].get('EndpointConfigName')}; SageMaker keeps no served decisions "
                              "without it (enable DataCaptureConfig with a DestinationS3Uri)")
        if not uri.startswith("s3://"):
            raise TargetError(f"{self.ref}: Data Capture destination {uri!r} is not an s3:// URI")
        bucket, _, prefix = uri[5:].partition("/")
        prefix = "/".join(p for p in (prefix.strip("/"), self.name) if p) + "/"
        return bucket, prefix

    def _capture_keys(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        out, token = [], None
        while True:
            kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            page = self._call(self.s3, "list_objects_v2", **kw)
            out += [o for o in page.get("Contents", []) if o["Key"].endswith(".jsonl")]
            token = page.get("NextContinuationToken")
            if not token:
                return sorted(out, key=lambda o: o["Key"])

    def _variant_versions(self, r: dict[str, Any]) -> dict[str, str]:
        out = {}
        names = [r["endpoint"].get("EndpointConfigName")]
        for key in (TAG_RESTORE, TAG_INTENT):
            d = _decode_routing(self._joined(r["tags"], key))
            if d:
                names.append(d["config"])
        for name in names:
            cfg = self._config_or_none(name) if name else None
            for v in (cfg or {}).get("ProductionVariants", []):
                out.setdefault(v["VariantName"], self.version_of_model(v["ModelName"]))
        return out

    def decisions(self, since=None, until=None, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Served decisions from the endpoint's Data Capture files (oldest first), in aiir's decision
        schema; ``model_version`` is the version of the variant that answered (from the capture key)."""
        import tempfile

        from aiir.gateway.decision_log import parse_when
        from aiir.gateway.exports import read_sagemaker_capture

        lo, hi = parse_when(since, where="since"), parse_when(until, where="until")
        r = self._read()
        bucket, prefix = self._capture_location(r)
        versions = self._variant_versions(r)
        rows: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="aiir-capture-") as tmp:
            for i, obj in enumerate(self._capture_keys(bucket, prefix)):
                rel = obj["Key"][len(prefix):]
                parts = rel.split("/")
                if len(parts) < 6:
                    continue
                variant, hour = parts[0], "{}-{}-{}T{}".format(*parts[1:5])
                if (lo and hour < lo[:13]) or (hi and hour > hi[:13]):
                    continue  # the whole hour is outside the window
                path = Path(tmp, f"{i}.jsonl")
                self._download(bucket, obj["Key"], path)
                version = versions.get(variant) or (variant[1:] if re.fullmatch(r"v\d+", variant) else variant)
                for row in read_sagemaker_capture(path, model=self.model, version=version,
                                                  columns=self.feature_columns, client_id="sagemaker"):
                    if (lo and row["ts"] < lo) or (hi and row["ts"] >= hi):
                        continue
                    out = {k: row.get(k) for k in DECISION_FIELDS}
                    out["source"] = f"s3://{bucket}/{obj['Key']}"
                    out["variant"] = variant
                    rows.append(out)
        rows.sort(key=lambda d: (d["ts"], d["decision_id"]))
        return rows[:limit] if limit else rows

    def _download(self, bucket: str, key: str, path: Path, cap: int | None = None) -> int:
        obj = self._call(self.s3, "get_object", Bucket=bucket, Key=key)
        n = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            for chunk in iter(lambda: obj["Body"].read(1 << 20), b""):
                n += len(chunk)
                if cap is not None and n > cap:
                    raise TargetError(f"{self.ref}: s3://{bucket}/{key} exceeds the snapshot cap "
                                      f"({self.snapshot_max_bytes} bytes, option snapshot_max_bytes)")
                fh.write(chunk)
        return n

    # ------------------------------------------------------------------ snapshot
    def snapshot(self, dest: Path) -> list[Path]:
        """Into ``dest``: ``endpoint.json``, ``endpoint-tags.json``, ``endpoint-configs/<name>.json`` (current
        and the ones containment would restore), ``models/<name>.json``, ``model-packages/<group>-<v>.json``,
        the model data under ``model-data/<model>/`` and the Data Capture files under ``data-capture/``."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        r = self._read()
        written: list[Path] = []

        def put(rel: str, obj: Any) -> None:
            p = dest / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True, default=str) + "\n")
            written.append(p)

        put("endpoint.json", r["endpoint"])
        put("endpoint-tags.json", r["tags"])
        put("serving-state.json", self._state(r).to_dict())
        configs = {r["endpoint"]["EndpointConfigName"]}
        for key in (TAG_RESTORE, TAG_INTENT):
            d = _decode_routing(self._joined(r["tags"], key))
            if d:
                configs.add(d["config"])
        models: set[str] = set()
        for name in sorted(configs):
            cfg = self._config_or_none(name)
            if cfg is None:
                continue
            put(f"endpoint-configs/{name}.json", cfg)
            models.update(v["ModelName"] for v in cfg.get("ProductionVariants", []))
        budget = [self.snapshot_max_bytes]
        for name in sorted(models):
            m = self._model(name)
            if m is None:
                continue
            put(f"models/{name}.json", m)
            urls = []
            for c in [m.get("PrimaryContainer") or {}] + list(m.get("Containers") or []):
                if c.get("ModelDataUrl"):
                    urls.append(c["ModelDataUrl"])
                pkg = c.get("ModelPackageName")
                if pkg:
                    desc = self._call(self.sm, "describe_model_package", ModelPackageName=pkg)
                    put(f"model-packages/{_NAME_BAD.sub('-', pkg.split('/', 1)[-1])}.json", desc)
                    for pc in (desc.get("InferenceSpecification") or {}).get("Containers", []):
                        if pc.get("ModelDataUrl"):
                            urls.append(pc["ModelDataUrl"])
            for url in dict.fromkeys(urls):
                written += self._copy_s3_tree(url, dest / "model-data" / name, budget)
        try:
            bucket, prefix = self._capture_location(r)
        except TargetError:
            bucket = None
        if bucket:
            for obj in self._capture_keys(bucket, prefix):
                written += self._copy_object(bucket, obj["Key"], dest / "data-capture" / obj["Key"][len(prefix):],
                                             budget)
        return written

    def _copy_s3_tree(self, url: str, dest: Path, budget: list[int]) -> list[Path]:
        if not url.startswith("s3://"):
            return []
        bucket, _, key = url[5:].partition("/")
        if key and not key.endswith("/"):
            return self._copy_object(bucket, key, dest / key.rsplit("/", 1)[-1], budget)
        out: list[Path] = []
        for obj in self._list_all(bucket, key):
            out += self._copy_object(bucket, obj["Key"], dest / obj["Key"][len(key):], budget)
        return out

    def _list_all(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        out, token = [], None
        while True:
            kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            page = self._call(self.s3, "list_objects_v2", **kw)
            out += page.get("Contents", [])
            token = page.get("NextContinuationToken")
            if not token:
                return out

    def _copy_object(self, bucket: str, key: str, path: Path, budget: list[int]) -> list[Path]:
        n = self._download(bucket, key, path, cap=budget[0])
        budget[0] -= n
        return [path]


_SESSIONS: dict[tuple, Any] = {}


def _shared_session(profile, region, key, secret, token):
    """One boto3 Session per credentials in a process: its loader keeps the parsed service models, so a second
    target (the trigger's polls, the CLI) does not pay the 1-3 s of loading SageMaker's model again."""
    import boto3

    k = (profile, region, key, secret, token)
    if k not in _SESSIONS:
        _SESSIONS[k] = boto3.session.Session(profile_name=profile, region_name=region, aws_access_key_id=key,
                                             aws_secret_access_key=secret, aws_session_token=token)
    return _SESSIONS[k]


def _xml_field(text: str, tag: str, default: str) -> str:
    m = re.search(rf"<{tag}>([^<]*)</{tag}>", text)
    return m.group(1) if m else default


def _tag_list(values: dict[str, str]) -> list[dict[str, str]]:
    """Tags for ``values``; a value longer than 256 characters is split over ``key``, ``key.1`` …"""
    out = []
    for key, value in values.items():
        chunks = [value[i:i + _TAG_VALUE_MAX] for i in range(0, len(value), _TAG_VALUE_MAX)] or [""]
        names = [key] + [f"{key}.{i}" for i in range(1, len(chunks))]
        out += [{"Key": n, "Value": c} for n, c in zip(names, chunks, strict=True)]
    return out


def _as_bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if k != "ResponseMetadata"}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj


def wait_in_service(target: SageMakerTarget, *, timeout: float | None = None) -> ServingState:
    """Wait until settled, then :func:`check_applied` (what ``wait=True`` does after each change)."""
    t0 = time.monotonic()
    state = target.wait_settled(timeout=timeout)
    check_applied(state)
    state.extra["waited_s"] = round(time.monotonic() - t0, 3)
    return state
