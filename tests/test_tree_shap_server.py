"""A real `tensorwire serve` answers `contributions` (TreeSHAP) for tree models when a request names it, and only then.

One server (module-scoped) serves a scikit-learn forest classifier ([-1, classes, F + 1]),
an XGBoost binary model exported from its JSON file ([-1, F + 1]) and a LightGBM multiclass
model; the references are shap.TreeExplainer, XGBoost's pred_contribs and LightGBM's pred_contrib.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import shap
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

import tensorwire
from tensorwire.client import InferenceClient

from .conftest import RunningServer, start_server, stop_server

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient is installed by .ci/run")

N_FEATURES = 8
Reference = Callable[[np.ndarray], np.ndarray]  # rows -> contributions as tensorwire lays them out


def _rows(n: int, seed: int) -> np.ndarray:
    X, _ = make_classification(n, N_FEATURES, n_informative=5, n_classes=3, n_clusters_per_class=1, random_state=seed)
    return X


@pytest.fixture(scope="module")
def shap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, dict[str, Reference]]]:
    root = tmp_path_factory.mktemp("tree_shap")
    repository = root / "models"
    X, y = make_classification(400, N_FEATURES, n_informative=5, n_classes=3, n_clusters_per_class=1, random_state=0)
    X_missing = X.copy()
    X_missing[::7, 2] = np.nan
    references: dict[str, Reference] = {}

    forest = RandomForestClassifier(15, max_depth=6, random_state=0).fit(X, y)
    tensorwire.export(forest, repository / "forest" / "1", dtype="float64")
    explainer = shap.TreeExplainer(forest)
    references["forest"] = lambda R: np.concatenate(
        [np.asarray(explainer.shap_values(R)).transpose(0, 2, 1), np.broadcast_to(np.asarray(explainer.expected_value)[None, :, None], (R.shape[0], 3, 1))], axis=2
    )

    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 4}, xgboost.DMatrix(X_missing, label=(y == 1).astype(int)), num_boost_round=20)
    booster.save_model(str(root / "model.json"))
    done = subprocess.run([sys.executable, "-m", "tensorwire", "export", str(root / "model.json"), str(repository / "xgb" / "1"), "--dtype", "float32"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    references["xgb"] = lambda R: booster.predict(xgboost.DMatrix(R), pred_contribs=True)

    lgbm = lightgbm.train({"objective": "multiclass", "num_class": 3, "verbose": -1, "num_leaves": 15}, lightgbm.Dataset(X_missing, label=y), num_boost_round=15)
    tensorwire.export(lgbm, repository / "lgbm" / "1", dtype="float64")
    references["lgbm"] = lambda R: np.asarray(lgbm.predict(R, pred_contrib=True)).reshape(R.shape[0], 3, N_FEATURES + 1)

    server = start_server(repository, root / "server.log", "--workers", "1")
    with InferenceClient(server.url) as client:
        deadline = time.monotonic() + 120
        while not all(client.model_ready(name) for name in references):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
    try:
        yield server, references
    finally:
        stop_server(server)


DTYPES = {"forest": np.float64, "xgb": np.float32, "lgbm": np.float64}
SHAPES = {"forest": [-1, 3, N_FEATURES + 1], "xgb": [-1, N_FEATURES + 1], "lgbm": [-1, 3, N_FEATURES + 1]}


def _assert_close(got: np.ndarray, expected: Any) -> None:
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected.sum(axis=-1)).max()))  # the largest absolute raw score
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("name", ["forest", "xgb", "lgbm"])
def test_our_client_gets_contributions_when_it_names_them(shap_server: tuple[RunningServer, dict[str, Reference]], name: str) -> None:
    server, references = shap_server
    with InferenceClient(server.url) as client:
        for batch in (1, 7, 300):
            R = _rows(batch, seed=batch).astype(DTYPES[name])
            if name != "forest":
                R[::3, 2] = np.nan
            got = client.infer(name, R, outputs=["contributions"])
            assert list(got) == ["contributions"]
            assert got["contributions"].dtype == DTYPES[name]
            _assert_close(got["contributions"], references[name](R))


def test_contributions_come_beside_other_outputs_and_sum_to_the_margin(shap_server: tuple[RunningServer, dict[str, Reference]]) -> None:
    server, _ = shap_server
    R = _rows(20, seed=4)
    with InferenceClient(server.url) as client:
        got = client.infer("lgbm", R, outputs=["predict_proba", "contributions"])
    margins = got["contributions"].sum(axis=2)
    softmax = np.exp(margins - margins.max(axis=1, keepdims=True))
    np.testing.assert_allclose(got["predict_proba"], softmax / softmax.sum(axis=1, keepdims=True), rtol=1e-9, atol=1e-12)


def test_a_request_naming_no_outputs_does_not_get_them(shap_server: tuple[RunningServer, dict[str, Reference]]) -> None:
    server, _ = shap_server
    with InferenceClient(server.url) as client:
        for name in DTYPES:
            got = client.infer(name, _rows(3, seed=1).astype(DTYPES[name]))
            assert "contributions" not in got and got
            metadata = client.model_metadata(name)
            outputs = {o.name: list(o.shape) for o in metadata.outputs}
            assert outputs["contributions"] == SHAPES[name]


def test_tritonclient_asks_for_contributions(shap_server: tuple[RunningServer, dict[str, Reference]]) -> None:
    server, references = shap_server
    R = _rows(16, seed=3)
    client = grpcclient.InferenceServerClient(server.url)
    try:
        metadata = client.get_model_metadata("forest")
        assert {o.name: list(o.shape) for o in metadata.outputs}["contributions"] == SHAPES["forest"]
        inp = grpcclient.InferInput("input", list(R.shape), "FP64")
        inp.set_data_from_numpy(R)
        result = client.infer("forest", [inp], outputs=[grpcclient.InferRequestedOutput("contributions")])
        _assert_close(result.as_numpy("contributions"), references["forest"](R))
        plain = client.infer("forest", [inp])
        assert plain.as_numpy("contributions") is None and plain.as_numpy("predict_proba") is not None
    finally:
        client.close()

