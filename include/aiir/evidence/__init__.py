"""Sealed evidence bundles: write-once copies, a hash-chained custody log, an Ed25519-signed manifest.

    from aiir.evidence import EvidenceStore, load_or_create_signing_key, verify_bundle

    store = EvidenceStore()                      # $AIIR_EVIDENCE_DIR
    b = store.open_bundle("INC-42", actor="alice", context={"dag_id": "...", "run_id": "..."})
    b.add_tree("/models/fraud/7", "model", category="model", description="suspect model v7")
    b.add_file("decisions.parquet", category="decision_log", description="last 24 h of decisions")
    b.seal(load_or_create_signing_key())
    assert verify_bundle(b.path).ok

See ``docs/evidence.md`` for the layout, the manifest, the custody chain and key handling.
"""

from __future__ import annotations

from .bundle import CATEGORIES, FORMAT, Bundle, EvidenceStore, FileRecord
from .keys import (
    default_key_path,
    fingerprint,
    load_or_create_signing_key,
    load_private_key_pem,
    load_public_key,
    public_key_pem,
)
from .verify import VerifyResult, verify_bundle

__all__ = [
    "CATEGORIES", "FORMAT", "Bundle", "EvidenceStore", "FileRecord", "VerifyResult", "default_key_path",
    "fingerprint", "load_or_create_signing_key", "load_private_key_pem", "load_public_key", "public_key_pem",
    "verify_bundle",
]
