"""Bootstrap the embedded demo: data, baseline models in MLflow, digests of every artifact.

``bootstrap()`` is idempotent: a second call finds ``$AIIR_HOME/bootstrap.json`` and the registered
models and returns at once. ``nightly_retrain()`` plays the compromise of the demo story — the nightly
pipeline retrains on every arrived batch, poisoned one included, and promotes with no gate.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiir import config, demo, registry, training

FRAUD_MODEL = "fraud-detector"
CANCER_MODEL = "diagnosis-classifier"


def _noop(msg: str) -> None:
    pass


def digests_path() -> Path:
    return config.paths().home / "registry" / "digests.json"


def bootstrap(*, force: bool = False, progress: Callable[[str], None] = _noop) -> dict[str, Any]:
    p = config.paths().ensure()
    marker = p.home / "bootstrap.json"
    if marker.exists() and not force:
        state = json.loads(marker.read_text())
        if registry.resolve_alias(FRAUD_MODEL, registry.CHAMPION):
            progress("already bootstrapped")
            return state

    progress(f"writing demo data under {p.data}")
    files = demo.write_demo_data(p.data)

    progress("training fraud-detector v1 (recipe fraud-hgb-v1) on the reference set")
    fraud_v, metrics = _train_and_register(
        FRAUD_MODEL, "fraud-hgb-v1", [files.fraud_reference], files.fraud_holdout,
        tags={"aiir.stage": "baseline", "aiir.data_batches": "batch_000..batch_003"},
        description="Baseline fraud model trained on the vetted reference batches.")
    progress("training diagnosis-classifier v1 (recipe cancer-logreg-v1) on the breast-cancer set")
    cancer_v, cmetrics = _train_and_register(
        CANCER_MODEL, "cancer-logreg-v1", [files.cancer_reference], files.cancer_holdout,
        tags={"aiir.stage": "baseline"}, description="Baseline diagnosis classifier (sklearn breast cancer).")
    for name, version in ((FRAUD_MODEL, fraud_v.version), (CANCER_MODEL, cancer_v.version)):
        for alias in (registry.CHAMPION, registry.LAST_KNOWN_GOOD):
            registry.set_alias(name, alias, version, reason="bootstrap baseline", actor="aiir-bootstrap")

    write_digests([fraud_v, cancer_v], files)
    write_profiles(files)
    state = {
        "at": registry.now_iso(),
        "data": str(p.data),
        "models": {FRAUD_MODEL: fraud_v.version, CANCER_MODEL: cancer_v.version},
        "metrics": {FRAUD_MODEL: metrics, CANCER_MODEL: cmetrics},
        "digests": str(digests_path()),
        "tracking_uri": p.mlflow_tracking_uri,
    }
    marker.write_text(json.dumps(state, indent=2))
    progress(f"bootstrap done: {FRAUD_MODEL} v{fraud_v.version}, {CANCER_MODEL} v{cancer_v.version}")
    return state


def _train_and_register(name: str, recipe_name: str, train_files: list[Path], holdout: Path, *,
                        tags: dict[str, str], description: str) -> tuple[registry.ModelVersion, dict[str, Any]]:
    """Fit ``recipe_name`` on the concatenated ``train_files``, evaluate on ``holdout``, register."""
    import pandas as pd

    recipe = training.get_recipe(recipe_name)
    df = pd.concat([pd.read_parquet(f) for f in train_files], ignore_index=True)
    model = recipe.fit(df)
    metrics = training.evaluate(model, pd.read_parquet(holdout), recipe)
    version = registry.log_and_register(
        model, name=name, recipe=recipe.name, train=df.drop(columns=[c for c in recipe.drop if c in df.columns]),
        train_files=train_files, label=recipe.label, metrics={f"holdout_{k}": v for k, v in metrics.items()},
        tags=tags, description=description)
    return version, metrics


def write_digests(versions: list[registry.ModelVersion], files: demo.DemoFiles) -> Path:
    data_files = [files.fraud_reference, files.fraud_holdout, files.cancer_reference, files.cancer_holdout]
    out = digests_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(registry.digests_manifest(versions, data_files), indent=2))
    return out


def write_profiles(files: demo.DemoFiles) -> Path:
    """Per-model facts the playbooks need: label, recipe, trusted holdout, labelled feedback, reference."""
    out = config.paths().home / "registry" / "models.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        FRAUD_MODEL: {"label": "is_fraud", "recipe": "fraud-hgb-v1", "source_column": "source",
                      "ignore_columns": ["batch"],
                      "reference": str(files.fraud_reference), "holdout": str(files.fraud_holdout),
                      "feedback": str(files.fraud_feedback), "batches": str(files.fraud_batch(0).parent)},
        CANCER_MODEL: {"label": "benign", "recipe": "cancer-logreg-v1", "source_column": None,
                       "reference": str(files.cancer_reference), "holdout": str(files.cancer_holdout),
                       "feedback": str(files.cancer_holdout), "batches": None},
    }, indent=2))
    return out


def nightly_retrain(batches: list[int], *, progress: Callable[[str], None] = _noop) -> registry.ModelVersion:
    """The demo's compromise: retrain on the reference plus every arrived batch and promote, no gate."""
    files = demo.DemoFiles(config.paths().data)
    paths = [files.fraud_reference, *[files.fraud_batch(i) for i in batches]]
    progress(f"nightly retrain on {len(paths)} files: " + ", ".join(p.stem for p in paths))
    v, _ = _train_and_register(
        FRAUD_MODEL, "fraud-hgb-v1", paths, files.fraud_holdout,
        tags={"aiir.stage": "nightly", "aiir.data_batches": ",".join(p.stem for p in paths)},
        description="Nightly retrain on all arrived batches (no promotion gate).")
    registry.set_alias(FRAUD_MODEL, registry.CHAMPION, v.version, reason="nightly retrain, auto-promoted",
                       actor="nightly-pipeline")
    return v
