"""Operators for a model served on Kubernetes, on the cncf-kubernetes provider's connection (``kubernetes_default``).

Every operator is a thin shell over :class:`aiir.targets.kubernetes.KubernetesTarget`; every decision (which
object to patch, how to reverse it) is made there. Pattern (after the provider's own operators): ``template_fields``
declared, nothing expensive in ``__init__``, the hook a cached property built only in ``execute``.

Two ways to the API server, one connection:

- :class:`KubernetesIsolateOperator` (containment) must act at once. Importing the provider's ``KubernetesHook``
  costs seconds (measured in docs/targets.md), so containment builds the target from the same connection with the
  plain ``kubernetes`` client, through the generic :class:`aiir_airflow.hooks.DeploymentTargetHook` (which maps the
  connection's extras ``kube_config_path``, ``kube_config``, ``namespace``, ``cluster_context``, ``in_cluster``
  through ``KubernetesTarget.options_from_connection``).
- the other operators (rollback, restore, canary, snapshot) use the provider's ``KubernetesHook`` and hand its
  ``api_client`` to the target, so every client setting the provider supports applies.

Waiting (``wait_for_settled``) is deferrable by default: the task defers to
:class:`aiir_airflow.triggers.TargetSettledTrigger`, which polls ``describe()`` in the triggerer (no worker slot
held) until the rollout completes, then resumes in ``execute_complete``. The rollback operator waits by default.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

    from aiir.targets.kubernetes import KubernetesTarget

KIND = "kubernetes"
DEFAULT_CONN_ID = "kubernetes_default"


class KubernetesTargetOperator(BaseOperator):
    """Base: one model's target on Kubernetes. ``target_options`` are KubernetesTarget options (namespace,
    deployment, service, virtual_service, routing, …) over the connection's."""

    template_fields: Sequence[str] = ("target_name", "kubernetes_conn_id", "namespace", "target_options", "reason")
    ui_color = "#d5e8f9"
    #: containment operators take the fast path (plain client from the connection, no KubernetesHook import)
    fast_path: bool = False

    def __init__(self, *, target_name: str, kubernetes_conn_id: str = DEFAULT_CONN_ID, namespace: str | None = None,
                 target_options: dict[str, Any] | None = None, reason: str = "",
                 wait_for_settled: bool = False, deferrable: bool = True, poll_interval: float = 5.0,
                 settle_timeout: float = 1800.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.target_name = target_name
        self.kubernetes_conn_id = kubernetes_conn_id
        self.namespace = namespace
        self.target_options = target_options or {}
        self.reason = reason
        self.wait_for_settled = wait_for_settled
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.settle_timeout = settle_timeout

    # ------------------------------------------------------------------ hook and target (built in execute)
    @cached_property
    def hook(self):
        """The provider's KubernetesHook on ``kubernetes_conn_id`` (imported here, never at parse time)."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=self.kubernetes_conn_id)

    def _options(self) -> dict[str, Any]:
        from aiir.errors import BadInput

        if not isinstance(self.target_options, dict):
            raise BadInput("target_options", "expected a JSON object of KubernetesTarget options")
        opts = dict(self.target_options)
        if self.namespace:
            opts["namespace"] = self.namespace
        return opts

    @cached_property
    def target(self) -> KubernetesTarget:
        if self.fast_path:
            from aiir_airflow.hooks import DeploymentTargetHook

            return DeploymentTargetHook(KIND, self.target_name, target_conn_id=self.kubernetes_conn_id,
                                        options=self._options()).target
        from aiir.targets.kubernetes import KubernetesTarget

        opts = self._options()
        opts.setdefault("namespace", self.hook.get_namespace() or None)
        if opts["namespace"] is None:
            opts.pop("namespace")
        return KubernetesTarget(self.target_name, api_client=self.hook.api_client, **opts)

    # ------------------------------------------------------------------ run
    def act(self, target: KubernetesTarget):  # -> ServingState
        raise NotImplementedError

    def execute(self, context: Context) -> dict[str, Any]:
        from aiir.errors import BadInput, IntegrityError

        t0 = time.perf_counter()
        try:
            try:
                state = self.act(self.target)
            except (BadInput, IntegrityError) as exc:
                raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
            result = {"state": state.to_dict(), "seconds": round(time.perf_counter() - t0, 4),
                      "target": self.target.ref}
            self.log.info("%s %s in %.3f s: mode=%s routes=%s settled=%s %s", type(self).__name__, self.target.ref,
                          result["seconds"], state.mode, [(r.version, r.share) for r in state.routes],
                          state.settled, state.pending)
            if self.wait_for_settled and not state.settled and not self.deferrable:
                state = self.target.wait_settled(timeout=self.settle_timeout, poll=self.poll_interval)
                result["state"] = state.to_dict()
        finally:
            self.target.close()
        if self.wait_for_settled and not state.settled and self.deferrable:
            from aiir_airflow.triggers import TargetSettledTrigger

            self.defer(trigger=TargetSettledTrigger(
                target_kind=KIND, target_name=self.target_name, target_conn_id=self.kubernetes_conn_id,
                poll_interval=self.poll_interval, timeout=self.settle_timeout, started_at=time.time(),
                target_options=self._options()), method_name="execute_complete")
        return result

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        status = (event or {}).get("status")
        if status == "settled":
            st = event["state"]
            self.log.info("%s:%s settled after %.1f s: mode=%s routes=%s", KIND, self.target_name,
                          event.get("waited_s", 0), st.get("mode"), st.get("routes"))
            return {"state": st, "waited_s": event.get("waited_s"), "target": f"{KIND}:{self.target_name}"}
        raise AirflowException(f"{KIND}:{self.target_name} did not settle: {(event or {}).get('message', event)}")


class KubernetesIsolateOperator(KubernetesTargetOperator):
    """Contain: all traffic to the fallback (VirtualService weights, or the Service selector), or with
    ``quarantine`` a deny-all NetworkPolicy (``target_options={"quarantine_scale_to_zero": True}`` also scales
    to zero). Fast path: the plain client from the connection, no KubernetesHook import."""

    template_fields: Sequence[str] = (*KubernetesTargetOperator.template_fields, "fallback_version", "quarantine")
    ui_color = "#e06666"
    fast_path = True

    def __init__(self, *, fallback_version: str | None = None, quarantine: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fallback_version = fallback_version
        self.quarantine = quarantine

    def act(self, target):
        q = self.quarantine
        if isinstance(q, str):
            q = q.strip().lower() in ("1", "true", "yes", "on")
        return target.isolate(fallback_version=str(self.fallback_version) if self.fallback_version else None,
                              quarantine=bool(q), reason=self.reason)


class KubernetesRestoreOperator(KubernetesTargetOperator):
    """Lift isolation, quarantine (scaling back) and client blocks."""

    def act(self, target):
        return target.restore(reason=self.reason)


class KubernetesRollbackOperator(KubernetesTargetOperator):
    """Roll the primary Deployment back to ``version`` (model version, ``revision:N`` or image digest), as
    ``kubectl rollout undo`` does; waits (deferrably) until the rollout completes."""

    template_fields: Sequence[str] = (*KubernetesTargetOperator.template_fields, "version")

    def __init__(self, *, version: str, wait_for_settled: bool = True, **kwargs) -> None:
        super().__init__(wait_for_settled=wait_for_settled, **kwargs)
        self.version = version

    def act(self, target):
        return target.rollback(str(self.version), reason=self.reason)


class KubernetesCanaryOperator(KubernetesTargetOperator):
    """Send ``share`` of traffic to ``version`` (VirtualService weight, or replica share without a mesh)."""

    template_fields: Sequence[str] = (*KubernetesTargetOperator.template_fields, "version", "share")

    def __init__(self, *, version: str, share: float | str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.version = version
        self.share = share

    def act(self, target):
        return target.canary(str(self.version), float(self.share), reason=self.reason)


class KubernetesSnapshotOperator(KubernetesTargetOperator):
    """Write the target's objects, history, events and logs as YAML into ``dest`` (seal them with the evidence
    store, as the playbook's preserve step does)."""

    template_fields: Sequence[str] = (*KubernetesTargetOperator.template_fields, "dest")

    def __init__(self, *, dest: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dest = dest

    def execute(self, context: Context) -> dict[str, Any]:
        from pathlib import Path

        from aiir.errors import BadInput

        try:
            files = self.target.snapshot(Path(self.dest))
        except BadInput as exc:
            raise AirflowFailException(f"BadInput: {exc}") from exc
        finally:
            self.target.close()
        return {"dest": str(self.dest), "files": [str(p) for p in files], "target": f"{KIND}:{self.target_name}"}
