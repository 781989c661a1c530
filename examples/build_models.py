"""Fit and export the example models served by the quick start (deterministic; no download).

    python examples/build_models.py [OUTPUT_DIR]     # default: examples/models

The data sets ship inside scikit-learn, so this runs offline. The resulting
repository is committed, so the quick start needs no training step.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

import tensorwire

HERE = pathlib.Path(__file__).resolve().parent


def build(root: pathlib.Path) -> None:
    iris = load_iris()
    flower_names = np.asarray(iris.target_names)[iris.target]  # string labels come back as BYTES
    iris_model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(iris.data, flower_names)
    # each model keeps its training rows' profile (background=): drift metrics for every example, and the
    # mean a linear model's contributions need where no scaler provides it
    tensorwire.export(iris_model, root / "iris" / "1", dtype="float32", background=iris.data)

    diabetes = load_diabetes()
    tensorwire.export(Ridge(alpha=0.5).fit(diabetes.data, diabetes.target), root / "diabetes" / "1", dtype="float64", background=diabetes.data)

    cancer = load_breast_cancer()
    cancer_model = make_pipeline(StandardScaler(), LinearSVC(C=0.5, random_state=0)).fit(cancer.data, cancer.target)
    tensorwire.export(cancer_model, root / "breast_cancer" / "1", dtype="float32", background=cancer.data)

    wine = load_wine()
    cultivars = np.asarray(wine.target_names)[wine.target]
    wine_model = HistGradientBoostingClassifier(max_iter=50, max_leaf_nodes=15, random_state=0).fit(wine.data, cultivars)
    tensorwire.export(wine_model, root / "wine" / "1", dtype="float32", background=wine.data)


if __name__ == "__main__":
    build(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "models")
