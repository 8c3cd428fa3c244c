"""OpenLineage events for training runs, from core code (works without Airflow).

Every registration through :func:`aiir.registry.log_and_register` (bootstrap, the nightly retrain, the
clean retrain) emits a ``START`` and a ``COMPLETE`` run event: job ``aiir/train.<model>``, every training
dataset as an input and the registered version as an output, each with the custom dataset facet
``aiirIntegrity`` (SHA-256, signature file and its digest, signing key id) so Marquez or DataHub show
*which bytes* a model was trained on.

Transport (first that applies):

* ``AIIR_LINEAGE=off`` — nothing is emitted;
* ``AIIR_LINEAGE_URL`` (or ``OPENLINEAGE_URL``) — HTTP to that OpenLineage endpoint (e.g. Marquez
  ``http://marquez:5000``; ``AIIR_LINEAGE_ENDPOINT`` default ``api/v1/lineage``, ``AIIR_LINEAGE_API_KEY``,
  ``AIIR_LINEAGE_TIMEOUT`` seconds, ``AIIR_LINEAGE_RETRIES``);
* otherwise a file: ``$AIIR_HOME/lineage/openlineage.jsonl`` (one event per line, appended), or
  ``AIIR_LINEAGE_FILE``.

Emission never fails a registration: an error is returned (and recorded on the version) instead. In
Airflow, the ``apache-airflow-providers-openlineage`` provider (optional) adds the task-level events;
aiir's events carry the Airflow context (dag/run/task ids) in the ``aiirAirflow`` run facet.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiir import config

NAMESPACE = "aiir"
PRODUCER = "https://github.com/aiir/aiir/tree/main/include/aiir/audit/lineage.py"
FACET_SCHEMA = "https://aiir.dev/spec/facets/1-0-0/AiirIntegrityDatasetFacet.json"


def transport_config() -> dict[str, Any] | None:
    """The client's transport settings, or None when lineage is off."""
    if os.environ.get("AIIR_LINEAGE", "").lower() in ("off", "0", "false", "none"):
        return None
    url = os.environ.get("AIIR_LINEAGE_URL") or os.environ.get("OPENLINEAGE_URL")
    if url:
        cfg: dict[str, Any] = {"type": "http", "url": url,
                               "endpoint": os.environ.get("AIIR_LINEAGE_ENDPOINT", "api/v1/lineage"),
                               "timeout": float(os.environ.get("AIIR_LINEAGE_TIMEOUT", "5"))}
        if os.environ.get("AIIR_LINEAGE_RETRIES"):
            cfg["retry"] = {"total": int(os.environ["AIIR_LINEAGE_RETRIES"]), "backoff_factor": 0.2}
        if os.environ.get("AIIR_LINEAGE_API_KEY"):
            cfg["auth"] = {"type": "api_key", "apiKey": os.environ["AIIR_LINEAGE_API_KEY"]}
        return cfg
    return {"type": "file", "log_file_path": str(lineage_file()), "append": True}


def lineage_file() -> Path:
    return Path(os.environ["AIIR_LINEAGE_FILE"]) if os.environ.get("AIIR_LINEAGE_FILE") else \
        config.paths().home / "lineage" / "openlineage.jsonl"


def _facet_classes():
    import attr
    from openlineage.client.generated.base import DatasetFacet, RunFacet

    @attr.define
    class AiirIntegrityDatasetFacet(DatasetFacet):
        sha256: str | None = attr.field(default=None)
        size: int | None = attr.field(default=None)
        kind: str | None = attr.field(default=None)
        signature: str | None = attr.field(default=None)
        signatureSha256: str | None = attr.field(default=None)  # noqa: N815
        signingKeyId: str | None = attr.field(default=None)  # noqa: N815
        signatureMethod: str | None = attr.field(default=None)  # noqa: N815
        signatureFormat: str = attr.field(default="model-signing/sigstore-bundle-0.3")  # noqa: N815

        @staticmethod
        def _get_schema() -> str:
            return FACET_SCHEMA

    @attr.define
    class AiirTrainingRunFacet(RunFacet):
        model: str = attr.field(default="")
        version: str | None = attr.field(default=None)
        recipe: str | None = attr.field(default=None)
        mlflowRunId: str | None = attr.field(default=None)  # noqa: N815
        gitCommit: str | None = attr.field(default=None)  # noqa: N815
        stage: str | None = attr.field(default=None)
        incidentId: str | None = attr.field(default=None)  # noqa: N815

        @staticmethod
        def _get_schema() -> str:
            return "https://aiir.dev/spec/facets/1-0-0/AiirTrainingRunFacet.json"

    @attr.define
    class AiirAirflowRunFacet(RunFacet):
        dagId: str | None = attr.field(default=None)  # noqa: N815
        dagRunId: str | None = attr.field(default=None)  # noqa: N815
        taskId: str | None = attr.field(default=None)  # noqa: N815
        tryNumber: str | None = attr.field(default=None)  # noqa: N815

        @staticmethod
        def _get_schema() -> str:
            return "https://aiir.dev/spec/facets/1-0-0/AiirAirflowRunFacet.json"

    return AiirIntegrityDatasetFacet, AiirTrainingRunFacet, AiirAirflowRunFacet


def _iso(t: datetime | None = None) -> str:
    return (t or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _client(cfg: dict[str, Any]):
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport import get_default_factory

    if cfg["type"] == "file":
        Path(cfg["log_file_path"]).parent.mkdir(parents=True, exist_ok=True)
    return OpenLineageClient(transport=get_default_factory().create(config=cfg), config={"transport": cfg})


def emit_training(*, model: str, version: str | None, run_id: str | None, recipe: str | None,
                  datasets: list[dict[str, Any]], model_record: dict[str, Any] | None,
                  started_at: datetime, ended_at: datetime | None = None, git_commit: str | None = None,
                  stage: str | None = None, incident_id: str | None = None) -> dict[str, Any]:
    """Emit START and COMPLETE for one training run. ``datasets``: ``{path, sha256, signature?, ...}``;
    ``model_record``: the model's signature record (``artifact_sha256`` too). Returns ``{emitted, run_id,
    transport, error}``; never raises."""
    cfg = transport_config()
    if cfg is None:
        return {"emitted": 0, "transport": "off", "run_id": None, "error": None}
    try:
        from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
        from openlineage.client.uuid import generate_new_uuid

        Integrity, Training, AirflowCtx = _facet_classes()
        ol_run = str(generate_new_uuid(started_at))
        run_facets: dict[str, Any] = {"aiirTraining": Training(model=model, version=version, recipe=recipe,
                                                               mlflowRunId=run_id, gitCommit=git_commit,
                                                               stage=stage, incidentId=incident_id,
                                                               producer=PRODUCER)}
        if os.environ.get("AIRFLOW_CTX_DAG_ID"):
            run_facets["aiirAirflow"] = AirflowCtx(dagId=os.environ.get("AIRFLOW_CTX_DAG_ID"),
                                                   dagRunId=os.environ.get("AIRFLOW_CTX_DAG_RUN_ID"),
                                                   taskId=os.environ.get("AIRFLOW_CTX_TASK_ID"),
                                                   tryNumber=os.environ.get("AIRFLOW_CTX_TRY_NUMBER"),
                                                   producer=PRODUCER)
        inputs = []
        for d in datasets:
            p = Path(d["path"])
            inputs.append(InputDataset(namespace="file", name=str(p.resolve()), facets={
                "aiirIntegrity": Integrity(sha256=d.get("sha256"), size=p.stat().st_size if p.exists() else None,
                                           kind="dataset", signature=d.get("signature"),
                                           signatureSha256=d.get("signature_sha256"),
                                           signingKeyId=d.get("key_id"), signatureMethod=d.get("method"),
                                           producer=PRODUCER)}))
        outputs = []
        if version is not None:
            mr = model_record or {}
            outputs.append(OutputDataset(namespace="mlflow", name=f"models:/{model}/{version}", facets={
                "aiirIntegrity": Integrity(sha256=mr.get("artifact_sha256"), kind="model",
                                           signature=mr.get("signature"), signatureSha256=mr.get("signature_sha256"),
                                           signingKeyId=mr.get("key_id"), signatureMethod=mr.get("method"),
                                           producer=PRODUCER)}))
        job = Job(namespace=NAMESPACE, name=f"train.{model}")
        client = _client(cfg)
        client.emit(RunEvent(eventType=RunState.START, eventTime=_iso(started_at), run=Run(runId=ol_run,
                             facets=run_facets), job=job, inputs=inputs, producer=PRODUCER))
        client.emit(RunEvent(eventType=RunState.COMPLETE, eventTime=_iso(ended_at), run=Run(runId=ol_run,
                             facets=run_facets), job=job, inputs=inputs, outputs=outputs, producer=PRODUCER))
        where = cfg.get("url") or cfg.get("log_file_path")
        return {"emitted": 2, "transport": cfg["type"], "where": where, "run_id": ol_run, "error": None}
    except Exception as exc:  # noqa: BLE001 — lineage is an export; it must not fail training
        return {"emitted": 0, "transport": cfg["type"], "run_id": None, "error": f"{type(exc).__name__}: {exc}"[:300]}
