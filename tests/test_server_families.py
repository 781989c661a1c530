"""A real `tensorwire serve` answers for a kernel SVM, k-means and a PCA pipeline like scikit-learn, through our client."""

from __future__ import annotations

import pathlib
import time
import warnings
from typing import Any

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import tensorwire
from tensorwire.client import InferenceClient

pytestmark = pytest.mark.filterwarnings("ignore")  # SVC(probability=True) is deprecated in scikit-learn 1.9, still supported


def test_svc_kmeans_and_pca_pipeline_served(tmp_path: pathlib.Path, start_tensorwire: Any) -> None:
    X, y = make_classification(240, 6, n_informative=4, n_classes=3, n_clusters_per_class=1, random_state=0)
    labels = np.array(["red", "green", "blue"], dtype=object)[y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        svc = SVC(probability=True, random_state=0).fit(X, labels)
    kmeans = KMeans(4, n_init=1, random_state=0).fit(X)
    pca = make_pipeline(StandardScaler(), PCA(3, whiten=True)).fit(X * 50 + 7)
    repository = tmp_path / "models"
    tensorwire.export(svc, repository / "svc" / "1", dtype="float64")
    tensorwire.export(kmeans, repository / "kmeans" / "1", dtype="float64")
    tensorwire.export(pca, repository / "pca" / "1", dtype="float32")
    # One worker: with several, a connection may land on one still loading its models after another said ready.
    server = start_tensorwire(repository, "--workers", "1")
    X_query = X[:37] + 0.1
    with InferenceClient(server.url) as client:
        deadline = time.monotonic() + 60
        while not all(client.model_ready(name) for name in ("svc", "kmeans", "pca")):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        got = client.infer("svc", X_query)
        assert set(got) == {"predict", "decision_function", "predict_proba"}
        assert [label.decode() for label in got["predict"]] == list(svc.predict(X_query))
        np.testing.assert_allclose(got["decision_function"], svc.decision_function(X_query), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got["predict_proba"], svc.predict_proba(X_query), rtol=1e-9, atol=1e-11)

        got = client.infer("kmeans", X_query)
        np.testing.assert_array_equal(got["predict"], kmeans.predict(X_query))
        np.testing.assert_allclose(got["transform"], kmeans.transform(X_query), rtol=1e-9, atol=1e-12)
        assert list(client.infer("kmeans", X_query[:1], outputs=["predict"])) == ["predict"]

        rows = (X_query * 50 + 7).astype(np.float32)
        got = client.infer("pca", rows)
        assert got["transform"].dtype == np.float32
        np.testing.assert_allclose(got["transform"], pca.transform(rows.astype(np.float64)), rtol=1e-5, atol=1e-6)

        metadata = client.model_metadata("svc")
        assert {o.name: list(o.shape) for o in metadata.outputs} == {
            "predict": [-1], "decision_function": [-1, 3], "predict_proba": [-1, 3]}
