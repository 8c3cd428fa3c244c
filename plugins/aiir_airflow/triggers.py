"""Triggers for aiir's deferrable operators (they live here, never in the DAG folder).

:class:`TargetSettledTrigger` waits in the triggerer — no worker slot held — until a DeploymentTarget's
``describe()`` reports ``settled`` (a SageMaker endpoint back ``InService``, a Kubernetes rollout complete),
then fires one event carrying the state read back. The target is rebuilt in the triggerer from the same
connection the operator used, so every step talks to the target the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class TargetSettledTrigger(BaseTrigger):
    def __init__(self, *, target_kind: str, target_name: str, target_conn_id: str | None = None,
                 poll_interval: float = 5.0, timeout: float = 1800.0, started_at: float | None = None,
                 target_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.target_options = dict(target_options or {})  # over the connection's (never secrets: serialized)
        self.target_kind = target_kind
        self.target_name = target_name
        self.target_conn_id = target_conn_id
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.started_at = float(started_at) if started_at is not None else time.time()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("aiir_airflow.triggers.TargetSettledTrigger",
                {"target_kind": self.target_kind, "target_name": self.target_name,
                 "target_conn_id": self.target_conn_id, "poll_interval": self.poll_interval,
                 "timeout": self.timeout, "started_at": self.started_at, "target_options": self.target_options})

    def _target(self):
        from aiir_airflow.hooks import DeploymentTargetHook

        return DeploymentTargetHook(self.target_kind, self.target_name, target_conn_id=self.target_conn_id,
                                    options=self.target_options).target

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        target = await sync_to_async(self._target)()
        try:
            while True:
                try:
                    state = await sync_to_async(target.describe)()
                except Exception as exc:  # a target error is the operator's to judge, with the message
                    yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"})
                    return
                if state.settled:
                    yield TriggerEvent({"status": "settled", "state": state.to_dict(),
                                        "waited_s": round(time.time() - self.started_at, 3)})
                    return
                if time.time() - self.started_at >= self.timeout:
                    yield TriggerEvent({"status": "timeout", "state": state.to_dict(),
                                        "message": f"{target.ref} not settled after {self.timeout:g}s "
                                                   f"({state.pending or 'pending'})"})
                    return
                self.log.info("%s settling: %s", target.ref, state.pending or "pending")
                await asyncio.sleep(self.poll_interval)
        finally:
            await sync_to_async(target.close)()
