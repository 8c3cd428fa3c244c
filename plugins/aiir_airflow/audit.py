"""Operators of the audit DAGs (``audit_decision_trace``, ``artifact_integrity``): thin shells over
:mod:`aiir.audit.jobs`. Secrets come from Airflow connections (so from any secrets backend):

* ``aiir_decision_log_key`` — password: the decision-log field key (base64/hex); only the trace task
  reads it, and only when the run asks to decrypt;
* ``aiir_evidence_signing`` — password: the Ed25519 PEM that seals the audit package (else aiir's key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context


def _password(conn_id: str) -> str | None:
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id).password or None
    except Exception:  # noqa: BLE001 — no such connection
        return None


def _ids(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [x.strip() for x in value.replace("\n", ",").split(",") if x.strip()]
    if isinstance(value, (list, tuple)):
        return [str(x).strip() for x in value if str(x).strip()]
    raise AirflowFailException(f"decision_ids: expected a list or a comma-separated string, got {type(value).__name__}")


class DecisionTraceOperator(BaseOperator):
    """Trace decisions (ids, or a window and a client) into one sealed audit package."""

    template_fields: Sequence[str] = ("decision_ids", "since", "until", "client", "target_kind", "target_name",
                                      "purpose", "decrypt")

    def __init__(self, *, decision_ids: Any = None, since: str = "", until: str = "", client: str = "",
                 target_kind: str = "local", target_name: str = "", purpose: str = "", decrypt: Any = False,
                 key_conn_id: str = "aiir_decision_log_key", signing_conn_id: str = "aiir_evidence_signing",
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.decision_ids, self.since, self.until, self.client = decision_ids, since, until, client
        self.target_kind, self.target_name, self.purpose, self.decrypt = target_kind, target_name, purpose, decrypt
        self.key_conn_id, self.signing_conn_id = key_conn_id, signing_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from aiir.audit import fieldcrypt, jobs
        from aiir.errors import BadInput, IntegrityError

        ti = context["ti"]
        dag_run = context.get("dag_run")
        who = getattr(dag_run, "triggering_user_name", None) or "airflow"
        try:
            keys = None
            if str(self.decrypt).lower() in ("true", "1", "yes"):
                raw = _password(self.key_conn_id)
                key = fieldcrypt.parse_key(raw, where=f"connection {self.key_conn_id}") if raw else \
                    fieldcrypt.load_key(required=True)
                keys = [key]
            pem = _password(self.signing_conn_id)
            signing_key = None
            if pem:
                from aiir.evidence.keys import load_private_key_pem

                signing_key = load_private_key_pem(pem.encode())
            return jobs.decision_trace(
                decision_ids=_ids(self.decision_ids), since=self.since or None, until=self.until or None,
                client=self.client or None, target_kind=self.target_kind, target_name=self.target_name or None,
                purpose=self.purpose, actor=f"{who} via airflow:{ti.dag_id}", keys=keys, signing_key=signing_key,
                context={"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id,
                         "try_number": ti.try_number})
        except (BadInput, IntegrityError) as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


class ArtifactIntegrityOperator(BaseOperator):
    """Re-verify every registered model version and dataset; open an incident per tampered model."""

    template_fields: Sequence[str] = ("model_name", "target_kind")

    def __init__(self, *, model_name: str = "", target_kind: str = "local", **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_name, self.target_kind = model_name, target_kind

    def execute(self, context: Context) -> list[str]:
        from aiir.audit import jobs
        from aiir.errors import BadInput

        try:
            summary = jobs.artifact_integrity(model=self.model_name or None, run_id=context["run_id"],
                                              target_kind=self.target_kind)
        except BadInput as exc:
            raise AirflowFailException(f"BadInput: {exc}") from exc
        context["ti"].xcom_push(key="summary", value=summary)
        # the return value is what the playbook trigger is mapped over (Airflow maps over return values only):
        # the ids of the incidents this run opened — one playbook run each, none on a clean or duplicate run
        return [t["trigger_run_id"] for t in summary["triggers"]]

