"""The local serving gateway: scoring, decision log, containment state, exports.

Light on purpose: importing :mod:`aiir.gateway` (or its ``decision_log``, ``state``, ``scoring`` and
``exports`` modules) never imports MLflow, Starlette or uvicorn. Those load inside
:func:`aiir.gateway.app.run_server` and :class:`aiir.gateway.models.ModelStore`.

=====================  ===================================================================
module                 what
=====================  ===================================================================
``decision_log``       append-only, hash-chained SQLite decision log; background writer
``exports``            ECS and Splunk HEC events; SageMaker Data Capture import
``scoring``            MLflow scoring formats (JSON and CSV) → validated rows
``state``              containment state (atomic JSON), admin token, admin audit log
``control``            the containment/routing rules behind the admin API
``models``             MLflow alias resolution, lazy version loading, artifact digests
``app``                the Starlette application and ``run_server``
``synthetic``          a tiny MLflow registry for tests and benchmarks
=====================  ===================================================================
"""

from __future__ import annotations

__all__ = ["DECISIONS_FILE", "STATE_FILE", "TOKEN_FILE", "AUDIT_FILE"]

DECISIONS_FILE = "decisions.db"
STATE_FILE = "state.json"
TOKEN_FILE = "admin.token"
AUDIT_FILE = "admin-audit.jsonl"
