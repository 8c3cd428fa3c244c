"""DeploymentTargetHook: builds an aiir DeploymentTarget from an Airflow connection.

Connection ``aiir_target_<kind>`` (default ids ``aiir_target_local`` …): host/port give the endpoint URL,
password the admin token; without a connection, aiir's own defaults apply (the embedded gateway's URL
and the token file in its state folder). Fake it in tests with ``AIRFLOW_CONN_AIIR_TARGET_LOCAL``.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from aiir.targets.base import DeploymentTarget


class DeploymentTargetHook(BaseHook):
    conn_name_attr = "target_conn_id"
    default_conn_name = "aiir_target_local"
    conn_type = "aiir_target"
    hook_name = "aiir deployment target"

    def __init__(self, kind: str, name: str, target_conn_id: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.name = name
        self.target_conn_id = target_conn_id or self.default_conn_id_for(kind)
        self.extra_options = dict(options or {})  # explicit options win over the connection's

    @staticmethod
    def default_conn_id_for(kind: str) -> str:
        """The target class's own default connection (``kubernetes_default`` …), else ``aiir_target_<kind>``."""
        from aiir.targets import target_class

        try:
            return getattr(target_class(kind), "default_conn_id", None) or f"aiir_target_{kind}"
        except Exception:  # an unknown kind fails later, naming the field
            return f"aiir_target_{kind}"

    def _options(self) -> dict[str, Any]:
        """The target's options from the connection, mapped by the target class itself (aiir core)."""
        from aiir.targets import target_class

        cls = target_class(self.kind)
        try:
            conn = self.get_connection(self.target_conn_id)
        except Exception:  # no such connection: aiir's embedded defaults
            return dict(self.extra_options)
        opts = cls.options_from_connection(host=conn.host, port=conn.port, schema=conn.schema, login=conn.login,
                                           password=conn.password, extra=conn.extra_dejson or {})
        return {**opts, **self.extra_options}

    @cached_property
    def target(self) -> DeploymentTarget:
        from aiir.targets import get_target

        return get_target(self.kind, self.name, **self._options())

    def get_conn(self) -> DeploymentTarget:
        return self.target
