"""Nearest neighbours and DBSCAN assignment served by the real server (subprocess, loopback port), one server for the
module, queried with tensorwire's client and with tritonclient."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from sklearn.cluster import DBSCAN
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors, RadiusNeighborsClassifier, RadiusNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import tensorwire
from tensorwire.client import InferenceClient, InferenceServerError

from .conftest import RunningServer, start_server, stop_server

triton = pytest.importorskip("tritonclient.grpc", reason="tritonclient is installed by .ci/run")
from tritonclient.utils import InferenceServerException  # noqa: E402


@dataclass
class Served:
    server: RunningServer
    models: dict[str, Any]
    X: np.ndarray


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    y = np.array(["a", "b", "c"], dtype=object)[rng.integers(0, 3, 300)]
    models: dict[str, Any] = {
        "knn": (KNeighborsClassifier(5, weights="distance").fit(X, y), "float64"),
        "nn": (NearestNeighbors(n_neighbors=3, metric="manhattan").fit(X), "float32"),
        "knn_cosine": (KNeighborsClassifier(4, metric="cosine").fit(X, y), "float64"),
        "radius": (make_pipeline(StandardScaler(), RadiusNeighborsClassifier(radius=3.0, weights="distance")).fit(X * 4 + 1, y), "float64"),
        "radius_reg": (RadiusNeighborsRegressor(radius=1.5, metric="chebyshev").fit(X, X[:, 0] - X[:, 1]), "float32"),
        "dbscan": (DBSCAN(eps=0.9, min_samples=4).fit(X), "float64"),
    }
    repository = tmp_path_factory.mktemp("models")
    for name, (model, dtype) in models.items():
        tensorwire.export(model, repository / name / "1", dtype=dtype)
    server = start_server(repository, tmp_path_factory.mktemp("logs") / "server.log", "--workers", "1")
    try:
        with InferenceClient(server.url) as client:
            deadline = time.monotonic() + 60
            while not all(client.model_ready(name) for name in models):
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)
        yield Served(server, {name: model for name, (model, _) in models.items()}, X)
    finally:
        stop_server(server)


def dbscan_rule(db: DBSCAN, Q: np.ndarray) -> np.ndarray:
    """The nearest core sample's label within eps, else -1, by scikit-learn's NearestNeighbors."""
    distances, indices = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(db.components_).kneighbors(Q)
    return np.where(distances[:, 0] <= db.eps, db.labels_[db.core_sample_indices_][indices[:, 0]], -1)


def test_sdk_answers_match_sklearn(served: Served) -> None:
    m = served.models
    rng = np.random.default_rng(1)
    Q = rng.normal(size=(41, 5))
    with InferenceClient(served.server.url) as client:
        got = client.infer("knn", Q)
        assert [label.decode() for label in got["predict"]] == list(m["knn"].predict(Q))
        np.testing.assert_allclose(got["predict_proba"], m["knn"].predict_proba(Q), rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(got["indices"], m["knn"].kneighbors(Q)[1])
        rows = Q.astype(np.float32)
        got = client.infer("nn", rows)
        ref_d, ref_i = m["nn"].kneighbors(rows.astype(np.float64))
        np.testing.assert_array_equal(got["indices"], ref_i)
        np.testing.assert_allclose(got["distances"], ref_d, rtol=1e-5, atol=1e-6)
        got = client.infer("knn_cosine", Q)
        ref_d, ref_i = m["knn_cosine"].kneighbors(Q)
        np.testing.assert_array_equal(got["indices"], ref_i)
        np.testing.assert_allclose(got["distances"], ref_d, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got["predict_proba"], m["knn_cosine"].predict_proba(Q), rtol=1e-9, atol=1e-12)
        Qr = Q * 4 + 1
        got = client.infer("radius", Qr)
        assert [label.decode() for label in got["predict"]] == list(m["radius"].predict(Qr))
        np.testing.assert_allclose(got["predict_proba"], m["radius"].predict_proba(Qr), rtol=1e-9, atol=1e-12)
        far = np.concatenate([rows, np.full((1, 5), 9.0, dtype=np.float32)])
        got = client.infer("radius_reg", far)
        with pytest.warns(UserWarning, match="predicting NaN"):
            ref = m["radius_reg"].predict(far.astype(np.float64))
        assert np.isnan(got["predict"][-1]) and np.isnan(ref[-1])
        np.testing.assert_allclose(got["predict"], ref, rtol=1e-5, atol=1e-6)
        got = client.infer("dbscan", Q)
        assert got["predict"].dtype == np.int64
        np.testing.assert_array_equal(got["predict"], dbscan_rule(m["dbscan"], Q))


def test_a_row_without_neighbours_is_invalid_argument_naming_it(served: Served) -> None:
    Q = np.concatenate([served.X[:3] * 4 + 1, np.full((1, 5), 500.0), served.X[3:5] * 4 + 1])
    with pytest.raises(ValueError, match="No neighbors found"):
        served.models["radius"].predict(Q)
    with InferenceClient(served.server.url) as client:
        with pytest.raises(InferenceServerError, match=r"row\(s\) 3 have no training row within radius 3.0") as info:
            client.infer("radius", Q)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert client.infer("radius", Q[:3])["predict_proba"].shape == (3, 3)  # the model serves on


def test_tritonclient_classifier_and_dbscan(served: Served) -> None:
    m = served.models
    Q = np.random.default_rng(2).normal(size=(17, 5))
    client = triton.InferenceServerClient(served.server.url)
    try:
        inp = triton.InferInput("input", list(Q.shape), "FP64")
        inp.set_data_from_numpy(Q)
        result = client.infer("knn", [inp], outputs=[triton.InferRequestedOutput("predict"), triton.InferRequestedOutput("predict_proba")])
        np.testing.assert_allclose(result.as_numpy("predict_proba"), m["knn"].predict_proba(Q), rtol=1e-9, atol=1e-12)
        assert [label.decode() for label in result.as_numpy("predict")] == list(m["knn"].predict(Q))
        result = client.infer("dbscan", [inp], outputs=[triton.InferRequestedOutput("predict")])
        labels = result.as_numpy("predict")
        expect = dbscan_rule(m["dbscan"], Q)
        assert labels.dtype == np.int64 and len(set(expect)) >= 2
        np.testing.assert_array_equal(labels, expect)
        far = np.full((1, 5), 500.0)
        inp = triton.InferInput("input", list(far.shape), "FP64")
        inp.set_data_from_numpy(far)
        with pytest.raises(InferenceServerException, match="no training row within radius"):
            client.infer("radius", [inp])
    finally:
        client.close()


def test_metadata_declares_the_outputs(served: Served) -> None:
    client = triton.InferenceServerClient(served.server.url)
    try:
        outputs = {t.name: (t.datatype, list(t.shape)) for t in client.get_model_metadata("dbscan").outputs}
        assert outputs == {"predict": ("INT64", [-1])}
        outputs = {t.name: (t.datatype, list(t.shape)) for t in client.get_model_metadata("radius").outputs}
        assert outputs == {"predict": ("BYTES", [-1]), "predict_proba": ("FP64", [-1, 3])}
    finally:
        client.close()
