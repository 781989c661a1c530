"""Nearest neighbours served by the real server (subprocess, loopback port), queried with tensorwire's client."""

from __future__ import annotations

import pathlib
import time
from typing import Any

import numpy as np
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

import tensorwire
from tensorwire.client import InferenceClient


def test_neighbors_served(tmp_path: pathlib.Path, start_tensorwire: Any) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    y = np.array(["a", "b", "c"], dtype=object)[rng.integers(0, 3, 300)]
    clf = KNeighborsClassifier(5, weights="distance").fit(X, y)
    nn = NearestNeighbors(n_neighbors=3, metric="manhattan").fit(X)
    repository = tmp_path / "models"
    tensorwire.export(clf, repository / "knn" / "1", dtype="float64")
    tensorwire.export(nn, repository / "nn" / "1", dtype="float32")
    server = start_tensorwire(repository, "--workers", "1")
    Q = rng.normal(size=(41, 5))
    with InferenceClient(server.url) as client:
        deadline = time.monotonic() + 60
        while not all(client.model_ready(name) for name in ("knn", "nn")):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        got = client.infer("knn", Q)
        assert [label.decode() for label in got["predict"]] == list(clf.predict(Q))
        np.testing.assert_allclose(got["predict_proba"], clf.predict_proba(Q), rtol=1e-9, atol=1e-12)
        ref_d, ref_i = clf.kneighbors(Q)
        np.testing.assert_array_equal(got["indices"], ref_i)
        rows = Q.astype(np.float32)
        got = client.infer("nn", rows)
        ref_d, ref_i = nn.kneighbors(rows.astype(np.float64))
        np.testing.assert_array_equal(got["indices"], ref_i)
        np.testing.assert_allclose(got["distances"], ref_d, rtol=1e-5, atol=1e-6)
