"""MLflow model versions for the gateway: alias resolution, lazy loading with a cache, artifact digests.

MLflow is imported inside these functions only (it costs ~2 s). A loaded version keeps the pyfunc
model, the raw flavor model (for ``predict_proba``), the input signature and the artifact digest
(:func:`aiir.hashing.tree_digest` of the version's local artifact folder, computed once per version).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiir.gateway.scoring import ColumnSpec, InputSchema


class UnknownVersion(LookupError):
    """The registry has no such version (or alias)."""


@dataclass
class LoadedVersion:
    model: str
    version: str
    local_path: str
    digest: str
    schema: InputSchema
    pyfunc: Any
    raw: Any = None
    proba: bool = False
    classes: list[Any] | None = None
    run_id: str | None = None
    load_seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)
    signature: str = ""  # aiir.models.FileCheck.signature: "verified", or what an escape hatch let through
    check_seconds: float = 0.0  # hashing the files + digest + signature check, before unpickling

    def predict(self, df) -> tuple[list[Any], list[float] | None]:
        """Predictions and, when the model has ``predict_proba``, scores (binary: P(classes_[1]),
        otherwise the top-class probability). Predictions are then ``classes_[argmax]``."""
        if self.proba:
            p = self.raw.predict_proba(df)
            idx = p.argmax(axis=1)
            classes = self.classes
            preds = [classes[i] for i in idx.tolist()] if classes is not None else idx.tolist()
            scores = (p[:, 1] if p.shape[1] == 2 else p.max(axis=1)).tolist()
            return preds, scores
        out = self.pyfunc.predict(df)
        if hasattr(out, "tolist"):
            out = out.tolist()
        elif hasattr(out, "to_dict"):
            out = out.to_dict(orient="records")
        if not isinstance(out, list):
            out = [out]
        return out, None

    def info(self) -> dict[str, Any]:
        return {"version": self.version, "artifact_digest": self.digest, "run_id": self.run_id,
                "proba": self.proba, "inputs": self.schema.describe(), "load_seconds": round(self.load_seconds, 3),
                "signature": self.signature, "check_seconds": round(self.check_seconds, 4)}


def _schema_from(pyfunc: Any, raw: Any, max_rows: int) -> InputSchema:
    try:
        sig = pyfunc.metadata.get_input_schema()
    except Exception:
        sig = None
    if sig is not None and getattr(sig, "has_input_names", lambda: False)():
        specs = []
        for col in sig.inputs:
            t = getattr(col, "type", None)
            dtype = getattr(t, "name", None) or "any"
            specs.append(ColumnSpec(name=col.name, dtype=str(dtype),
                                    required=bool(getattr(col, "required", True))))
        return InputSchema(specs, max_rows=max_rows)
    names = getattr(raw, "feature_names_in_", None)
    if names is not None:
        return InputSchema([ColumnSpec(str(n), "double") for n in names], max_rows=max_rows)
    return InputSchema(None, max_rows=max_rows)


class ModelStore:
    """Versions of one registered model. ``get`` loads once per version (thread-safe) and caches."""

    def __init__(self, name: str, tracking_uri: str, *, max_rows: int = 10_000):
        self.name = name
        self.tracking_uri = tracking_uri
        self.max_rows = max_rows
        self._cache: dict[str, LoadedVersion] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._client = None

    def client(self):
        if self._client is None:
            import mlflow
            from mlflow import MlflowClient

            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def resolve_alias(self, alias: str) -> str | None:
        """Version behind ``alias`` now, or None when the alias (or the model) does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client().get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None
        return str(mv.version)

    def model_exists(self) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client().get_registered_model(self.name)
        except MlflowException:
            return False
        return True

    def exists(self, version: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client().get_model_version(self.name, str(version))
        except MlflowException:
            return False
        return True

    def cached(self) -> dict[str, LoadedVersion]:
        return dict(self._cache)

    def peek(self, version: str) -> LoadedVersion | None:
        return self._cache.get(version)

    def get(self, version: str) -> LoadedVersion:
        version = str(version)
        lv = self._cache.get(version)
        if lv is not None:
            return lv
        with self._guard:
            lock = self._locks.setdefault(version, threading.Lock())
        with lock:
            lv = self._cache.get(version)
            if lv is None:
                lv = self._load(version)
                self._cache[version] = lv
        return lv

    def _load(self, version: str) -> LoadedVersion:
        import mlflow
        from mlflow.exceptions import MlflowException

        t0 = time.perf_counter()
        client = self.client()
        try:
            mv = client.get_model_version(self.name, version)
        except MlflowException as exc:
            raise UnknownVersion(f"model '{self.name}' has no version '{version}' "
                                 f"({str(exc).splitlines()[0][:200]})") from None
        from aiir.models import verify_model_files

        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{self.name}/{version}",
                                                    tracking_uri=self.tracking_uri)
        # the recorded digest and signature are checked before anything is unpickled (aiir.models, IntegrityError)
        check = verify_model_files(local, dict(mv.tags or {}), what=f"model artifact of {self.name} v{version}")
        digest = check.digest
        pyfunc = mlflow.pyfunc.load_model(local)
        raw = None
        try:
            raw = pyfunc.get_raw_model()
        except Exception:
            raw = None
        proba = False
        classes = None
        if raw is not None and callable(getattr(raw, "predict_proba", None)):
            proba = True
            cl = getattr(raw, "classes_", None)
            classes = cl.tolist() if cl is not None and hasattr(cl, "tolist") else None
        return LoadedVersion(model=self.name, version=version, local_path=str(local), digest=digest,
                             schema=_schema_from(pyfunc, raw, self.max_rows), pyfunc=pyfunc, raw=raw,
                             proba=proba, classes=classes, run_id=getattr(mv, "run_id", None),
                             load_seconds=time.perf_counter() - t0, signature=check.signature,
                             check_seconds=check.seconds)
