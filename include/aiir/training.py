"""Training recipes. A model records the recipe it was built with, so recovery retrains the same way.

A recipe is a named, versioned function ``(X, y) -> fitted sklearn estimator``. Retraining after an
incident looks up the replaced model's ``aiir.recipe`` tag and calls the same recipe on clean data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiir.errors import BadInput

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Recipe:
    name: str
    label: str
    drop: tuple[str, ...]  # columns never used as features (provenance, ids)
    build: Callable[[list[str], list[str]], Any]
    description: str

    def features(self, df: pd.DataFrame) -> pd.DataFrame:
        return df.drop(columns=[c for c in (self.label, *self.drop) if c in df.columns])

    def fit(self, df: pd.DataFrame):
        if self.label not in df.columns:
            raise BadInput("training data", f"label column '{self.label}' missing")
        X = self.features(df)
        cats = [c for c in X.columns if X[c].dtype == object or str(X[c].dtype) in ("category", "string")]
        nums = [c for c in X.columns if c not in cats]
        model = self.build(cats, nums)
        model.fit(X, df[self.label].astype(int))
        return model


def _hgb(cats: list[str], nums: list[str]):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    pre = ColumnTransformer(
        [("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), cats),
         ("num", "passthrough", nums)],
        verbose_feature_names_out=False,
    )
    clf = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.08, max_leaf_nodes=31, random_state=0,
        categorical_features=list(range(len(cats))),
    )
    return Pipeline([("pre", pre), ("clf", clf)])


def _logreg(cats: list[str], nums: list[str]):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), cats),
                             ("num", StandardScaler(), nums)])
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=2000, C=1.0))])


RECIPES: dict[str, Recipe] = {
    "fraud-hgb-v1": Recipe("fraud-hgb-v1", "is_fraud", ("source", "batch"), _hgb,
                           "HistGradientBoosting, ordinal-encoded merchant category, 200 rounds"),
    "cancer-logreg-v1": Recipe("cancer-logreg-v1", "benign", (), _logreg,
                               "standardised logistic regression"),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise BadInput("recipe", f"unknown training recipe '{name}' (known: {', '.join(RECIPES)})") from None


def evaluate(model, df: pd.DataFrame, recipe: Recipe, *, threshold: float = 0.5) -> dict[str, float]:
    """Precision, recall, F1 and ROC-AUC of ``model`` on labelled ``df``."""
    import numpy as np
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    X = recipe.features(df)
    y = df[recipe.label].astype(int).to_numpy()
    score = model.predict_proba(X)[:, 1]
    pred = (score >= threshold).astype(int)
    out = {
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "rows": int(len(y)),
        "positives": int(y.sum()),
    }
    out["roc_auc"] = float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")
    out["mean_score"] = float(np.mean(score))
    return out
