"""Decision audit trace and integrity proof (no Airflow import).

=================  ==========================================================================
module             what
=================  ==========================================================================
``signing``        OpenSSF model signing (``model-signing``) of model versions and datasets:
                   key-based (aiir's ECDSA P-256 key) or certificate-based (a user's PKI)
``integrity``      ``aiir verify`` for models and datasets; the scheduled re-verification
``trace``          ``aiir trace``: one decision → model, training, data, promotion, serving,
                   incidents; the audit package sealed as an evidence bundle
``accesslog``      the hash-chained log of every trace (who traced which decision, when)
``fieldcrypt``     optional AES-GCM field-level encryption of logged input features
``lineage``        OpenLineage events of training runs (file or HTTP transport)
=================  ==========================================================================

See ``docs/audit.md``.
"""

from __future__ import annotations
