"""A real `tensorwire serve` answers for tree models like the libraries that trained them, through our client and tritonclient.

One server (module-scoped, 2 workers) serves a scikit-learn forest with string labels, a
HistGradientBoosting model fitted with missing values, a GradientBoosting regressor (which
refuses NaN, as scikit-learn does), and XGBoost and LightGBM models exported from their own
files with `tensorwire export FILE DIR` (no pickle, no trust flag).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingClassifier, RandomForestClassifier

import tensorwire
from tensorwire.client import InferenceClient, InferenceServerError

from .conftest import RunningServer, start_server, stop_server

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient is installed by .ci/run")


@dataclass
class Served:
    name: str
    predict: Any  # rows -> the library's outputs, by output name
    dtype: Any


def _rows(n: int, seed: int) -> np.ndarray:
    X, _ = make_classification(n, 8, n_informative=5, n_classes=3, n_clusters_per_class=1, random_state=seed)
    return X


@pytest.fixture(scope="module")
def trees_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, dict[str, Served]]]:
    root = tmp_path_factory.mktemp("trees")
    repository = root / "models"
    X, y = make_classification(400, 8, n_informative=5, n_classes=3, n_clusters_per_class=1, random_state=0)
    labels = np.array(["low", "mid", "high"], dtype=object)[y]
    served: dict[str, Served] = {}

    forest = RandomForestClassifier(20, max_depth=8, random_state=0).fit(X, labels)
    tensorwire.export(forest, repository / "forest" / "1", dtype="float32")
    served["forest"] = Served("forest", lambda R: {"predict": forest.predict(R), "predict_proba": forest.predict_proba(R)}, np.float32)

    X_missing = X.copy()
    X_missing[::7, 2] = np.nan
    hgb = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X_missing, y)
    tensorwire.export(hgb, repository / "hgb" / "1", dtype="float64")
    served["hgb"] = Served("hgb", lambda R: {"predict": hgb.predict(R), "predict_proba": hgb.predict_proba(R), "decision_function": hgb.decision_function(R)}, np.float64)

    gbr = GradientBoostingRegressor(n_estimators=30, random_state=0).fit(X, X[:, 0] * 3 + y)
    tensorwire.export(gbr, repository / "gbr" / "1", dtype="float64")
    served["gbr"] = Served("gbr", lambda R: {"predict": gbr.predict(R)}, np.float64)

    booster = xgboost.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 4}, xgboost.DMatrix(X_missing, label=y), num_boost_round=20)
    booster.save_model(str(root / "model.json"))
    _export_file(root / "model.json", repository / "xgb" / "1", "--dtype", "float32")
    served["xgb"] = Served("xgb", lambda R: {"predict_proba": booster.predict(xgboost.DMatrix(R))}, np.float32)

    lgbm = lightgbm.train({"objective": "binary", "verbose": -1, "num_leaves": 15}, lightgbm.Dataset(X_missing, label=(y == 1).astype(int)), num_boost_round=25)
    lgbm.save_model(str(root / "model.txt"))
    _export_file(root / "model.txt", repository / "lgbm" / "1", "--from", "lightgbm", "--dtype", "float64")
    served["lgbm"] = Served("lgbm", lambda R: {"decision_function": lgbm.predict(R, raw_score=True)}, np.float64)

    server = start_server(repository, root / "server.log", "--workers", "2")
    with InferenceClient(server.url) as client:
        deadline = time.monotonic() + 120
        while not all(client.model_ready(name) for name in served):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
    try:
        yield server, served
    finally:
        stop_server(server)


def _export_file(model_file: pathlib.Path, version_dir: pathlib.Path, *extra: str) -> None:
    done = subprocess.run([sys.executable, "-m", "tensorwire", "export", str(model_file), str(version_dir), *extra], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _assert_matches(name: str, got: np.ndarray, expected: Any, dtype: Any) -> None:
    expected = np.asarray(expected)
    if expected.dtype.kind in "OUSbiu":  # labels: identical
        assert [v.decode() if isinstance(v, bytes) else v for v in got.tolist()] == expected.tolist()
    else:
        rtol, atol = (1e-5, 1e-6) if np.dtype(dtype) == np.float32 else (1e-9, 1e-12)
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ["forest", "hgb", "gbr", "xgb", "lgbm"])
def test_our_client_gets_the_libraries_answers(trees_server: tuple[RunningServer, dict[str, Served]], name: str) -> None:
    server, served = trees_server
    model = served[name]
    for batch in (1, 7, 300):
        R = _rows(batch, seed=batch).astype(model.dtype)
        with InferenceClient(server.url) as client:
            got = client.infer(name, R)
        for output, expected in model.predict(R).items():
            _assert_matches(output, got[output], expected, model.dtype)


@pytest.mark.parametrize("name", ["hgb", "xgb", "lgbm"])
def test_nan_is_accepted_where_the_model_learned_missing_values(trees_server: tuple[RunningServer, dict[str, Served]], name: str) -> None:
    server, served = trees_server
    model = served[name]
    R = _rows(50, seed=5).astype(model.dtype)
    R[::3, 2] = np.nan
    R[1::5, 4] = np.nan
    with InferenceClient(server.url) as client:
        got = client.infer(name, R)
    for output, expected in model.predict(R).items():
        _assert_matches(output, got[output], expected, model.dtype)


def test_nan_is_refused_where_the_library_refuses_it(trees_server: tuple[RunningServer, dict[str, Served]]) -> None:
    server, _ = trees_server
    R = _rows(4, seed=1)
    R[2, 3] = np.nan
    with InferenceClient(server.url) as client, pytest.raises(InferenceServerError) as caught:
        client.infer("gbr", R)
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert "row 2 holds NaN" in str(caught.value)
    with InferenceClient(server.url) as client:  # the server is unharmed
        assert client.infer("gbr", R[:2])["predict"].shape == (2,)


def test_tritonclient_scores_a_tree_model(trees_server: tuple[RunningServer, dict[str, Served]]) -> None:
    server, served = trees_server
    R = _rows(16, seed=3).astype(np.float32)
    client = grpcclient.InferenceServerClient(server.url)
    try:
        metadata = client.get_model_metadata("forest")
        assert {o.name for o in metadata.outputs} == {"predict", "predict_proba", "contributions"}
        inp = grpcclient.InferInput("input", list(R.shape), "FP32")
        inp.set_data_from_numpy(R)
        result = client.infer("forest", [inp], outputs=[grpcclient.InferRequestedOutput("predict_proba"), grpcclient.InferRequestedOutput("predict")])
        expected = served["forest"].predict(R)
        np.testing.assert_allclose(result.as_numpy("predict_proba"), expected["predict_proba"], rtol=1e-5, atol=1e-6)
        assert [v.decode() for v in result.as_numpy("predict").tolist()] == expected["predict"].tolist()
    finally:
        client.close()
