"""A tiny, self-contained MLflow registry for the gateway's tests and benchmark.

Independent of the demo bootstrap: logistic regressions on synthetic data (pandas input, so the
signature names the columns), registered as versions 1..n of one model with aliases
``last-known-good`` → 1 and ``champion`` → 2.

Run as a script to build one: ``python -m aiir.gateway.synthetic DIR [NAME]`` prints a JSON description
(tracking URI, versions, feature names).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

FEATURES = ["amount", "merchant_risk", "hour", "distance_km", "card_age_days", "n_tx_24h"]


def synthetic_frame(n: int = 400, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "amount": rng.lognormal(3.5, 1.0, n).round(2),
        "merchant_risk": rng.uniform(0, 1, n).round(4),
        "hour": rng.integers(0, 24, n).astype(float),
        "distance_km": rng.exponential(20, n).round(2),
        "card_age_days": rng.integers(1, 3000, n).astype(float),
        "n_tx_24h": rng.poisson(3, n).astype(float),
    })
    logit = (0.012 * X.amount + 3.0 * X.merchant_risk + 0.02 * X.distance_km - 0.001 * X.card_age_days
             + 0.2 * X.n_tx_24h - 3.0)
    y = (rng.uniform(0, 1, n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def build_store(root: str | Path, name: str = "gw-test", *, versions: int = 3) -> dict[str, Any]:
    """Create ``root/mlflow.db`` + ``root/artifacts`` with ``versions`` versions of ``name``."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_REGISTRY_URI"] = uri  # an inherited registry URI would send the versions elsewhere
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp_name = f"{name}-training"
    exp = client.get_experiment_by_name(exp_name)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        exp_name, artifact_location=(root / "artifacts").as_uri())
    X, y = synthetic_frame()
    from aiir.audit.signing import load_or_create_artifact_key, public_pem

    key_path = root / "keys" / "artifact_ecdsa_p256.pem"
    trusted = root / "keys" / "artifact_ecdsa_p256.pub.pem"
    trusted.parent.mkdir(parents=True, exist_ok=True)
    trusted.write_bytes(public_pem(load_or_create_artifact_key(key_path)))
    out = []
    for i in range(versions):
        # v1 and v2 differ a little; v3 is deliberately very different (strong regularisation + shift)
        C = [1.0, 0.3, 0.001][i % 3]
        m = LogisticRegression(C=C, max_iter=500).fit(X, y if i < 2 else 1 - y)
        with mlflow.start_run(experiment_id=exp_id):
            info = mlflow.sklearn.log_model(m, name="model", signature=infer_signature(X, m.predict(X)),
                                            registered_model_name=name,
                                            # explicit requirements: skips MLflow's slow inference step
                                            pip_requirements=["scikit-learn", "pandas", "numpy"])
        v = str(info.registered_model_version)
        # record the artifact digest and sign the version as aiir's registration does: the verified loader
        # refuses models without either. The store has its own signing key (root/keys): a gateway on it trusts
        # its public half (AIIR_ARTIFACT_TRUSTED_KEYS=<trusted_key> of the JSON this prints).
        from aiir.audit.integrity import sign_version
        from aiir.audit.signing import SignerSpec
        from aiir.models import DIGEST_TAG, artifact_digest
        from aiir.registry import _local_path

        art = _local_path(client.get_model_version_download_uri(name, v) or "")
        client.set_model_version_tag(name, v, DIGEST_TAG, artifact_digest(art))
        sign_version(client, name, v, art, spec=SignerSpec(key_path=key_path))
        out.append(v)
    client.set_registered_model_alias(name, "last-known-good", out[0])
    if len(out) > 1:
        client.set_registered_model_alias(name, "champion", out[1])
    return {"tracking_uri": uri, "name": name, "versions": out, "features": FEATURES, "trusted_key": str(trusted),
            "signing_key": str(key_path),
            "aliases": {"last-known-good": out[0], "champion": out[1] if len(out) > 1 else None}}


if __name__ == "__main__":
    print(json.dumps(build_store(sys.argv[1], *(sys.argv[2:3] or []))))
