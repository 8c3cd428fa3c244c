"""MLflow lineage and registry, plus the hash-chained alias log MLflow does not keep.

MLflow records which datasets a run consumed (``mlflow.log_input``) and which alias points where *now*,
but not who moved an alias, when, or why. Every alias change aiir makes goes through :func:`set_alias`,
which appends an entry to ``registry-log.jsonl``; each entry carries the SHA-256 of the previous one, so
an edited or deleted line breaks :func:`verify_alias_log`.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiir import config
from aiir.errors import BadInput, IntegrityError
from aiir.hashing import sha256_bytes, sha256_file, tree_digest

if TYPE_CHECKING:
    import pandas as pd

EXPERIMENT = "aiir"
GENESIS = "0" * 64
CHAMPION = "champion"
LAST_KNOWN_GOOD = "last-known-good"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def client():
    """An MlflowClient on aiir's tracking store; creates the experiment with aiir's artifact root."""
    import mlflow
    from mlflow.tracking import MlflowClient

    p = config.paths().ensure()
    uri = p.mlflow_tracking_uri
    # mlflow.set_*_uri also export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI into os.environ, which would
    # then outrank AIIR_HOME for every later call and every child process: put the environment back.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if c.get_experiment_by_name(EXPERIMENT) is None:
        try:
            c.create_experiment(EXPERIMENT, artifact_location=p.mlflow_artifacts.as_uri())
        except Exception:  # created concurrently by another process
            if c.get_experiment_by_name(EXPERIMENT) is None:
                raise
    mlflow.set_experiment(EXPERIMENT)
    return c


@dataclass
class ModelVersion:
    name: str
    version: str
    run_id: str
    model_id: str | None
    artifact_dir: Path | None
    tags: dict[str, str]
    aliases: list[str]
    created_ms: int | None = None  # MLflow's creation_timestamp of the version

    def to_dict(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["artifact_dir"] = str(self.artifact_dir) if self.artifact_dir else None
        return d


def _local_path(uri: str) -> Path | None:
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    if uri.startswith("/"):
        return Path(uri)
    return None


def get_version(name: str, version: str | int | None = None, *, alias: str | None = None) -> ModelVersion:
    """A registered version by number or alias, with the local folder of its artifacts."""
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        mv = c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(name, str(version))
    except MlflowException as exc:
        what = f"alias '{alias}'" if alias else f"version '{version}'"
        raise BadInput("model", f"registered model '{name}' has no {what} ({exc.error_code})") from None
    source = mv.source or ""
    model_id = getattr(mv, "model_id", None) or (source[len("models:/"):] if source.startswith("models:/") else None)
    artifact_dir = _local_path(c.get_model_version_download_uri(name, str(mv.version)) or "")
    return ModelVersion(name=name, version=str(mv.version), run_id=mv.run_id, model_id=model_id,
                        artifact_dir=artifact_dir, tags=dict(mv.tags or {}), aliases=list(mv.aliases or []),
                        created_ms=getattr(mv, "creation_timestamp", None))


def resolve_alias(name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def code_version() -> dict[str, Any]:
    """The code that trains: the git commit of this checkout (and whether it had local changes), else
    ``AIIR_CODE_VERSION``, else the package version only."""
    import subprocess

    from aiir import __version__

    out: dict[str, Any] = {"aiir_version": __version__, "commit": None, "dirty": None, "source": None}
    if os.environ.get("AIIR_CODE_VERSION"):
        return {**out, "commit": os.environ["AIIR_CODE_VERSION"], "source": "AIIR_CODE_VERSION"}
    try:
        root = str(config.REPO_ROOT)
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=20)
            out.update(commit=commit.stdout.strip(), dirty=bool(dirty.stdout.strip()) if dirty.returncode == 0
                       else None, source="git")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def log_and_register(model: Any, *, name: str, recipe: str, train: pd.DataFrame, train_files: list[Path],
                     label: str, metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None,
                     description: str = "", validation: dict[str, Any] | None = None,
                     signer: Any | None = None) -> ModelVersion:
    """Log an sklearn model with its training data as MLflow inputs and register a new version.

    The registered version gets tags ``aiir.recipe``, ``aiir.train_files`` (JSON list of path + SHA-256)
    and ``aiir.artifact_sha256`` (digest of the artifact folder), so integrity checks and retraining can
    find everything the version was built from. It is signed (OpenSSF model signing, ``aiir.audit.signing``;
    ``signer`` a :class:`~aiir.audit.signing.SignerSpec`, default from the environment): the artifact folder
    (tag ``aiir.signature``) and every training file (``aiir.train_signatures``). Also recorded: the code
    version (``aiir.git_commit``), the training-time ``validation`` of the data (``aiir.train_validation``),
    and the OpenLineage events emitted (``aiir.lineage``).
    """
    import time as _time
    import warnings

    import mlflow
    from mlflow.models import infer_signature

    from aiir.audit import lineage, signing

    c = client()
    started = datetime.now(UTC)
    digests = [{"path": str(p), "sha256": sha256_file(p)} for p in train_files]
    features = train.drop(columns=[label])
    code = code_version()
    with mlflow.start_run(run_name=f"{name}-{recipe}") as run:
        with warnings.catch_warnings():
            # the dataset's schema describes the training file as it is; MLflow's hint about integer columns
            # concerns serving signatures (the one below declares them as doubles), not this record
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column",
                                    category=UserWarning)
            for f in digests:
                ds = mlflow.data.from_pandas(train, source=f["path"], targets=label,
                                             name=Path(f["path"]).name, digest=f["sha256"][:16])
                mlflow.log_input(ds, context="training")
        mlflow.log_params({"recipe": recipe, "label": label, "train_rows": len(train)})
        if metrics:
            mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.set_tags({"aiir.recipe": recipe, **(tags or {}),
                         **({"aiir.git_commit": code["commit"]} if code["commit"] else {}),
                         "aiir.code_dirty": str(code["dirty"]).lower()})
        # Integer columns are declared as doubles so clients may send 3.0 for 3 (and NaN) without
        # tripping MLflow's schema enforcement.
        sample = features.head(5).astype({c: "float64" for c in features.columns
                                          if str(features[c].dtype).startswith(("int", "uint"))})
        signature = infer_signature(sample, model.predict_proba(sample)[:, 1])
        info = mlflow.sklearn.log_model(model, name="model", signature=signature, input_example=sample,
                                        serialization_format="cloudpickle")
    mv = mlflow.register_model(info.model_uri, name)
    art = get_version(name, mv.version).artifact_dir
    vtags = {"aiir.recipe": recipe, "aiir.label": label, "aiir.train_files": json.dumps(digests),
             "aiir.run_id": run.info.run_id, "aiir.code_version": json.dumps(code), **(tags or {})}
    if code["commit"]:
        vtags["aiir.git_commit"] = code["commit"]
    if validation is not None:
        vtags["aiir.train_validation"] = json.dumps(validation, sort_keys=True, default=str)[:4000]
    model_rec: dict[str, Any] = {}
    t_sign = _time.perf_counter()
    spec = signer or signing.SignerSpec.from_env()
    if art is not None:
        vtags["aiir.artifact_sha256"] = tree_digest(art)
        model_rec = signing.sign_artifact(art, kind="model", name=f"{name}/{mv.version}", spec=spec)
        model_rec["artifact_sha256"] = vtags["aiir.artifact_sha256"]
        vtags["aiir.signature"] = json.dumps({k: model_rec[k] for k in (
            "signature", "signature_sha256", "manifest", "subject_sha256", "method", "key_id")})
    ds_recs = []
    for f in digests:
        r = signing.sign_artifact(Path(f["path"]), kind="dataset", name=Path(f["path"]).name, spec=spec)
        ds_recs.append({"path": f["path"], "sha256": f["sha256"], **{k: r[k] for k in (
            "signature", "signature_sha256", "manifest", "method", "key_id", "reused")}})
    vtags["aiir.train_signatures"] = json.dumps(ds_recs)
    vtags["aiir.signing_seconds"] = f"{_time.perf_counter() - t_sign:.4f}"
    ol = lineage.emit_training(model=name, version=str(mv.version), run_id=run.info.run_id, recipe=recipe,
                               datasets=ds_recs, model_record=model_rec, started_at=started,
                               git_commit=code["commit"], stage=(tags or {}).get("aiir.stage"),
                               incident_id=(tags or {}).get("aiir.incident_id"))
    vtags["aiir.lineage"] = json.dumps(ol)
    for k, v in vtags.items():
        c.set_model_version_tag(name, mv.version, k, v)
    if description:
        c.update_model_version(name, mv.version, description=description)
    return get_version(name, mv.version)


def set_alias(name: str, alias: str, version: str | int, *, reason: str, actor: str | None = None,
              incident_id: str | None = None) -> dict[str, Any]:
    """Move ``alias`` to ``version`` and append the change to the hash-chained registry log.

    Idempotent: when the alias already points at ``version`` nothing is moved and nothing is logged.
    """
    c = client()
    before = resolve_alias(name, alias)
    if before == str(version):
        return {"model": name, "alias": alias, "from_version": before, "to_version": str(version),
                "changed": False}
    c.set_registered_model_alias(name, alias, str(version))
    entry = {
        "at": now_iso(), "actor": actor or _actor(), "host": socket.gethostname(), "model": name,
        "alias": alias, "from_version": before, "to_version": str(version), "reason": reason,
        "incident_id": incident_id,
    }
    _append_chained(config.paths().registry_log, entry)
    return {**entry, "changed": True}


def _actor() -> str:
    return os.environ.get("AIIR_ACTOR") or getpass.getuser()


def _canonical(d: dict[str, Any]) -> bytes:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _append_chained(path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        lines = [ln for ln in fh.read().splitlines() if ln.strip()]
        prev = json.loads(lines[-1])["hash"] if lines else GENESIS
        body = {"seq": len(lines), **entry, "prev": prev}
        body["hash"] = sha256_bytes(_canonical(body))
        fh.seek(0, os.SEEK_END)
        fh.write(json.dumps(body, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return body


def read_alias_log(path: Path | None = None) -> list[dict[str, Any]]:
    path = path or config.paths().registry_log
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def verify_alias_log(path: Path | None = None) -> list[dict[str, Any]]:
    """Raise :class:`IntegrityError` at the first entry whose hash or chain link does not hold."""
    entries = read_alias_log(path)
    prev = GENESIS
    for i, e in enumerate(entries):
        body = {k: v for k, v in e.items() if k != "hash"}
        if e.get("prev") != prev or e.get("seq") != i:
            raise IntegrityError(f"registry log entry {i}: chain broken (an entry was removed or reordered)")
        if sha256_bytes(_canonical(body)) != e.get("hash"):
            raise IntegrityError(f"registry log entry {i}: content changed after it was written")
        prev = e["hash"]
    return entries


def alias_history(name: str, alias: str) -> list[dict[str, Any]]:
    return [e for e in read_alias_log() if e["model"] == name and e["alias"] == alias]


def digests_manifest(versions: list[ModelVersion], data_files: list[Path]) -> dict[str, Any]:
    """The ``--registry`` file of ``aiir check``: every registered data file and model artifact."""
    arts = [{"name": f"{p.parent.name}/{p.name}", "kind": "data", "path": str(p), "sha256": sha256_file(p)} for p in data_files]
    for v in versions:
        if v.artifact_dir is not None:
            arts.append({"name": f"{v.name}/v{v.version}", "kind": "model", "path": str(v.artifact_dir),
                         "sha256": v.tags.get("aiir.artifact_sha256") or tree_digest(v.artifact_dir)})
    return {"generated_at": now_iso(), "artifacts": arts}
