"""The one verified model loader: no registered artifact is unpickled before its digest and signature are checked.

Every version aiir registers carries the tag ``aiir.artifact_sha256`` (:func:`artifact_digest` of its
artifact folder at registration) and ``aiir.signature`` (its OpenSSF model-signing signature, written
beside the artifact folder: :mod:`aiir.audit.signing`). :func:`load_verified` finds the version's files
(the store's own folder when local, else a download), hashes every file once, and *before* MLflow reads a
byte of the pickle checks

1. the digest against the tag: a mismatch — or a version with no recorded digest — is an
   :class:`IntegrityError` naming the folder and both digests (``AIIR_ALLOW_UNRECORDED_MODELS=1`` accepts a
   model registered outside aiir, with neither digest nor signature, knowingly);
2. the signature against the trust store ``aiir verify`` uses (aiir's artifact key and
   ``AIIR_ARTIFACT_TRUSTED_KEYS``; ``AIIR_ARTIFACT_TRUST_CHAIN`` for certificate-signed versions): the
   signature file must be the one recorded at registration, its readable manifest must match the signed
   statement, the signing key must be trusted, the signature must verify and every file must have its
   signed SHA-256. Any failure is an IntegrityError naming the version, the file and what failed; no
   setting overrides it. A version with a digest but **no recorded signature** (registered before signing
   existed) is refused too, unless ``AIIR_ALLOW_UNSIGNED_MODELS=1`` (or ``AIIR_ALLOW_UNRECORDED_MODELS=1``);
   ``aiir sign model:NAME/V`` signs it.

The gateway, triage, forensics and retraining all load through here (the gateway's own cache through
:func:`verify_model_files`). MLflow is imported inside the functions only (~2.5 s); the signature check
needs ``cryptography`` only, never model_signing (see :func:`aiir.audit.signing.check_at_load`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiir.errors import BadInput, IntegrityError
from aiir.hashing import sha256_bytes, sha256_tree

DIGEST_TAG = "aiir.artifact_sha256"
# Files MLflow itself writes into a model folder when it is downloaded or loaded through the registry,
# after the digest was recorded; they name the model and version and are never executed.
MLFLOW_LOAD_METADATA = frozenset({"registered_model_meta"})
SIGNATURE_TAG = "aiir.signature"
# Escape hatch for models registered outside aiir (no recorded digest, no signature); never the default.
ALLOW_UNRECORDED_ENV = "AIIR_ALLOW_UNRECORDED_MODELS"
# Escape hatch for versions with a digest but no signature (registered before signing existed); never the default.
ALLOW_UNSIGNED_ENV = "AIIR_ALLOW_UNSIGNED_MODELS"


def _file_digests(root: str | Path) -> dict[str, str]:
    return {k: v for k, v in sha256_tree(root).items() if Path(k).name not in MLFLOW_LOAD_METADATA}


def _tree_digest(tree: dict[str, str]) -> str:
    return sha256_bytes("".join(f"{k}  {v}\n" for k, v in tree.items()).encode())


def artifact_digest(root: str | Path) -> str:
    """One SHA-256 over a model folder's sorted ``path  digest`` lines, minus MLflow's load metadata."""
    return _tree_digest(_file_digests(root))


def _allowed(flag: bool | None, env: str) -> bool:
    return flag if flag is not None else os.environ.get(env) == "1"


def verify_folder(folder: str | Path, expected: str | None, *, what: str,
                  allow_unrecorded: bool | None = None, files: dict[str, str] | None = None) -> str:
    """Digest of ``folder``; IntegrityError when it differs from ``expected`` (or nothing was recorded).
    ``files``: the folder's per-file digests when the caller has them already."""
    digest = _tree_digest(files if files is not None else _file_digests(folder))
    if not expected:
        allowed = _allowed(allow_unrecorded, ALLOW_UNRECORDED_ENV)
        if not allowed:
            raise IntegrityError(f"{folder}: {what} has no recorded artifact digest (tag {DIGEST_TAG}); "
                                 f"not loading an unverifiable model (register it through aiir, or set "
                                 f"{ALLOW_UNRECORDED_ENV}=1 to accept it knowingly)")
        return digest
    if digest != expected:
        raise IntegrityError(f"{folder}: {what} changed since registration (SHA-256 now {digest}, "
                             f"registered {expected}); not loading it")
    return digest


@dataclass
class FileCheck:
    """What :func:`verify_model_files` checked: the digest, and the signature (``signature``: ``verified``,
    or ``unsigned (allowed)`` / ``unrecorded (allowed)`` when an escape hatch let an unsigned version through)."""

    digest: str
    signature: str
    key_id: str | None = None
    seconds: float = 0.0


def verify_model_files(folder: str | Path, tags: dict[str, str], *, what: str,
                       allow_unrecorded: bool | None = None, allow_unsigned: bool | None = None) -> FileCheck:
    """The digest and the signature of the folder about to be loaded, against the version's ``tags``.

    Every file is hashed once; the signature check reuses those digests (``aiir.audit.signing.check_at_load``).
    IntegrityError on any failure (see the module docstring for the rule on unsigned versions)."""
    import json
    import time

    t0 = time.perf_counter()
    files = _file_digests(folder)
    digest = verify_folder(folder, tags.get(DIGEST_TAG), what=what, allow_unrecorded=allow_unrecorded, files=files)
    raw = tags.get(SIGNATURE_TAG)
    if not raw:
        if not tags.get(DIGEST_TAG):  # registered outside aiir and accepted knowingly above
            return FileCheck(digest, "unrecorded (allowed)", seconds=time.perf_counter() - t0)
        if _allowed(allow_unsigned, ALLOW_UNSIGNED_ENV) or _allowed(allow_unrecorded, ALLOW_UNRECORDED_ENV):
            return FileCheck(digest, "unsigned (allowed)", seconds=time.perf_counter() - t0)
        raise IntegrityError(f"{folder}: {what} has no recorded signature (tag {SIGNATURE_TAG}; registered "
                             f"before signing existed?); not loading an unsigned model (sign it with `aiir sign "
                             f"model:NAME/VERSION`, or set {ALLOW_UNSIGNED_ENV}=1 to accept it knowingly)")
    from aiir.audit.signing import LoadCheckFailed, check_at_load

    try:
        record = json.loads(raw)
        if not isinstance(record, dict):
            raise ValueError("not an object")
    except ValueError:
        raise IntegrityError(f"{folder}: {what}: its signature tag {SIGNATURE_TAG} is not readable JSON; "
                             f"not loading it") from None
    try:
        res = check_at_load(folder, files, record)
    except LoadCheckFailed as exc:
        raise IntegrityError(f"{folder}: {what} does not match its signature ({record.get('signature')}): "
                             f"{exc}; not loading it") from None
    except BadInput as exc:  # an unreadable trusted key (AIIR_ARTIFACT_TRUSTED_KEYS names a bad file)
        raise IntegrityError(f"{folder}: {what}: the signature cannot be checked ({exc}); not loading it") from None
    return FileCheck(digest, "verified", key_id=res.get("key_id"), seconds=time.perf_counter() - t0)


@dataclass
class VerifiedModel:
    name: str
    version: str
    path: Path
    digest: str
    pyfunc: Any
    raw: Any
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    signature: str = "verified"

    @property
    def estimator(self) -> Any:
        """The flavour's own model (sklearn estimator) when there is one, else the pyfunc."""
        return self.raw if self.raw is not None else self.pyfunc

    @property
    def feature_names(self) -> list[str] | None:
        names = getattr(self.raw, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
        try:
            sig = self.pyfunc.metadata.get_input_schema()
            return list(sig.input_names()) if sig is not None and sig.has_input_names() else None
        except Exception:
            return None

    @property
    def positive_class(self) -> Any:
        classes = getattr(self.raw, "classes_", None)
        pos = classes[-1] if classes is not None else 1
        return pos.item() if hasattr(pos, "item") else pos

    def predict_proba(self, X) -> Any:
        est = self.estimator
        if not callable(getattr(est, "predict_proba", None)):
            raise BadInput(f"{self.name} v{self.version}", "the model has no predict_proba "
                                                           "(a probabilistic classifier is needed)")
        return est.predict_proba(X)


_CACHE: dict[tuple[str, str, str, str], VerifiedModel] = {}
_LOCK = threading.Lock()


def _client(tracking_uri: str | None):
    if tracking_uri is None:
        from aiir import registry

        return registry.client(), None
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri), tracking_uri


def local_files(name: str, version: str, *, tracking_uri: str | None = None) -> tuple[Path, Any]:
    """``(folder holding the version's files, MLflow ModelVersion)``: the store's folder when it is on this
    machine, else a fresh download."""
    from mlflow.exceptions import MlflowException

    from aiir.registry import _local_path

    client, uri = _client(tracking_uri)
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise BadInput("model", f"registered model '{name}' has no version '{version}' "
                                f"({str(exc).splitlines()[0][:200]})") from None
    local = _local_path(client.get_model_version_download_uri(name, str(mv.version)) or "")
    if local is None or not local.is_dir():
        import mlflow

        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}",
                                                         tracking_uri=uri))
    return local, mv


def load_verified(name: str, version: str | int, *, tracking_uri: str | None = None,
                  allow_unrecorded: bool | None = None, allow_unsigned: bool | None = None,
                  cache: bool = True) -> VerifiedModel:
    """Load a registered version after checking its artifact digest and its signature (module docstring)."""
    import mlflow

    version = str(version)
    local, mv = local_files(name, version, tracking_uri=tracking_uri)
    tags = dict(mv.tags or {})
    check = verify_model_files(local, tags, what=f"model artifact of {name} v{version}",
                               allow_unrecorded=allow_unrecorded, allow_unsigned=allow_unsigned)
    digest = check.digest
    key = (tracking_uri or mlflow.get_tracking_uri(), name, version, digest)
    with _LOCK:
        if cache and key in _CACHE:
            return _CACHE[key]
    try:
        pyfunc = mlflow.pyfunc.load_model(str(local))
    except Exception as exc:
        raise BadInput(f"{name} v{version}", f"cannot load the model ({type(exc).__name__}: "
                                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    try:
        raw = pyfunc.get_raw_model()
    except Exception:
        raw = None
    vm = VerifiedModel(name=name, version=version, path=local, digest=digest, pyfunc=pyfunc, raw=raw,
                       run_id=getattr(mv, "run_id", None), tags=tags,
                       signature=check.signature)
    if cache:
        with _LOCK:
            _CACHE[key] = vm
    return vm
