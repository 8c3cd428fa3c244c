"""SageMaker operators for aiir playbooks, in the amazon provider's style.

Each is a typed ``AwsBaseOperator[SageMakerHook]``: connection ``aws_conn_id`` (default ``aws_default``; its
``endpoint_url`` extra points at a VPC endpoint or a local test server), ``region_name``, ``verify``,
``botocore_config`` (default: botocore's ``standard`` retry mode, 8 attempts, for throttling and 5xx), the hook
a cached property built only in ``execute``. The boto3 clients the target uses come from the hooks
(``SageMakerHook.conn``, ``S3Hook.conn``); every decision is made by :mod:`aiir.targets.sagemaker`.

An endpoint change returns at once with the endpoint ``Updating``; with ``deferrable=True`` (default) the task
defers to :class:`aiir_airflow.triggers.TargetSettledTrigger` — no worker slot held while SageMaker applies it —
and ``execute_complete`` checks, from the event alone, that the settled endpoint serves what was asked (a silent
rollback by SageMaker fails the task with both configurations named; its retry tries again).

Import cost, measured on the project machine (``docs/targets.md``): ``SageMakerHook`` ≈ ``AwsBaseHook`` ≈ 0.5 s
after ``airflow.sdk`` (5 cold runs each), so the typed hook is used on the containment path too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

    from aiir.targets.base import ServingState
    from aiir.targets.sagemaker import SageMakerTarget

DEFAULT_BOTOCORE_CONFIG: dict[str, Any] = {"retries": {"mode": "standard", "total_max_attempts": 8}}


def _aiir_errors(fn):
    """Bad input and broken integrity fail at once; TargetError (throttled past retries, silent rollback, not
    settled in time) is raised as is so the task's retries apply."""

    def wrapper(self, *args, **kwargs):
        from aiir.errors import BadInput, IntegrityError

        try:
            return fn(self, *args, **kwargs)
        except (BadInput, IntegrityError) as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class SageMakerTargetOperator(AwsBaseOperator[SageMakerHook]):
    """Base: one operation of :class:`aiir.targets.sagemaker.SageMakerTarget` on endpoint ``endpoint_name``.

    :param endpoint_name: the SageMaker endpoint
    :param model_name: the model's name in aiir / MLflow (default: the endpoint name)
    :param target_options: further target options (``fallback_variant``, ``model_package_group``,
        ``quarantine_endpoint_config``, ``execution_role_arn``, ``data_capture_s3_uri`` …)
    :param reason: recorded on the endpoint (tag ``aiir:reason``)
    :param deferrable: wait for ``InService`` in the triggerer (default) instead of the worker
    :param poll_interval: seconds between DescribeEndpoint calls while waiting
    :param wait_timeout: seconds the endpoint may take to settle
    """

    aws_hook_class = SageMakerHook
    template_fields: Sequence[str] = aws_template_fields("endpoint_name", "model_name", "target_options", "reason")
    ui_color = "#ff9900"

    def __init__(self, *, endpoint_name: str, model_name: str | None = None,
                 target_options: dict[str, Any] | None = None, reason: str = "", deferrable: bool = True,
                 poll_interval: float = 15.0, wait_timeout: float = 1800.0, **kwargs) -> None:
        kwargs.setdefault("botocore_config", DEFAULT_BOTOCORE_CONFIG)
        super().__init__(**kwargs)
        self.endpoint_name = endpoint_name
        self.model_name = model_name
        self.target_options = target_options or {}
        self.reason = reason
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout

    def target(self, *, with_s3: bool = False) -> SageMakerTarget:
        """The target on the hooks' clients; ``wait=False``: settling is this operator's job."""
        from aiir.targets.sagemaker import SageMakerTarget

        s3 = None
        if with_s3:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            s3 = S3Hook(**self._hook_parameters).conn
        options = dict(self.target_options) if isinstance(self.target_options, dict) else {}
        known = {o.name for o in SageMakerTarget.options}
        unknown = sorted(set(options) - known)
        if unknown:
            from aiir.errors import BadInput

            raise BadInput("target_options", f"SageMaker targets take {sorted(known)}, not {unknown}")
        options.update(wait=False, poll=self.poll_interval, wait_timeout=self.wait_timeout)
        if self.model_name:
            options["model_name"] = self.model_name
        return SageMakerTarget(self.endpoint_name, sagemaker_client=self.hook.conn, s3_client=s3, **options)

    def act(self, target: SageMakerTarget) -> ServingState:
        raise NotImplementedError

    @_aiir_errors
    def execute(self, context: Context) -> dict[str, Any]:
        from aiir.targets.sagemaker import check_applied

        target = self.target()
        state = self.act(target)
        self.log.info("%s: %s, routes %s; %s", target.ref, state.mode,
                      {r.version: r.share for r in state.routes}, state.pending or "settled")
        if state.settled:
            check_applied(state)
            return self._result(state, target)
        if not self.deferrable:
            state = target.wait_settled(timeout=self.wait_timeout, poll=self.poll_interval)
            check_applied(state)
            return self._result(state, target)
        from aiir_airflow.triggers import TargetSettledTrigger

        self.defer(trigger=TargetSettledTrigger(target_kind="sagemaker", target_name=self.endpoint_name,
                                                target_conn_id=self.aws_conn_id, poll_interval=self.poll_interval,
                                                timeout=self.wait_timeout),
                   method_name="execute_complete")

    @_aiir_errors
    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Judge the trigger's event alone: settled and matching the intent, or fail with the reason."""
        from aiir.errors import TargetError
        from aiir.targets.sagemaker import check_applied

        if event.get("status") != "settled":
            raise TargetError(event.get("message") or f"endpoint {self.endpoint_name}: {event.get('status')}")
        check_applied(event["state"])
        self.log.info("endpoint %s settled after %.1f s", self.endpoint_name, event.get("waited_s", 0.0))
        return {**event["state"], "waited_s": event.get("waited_s")}

    @staticmethod
    def _result(state: ServingState, target: SageMakerTarget) -> dict[str, Any]:
        return {**state.to_dict(), "api_calls": list(target.api_calls)}


class SageMakerIsolateOperator(SageMakerTargetOperator):
    """Contain: 100 % of traffic to last-known-good (a weight shift when a variant serves it, else a new
    endpoint config), or ``quarantine`` to the quarantine endpoint config."""

    template_fields: Sequence[str] = (*SageMakerTargetOperator.template_fields, "fallback_version")
    ui_color = "#e06666"

    def __init__(self, *, fallback_version: str | None = None, quarantine: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fallback_version = fallback_version
        self.quarantine = quarantine

    def act(self, target: SageMakerTarget) -> ServingState:
        return target.isolate(fallback_version=self.fallback_version or None, quarantine=self.quarantine,
                              reason=self.reason)


class SageMakerRestoreOperator(SageMakerTargetOperator):
    """Lift containment: the routing saved at isolation (endpoint tag ``aiir:restore``) comes back."""

    def act(self, target: SageMakerTarget) -> ServingState:
        return target.restore(reason=self.reason)


class SageMakerRollbackOperator(SageMakerTargetOperator):
    """Serve ``version`` alone from a new endpoint config (created from the approved model package when no
    SageMaker model serves it yet); configs in use are never edited."""

    template_fields: Sequence[str] = (*SageMakerTargetOperator.template_fields, "version")

    def __init__(self, *, version: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.version = version

    def act(self, target: SageMakerTarget) -> ServingState:
        return target.rollback(str(self.version), reason=self.reason)


class SageMakerCanaryOperator(SageMakerTargetOperator):
    """``share`` of traffic to ``version`` (a new variant); ``share=1`` promotes it, ``0`` takes it off."""

    template_fields: Sequence[str] = (*SageMakerTargetOperator.template_fields, "version", "share")

    def __init__(self, *, version: str, share: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.version = version
        self.share = share

    def act(self, target: SageMakerTarget) -> ServingState:
        return target.canary(str(self.version), float(self.share), reason=self.reason)


class SageMakerSnapshotOperator(SageMakerTargetOperator):
    """Preserve the endpoint: descriptions (endpoint, configs, models, packages, tags), model data and Data
    Capture files, sealed as an evidence bundle (``<incident_id>-sagemaker``) and, with ``evidence_uri``,
    copied to an S3 bucket under Object Lock (COMPLIANCE by default). Changes nothing on the endpoint.

    :param incident_id: the incident
    :param evidence_uri: ``s3://bucket/prefix`` of an Object Lock bucket (the bundle goes under
        ``<prefix>/<bundle id>``); empty: keep the sealed bundle locally only
    :param retain_days: Object Lock retention
    :param signing_conn_id: connection whose password holds the Ed25519 PEM (else aiir's key file)
    """

    template_fields: Sequence[str] = (*SageMakerTargetOperator.template_fields, "incident_id", "evidence_uri")

    def __init__(self, *, incident_id: str, evidence_uri: str = "", retain_days: float = 3650,
                 lock_mode: str = "COMPLIANCE", signing_conn_id: str = "aiir_evidence_signing", **kwargs) -> None:
        kwargs.setdefault("deferrable", False)
        super().__init__(**kwargs)
        self.incident_id = incident_id
        self.evidence_uri = evidence_uri
        self.retain_days = retain_days
        self.lock_mode = lock_mode
        self.signing_conn_id = signing_conn_id

    def _signing_key(self):
        from airflow.sdk import BaseHook

        from aiir.evidence import load_or_create_signing_key, load_private_key_pem

        try:
            conn = BaseHook.get_connection(self.signing_conn_id)
        except Exception:
            conn = None
        if conn is not None and conn.password:
            return load_private_key_pem(conn.password.encode())
        return load_or_create_signing_key()

    @_aiir_errors
    def execute(self, context: Context) -> dict[str, Any]:
        import tempfile
        from pathlib import Path

        from aiir.evidence import EvidenceStore
        from aiir.evidence.s3 import aws_errors, upload_bundle

        ti = context["ti"]
        ctx = {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "try_number": ti.try_number}
        target = self.target(with_s3=True)
        bundle_id = f"{self.incident_id}-sagemaker"
        key = self._signing_key()
        bundle = EvidenceStore().open_bundle(bundle_id, actor=f"airflow:{ti.dag_id}", context=ctx)
        if not bundle.sealed:
            with tempfile.TemporaryDirectory(prefix="aiir-sm-snapshot-") as tmp:
                files = target.snapshot(Path(tmp))
                bundle.add_tree(tmp, f"target_state/sagemaker/{self.endpoint_name}", category="target_state",
                                description=f"SageMaker endpoint {self.endpoint_name}: descriptions, model data, "
                                            "Data Capture")
            bundle.seal(key)
            self.log.info("sealed %s: %d files from %s", bundle.path, len(files), target.ref)
        out: dict[str, Any] = {"bundle": str(bundle.path), "bundle_id": bundle_id, "api_calls": target.api_calls}
        if self.evidence_uri:
            uri = f"{self.evidence_uri.rstrip('/')}/{bundle_id}"
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            with aws_errors(uri):
                out["upload"] = upload_bundle(bundle.path, uri, client=S3Hook(**self._hook_parameters).conn,
                                              retain_days=self.retain_days, mode=self.lock_mode, context=ctx,
                                              signing_key=key)
            out["evidence_uri"] = uri
        return out
