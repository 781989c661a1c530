"""MLPClassifier / MLPRegressor (kind "mlp"): export -> load -> score against scikit-learn, fp32 and fp64."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import tensorwire
from tensorwire.server.modeling.registry import build_scorer
from tensorwire.server.repository.model_format import load_model

RNG = np.random.default_rng(7)
X = RNG.normal(size=(120, 5)) * 3.0
Y_MULTI = np.digitize(X[:, 0] + X[:, 1], [-2.0, 2.0])
Y_BIN = np.where(X[:, 2] > 0, "yes", "no")
Y_LABELS = (X[:, :3] > 0).astype(int)
Y_REG = X @ RNG.normal(size=5)
Y_REG2 = np.column_stack((Y_REG, X[:, 0] ** 2))


def _fit(model, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


def _scorer(model, tmp_path, dtype: str):
    stored = load_model(tensorwire.export(model, tmp_path / dtype / "1", dtype=dtype))
    return build_scorer(stored.manifest, stored.arrays)


CASES = [
    (MLPClassifier(hidden_layer_sizes=(7,), activation=act, max_iter=50, random_state=0), Y_MULTI)
    for act in ("identity", "logistic", "tanh", "relu")
] + [
    (MLPClassifier(hidden_layer_sizes=(6, 4), max_iter=50, random_state=1), Y_BIN),
    (MLPClassifier(hidden_layer_sizes=(5, 4, 3), activation="tanh", max_iter=50, random_state=2), Y_LABELS),
    (MLPRegressor(hidden_layer_sizes=(8,), activation="logistic", max_iter=50, random_state=3), Y_REG),
    (MLPRegressor(hidden_layer_sizes=(8, 8), max_iter=50, random_state=4), Y_REG2),
    (make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(9,), max_iter=50, random_state=5)), Y_MULTI),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_mlp_matches_sklearn(case, dtype, tmp_path):
    model, y = CASES[case]
    model = _fit(model, y)
    scorer = _scorer(model, tmp_path, dtype)
    rtol = 1e-5 if dtype == "float32" else 1e-9
    for n in (1, 3, 40, 120):
        Xq = np.vstack([X, X * 1e3, np.zeros((1, 5))])[: n if n < 120 else None].astype(dtype)
        outputs = [o.name for o in scorer.manifest.outputs]
        got = dict(zip(outputs, scorer.score(Xq, outputs)))
        expect = model.predict(Xq)
        assert got["predict"].shape == expect.shape
        if got["predict"].dtype.kind == "O":
            assert [v.decode() for v in got["predict"]] == list(expect)
        elif got["predict"].dtype.kind == "f":
            np.testing.assert_allclose(got["predict"], expect, rtol=rtol, atol=rtol)
        else:
            np.testing.assert_array_equal(got["predict"], expect)
        if "predict_proba" in got:
            np.testing.assert_allclose(got["predict_proba"], model.predict_proba(Xq), rtol=rtol, atol=rtol)



def test_mlp_served(tmp_path, start_tensorwire):
    """A real server answers like scikit-learn through our client and tritonclient, and refuses NaN and infinity."""
    import tritonclient.grpc as triton

    from tensorwire.client import InferenceClient, InferenceServerError

    clf = _fit(MLPClassifier(hidden_layer_sizes=(6, 5), max_iter=50, random_state=0), Y_BIN)
    reg = _fit(MLPRegressor(hidden_layer_sizes=(6,), max_iter=50, random_state=0), Y_REG2)
    repository = tmp_path / "models"
    tensorwire.export(clf, repository / "clf" / "1", dtype="float64")
    tensorwire.export(reg, repository / "reg" / "1", dtype="float32")
    server = start_tensorwire(repository, "--workers", "1")
    Xq = X[:17] + 0.1
    with InferenceClient(server.url) as client:
        deadline = time.monotonic() + 60
        while not all(client.model_ready(name) for name in ("clf", "reg")):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        got = client.infer("clf", Xq)
        assert [v.decode() for v in got["predict"]] == list(clf.predict(Xq))
        np.testing.assert_allclose(got["predict_proba"], clf.predict_proba(Xq), rtol=1e-9, atol=1e-12)
        rows = Xq.astype(np.float32)
        got = client.infer("reg", rows)
        assert got["predict"].dtype == np.float32
        np.testing.assert_allclose(got["predict"], reg.predict(rows), rtol=1e-5, atol=1e-5)
        for bad in (np.nan, np.inf):
            broken = Xq.copy()
            broken[3, 1] = bad
            with pytest.raises(InferenceServerError, match="(?i)nan|infin"):
                client.infer("clf", broken)
    triton_client = triton.InferenceServerClient(server.url.removeprefix("grpc://"))
    inp = triton.InferInput("input", list(Xq.shape), "FP64")
    inp.set_data_from_numpy(Xq)
    result = triton_client.infer("clf", [inp], outputs=[triton.InferRequestedOutput("predict_proba")])
    np.testing.assert_allclose(result.as_numpy("predict_proba"), clf.predict_proba(Xq), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", [1, 5, 7])
def test_mlp_large_batch_blas_path(case, tmp_path):
    model, y = CASES[case]
    model = _fit(model, y)
    scorer = _scorer(model, tmp_path, "float64")
    Xq = np.vstack([X] * 6)  # 720 rows: the BLAS path
    got = scorer.score(Xq, [o.name for o in scorer.manifest.outputs])
    expect = model.predict_proba(Xq) if hasattr(model, "predict_proba") else model.predict(Xq)
    np.testing.assert_allclose(got[-1], expect, rtol=1e-9, atol=1e-9)
