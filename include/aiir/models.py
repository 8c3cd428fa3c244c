"""The one verified model loader: no registered artifact is unpickled before its digest is checked.

Every version aiir registers carries the tag ``aiir.artifact_sha256`` (:func:`artifact_digest` of its
artifact folder at registration). :func:`load_verified` finds the version's files (the store's own folder
when local, else a download), recomputes the digest and compares it with the tag *before* MLflow reads a
byte of the pickle; a mismatch — or a version with no recorded digest — is an :class:`IntegrityError`
naming the folder and both digests. The gateway, triage, forensics and retraining all load through here.

MLflow is imported inside the functions only (~2.5 s).
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
# Escape hatch for models registered outside aiir (no recorded digest); never the default.
ALLOW_UNRECORDED_ENV = "AIIR_ALLOW_UNRECORDED_MODELS"


def artifact_digest(root: str | Path) -> str:
    """One SHA-256 over a model folder's sorted ``path  digest`` lines, minus MLflow's load metadata."""
    tree = {k: v for k, v in sha256_tree(root).items() if Path(k).name not in MLFLOW_LOAD_METADATA}
    return sha256_bytes("".join(f"{k}  {v}\n" for k, v in tree.items()).encode())


def verify_folder(folder: str | Path, expected: str | None, *, what: str,
                  allow_unrecorded: bool | None = None) -> str:
    """Digest of ``folder``; IntegrityError when it differs from ``expected`` (or nothing was recorded)."""
    digest = artifact_digest(folder)
    if not expected:
        allowed = allow_unrecorded if allow_unrecorded is not None else os.environ.get(ALLOW_UNRECORDED_ENV) == "1"
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
class VerifiedModel:
    name: str
    version: str
    path: Path
    digest: str
    pyfunc: Any
    raw: Any
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

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
                  allow_unrecorded: bool | None = None, cache: bool = True) -> VerifiedModel:
    """Load a registered version after checking its artifact digest against the recorded one."""
    import mlflow

    version = str(version)
    local, mv = local_files(name, version, tracking_uri=tracking_uri)
    tags = dict(mv.tags or {})
    digest = verify_folder(local, tags.get(DIGEST_TAG), what=f"model artifact of {name} v{version}",
                           allow_unrecorded=allow_unrecorded)
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
                       run_id=getattr(mv, "run_id", None), tags=tags)
    if cache:
        with _LOCK:
            _CACHE[key] = vm
    return vm
