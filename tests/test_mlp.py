"""MLPClassifier / MLPRegressor (kind "mlp"): export -> load -> score against scikit-learn, fp32 and fp64."""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import tensorwire
from tensorwire.kernels import mlp
from tensorwire.server.modeling.registry import build_scorer
from tensorwire.server.repository.model_format import ModelFormatError, load_model

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
    Xq = np.vstack([X] * 6)  # 720 rows: gemm tiles, the second one partial
    got = scorer.score(Xq, [o.name for o in scorer.manifest.outputs])
    expect = model.predict_proba(Xq) if hasattr(model, "predict_proba") else model.predict(Xq)
    np.testing.assert_allclose(got[-1], expect, rtol=1e-9, atol=1e-9)


# Networks trained on float32 rows: scikit-learn keeps coefs_ float32 and, for float32 rows, computes in float32;
# so does tensorwire for an FP32 model (kernels/mlp.py `compute_dtype`).
X32 = (RNG.normal(size=(mlp.TILE_ROWS + 7, 6)) * 2.0).astype(np.float32)
Y32_MULTI = np.digitize(X32[:, 0] + X32[:, 1], [-1.5, 1.5])
Y32_BIN = (X32[:, 2] > 0.3).astype(int)
Y32_LABELS = (X32[:, :3] > 0).astype(int)
Y32_REG = X32 @ RNG.normal(size=6).astype(np.float32)
Y32_REG2 = np.column_stack((Y32_REG, X32[:, 0] ** 2))
FP32_CASES = [
    (MLPClassifier(hidden_layer_sizes=(20, 9), activation=act, max_iter=40, random_state=0), Y32_MULTI)
    for act in ("identity", "logistic", "tanh", "relu")
] + [
    (MLPClassifier(hidden_layer_sizes=(24,), max_iter=40, random_state=1), Y32_BIN),
    (MLPClassifier(hidden_layer_sizes=(12, 7), activation="logistic", max_iter=40, random_state=2), Y32_LABELS),
    (MLPRegressor(hidden_layer_sizes=(16,), activation="tanh", max_iter=40, random_state=3), Y32_REG),
    (MLPRegressor(hidden_layer_sizes=(16, 16), max_iter=40, random_state=4), Y32_REG2),
    (make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(10,), max_iter=40, random_state=5)), Y32_MULTI),
]
# both sides of the gemm dispatch, and a second (partial) tile
FP32_BATCHES = (1, mlp.BLAS_MIN_ROWS - 1, mlp.BLAS_MIN_ROWS, mlp.TILE_ROWS + 7)


def _fit32(model, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X32, y)


def _scores(model, Xq):
    """scikit-learn's float scores: predict_proba, or predict for a regressor."""
    return model.predict_proba(Xq) if hasattr(model, "predict_proba") else model.predict(Xq)


def _in_float64(model):
    """The same network with float64 coefs_ (and scaler): scikit-learn's float64 forward pass of the float32 weights."""
    model = copy.deepcopy(model)
    net = model[-1] if hasattr(model, "steps") else model
    net.coefs_ = [c.astype(np.float64) for c in net.coefs_]
    net.intercepts_ = [b.astype(np.float64) for b in net.intercepts_]
    return model


@pytest.mark.parametrize("case", range(len(FP32_CASES)))
def test_mlp_fp32_path_matches_sklearn_float32(case, tmp_path):
    """Random rows: within DESIGN.md's FP32 tolerance of scikit-learn's own float32 forward pass, labels identical."""
    model, y = FP32_CASES[case]
    model = _fit32(model, y)
    net = model[-1] if hasattr(model, "steps") else model
    assert all(c.dtype == np.float32 for c in net.coefs_)
    scorer = _scorer(model, tmp_path, "float32")
    assert scorer.compute_dtype is np.float32
    outputs = [o.name for o in scorer.manifest.outputs]
    for n in FP32_BATCHES:
        Xq = X32[:n]
        got = dict(zip(outputs, scorer.score(Xq, outputs)))
        expect = _scores(model, Xq)
        assert expect.dtype == np.float32  # scikit-learn computed in float32 too
        np.testing.assert_allclose(got[outputs[-1]], expect, rtol=1e-5, atol=1e-6)
        if isinstance(net, MLPClassifier):
            labels = model.predict(Xq)
            if labels.ndim == 1 and len(net.classes_) > 2:
                top2 = np.sort(expect, axis=1)[:, -2:]
                clear = top2[:, 1] - top2[:, 0] > 1e-5  # all but near-ties
            else:
                clear = np.all(np.abs(np.asarray(expect).reshape(n, -1) - 0.5) > 1e-5, axis=1)
            np.testing.assert_array_equal(got["predict"][clear], labels[clear])


@pytest.mark.parametrize("case", range(len(FP32_CASES)))
def test_mlp_fp32_path_on_adversarial_rows(case, tmp_path):
    """Rows 1e3 times the training scale (saturated activations, exp underflow) and zeros: no further from the exact
    (float64) forward pass of the same weights than twice scikit-learn's own float32 error, plus DESIGN.md's tolerance."""
    model, y = FP32_CASES[case]
    model = _fit32(model, y)
    scorer = _scorer(model, tmp_path, "float32")
    Xq = np.vstack([X32[:40] * 1e3, X32[:40] * 30.0, np.zeros((3, 6), np.float32)]).astype(np.float32)
    out = [o.name for o in scorer.manifest.outputs][-1]
    got = scorer.score(Xq, [out])[0].astype(np.float64)
    reference = _scores(model, Xq).astype(np.float64)
    exact = _scores(_in_float64(model), Xq.astype(np.float64))
    assert np.all(np.isfinite(got))
    tolerance = 1e-5 * np.abs(exact) + 1e-6
    assert np.max(np.abs(got - exact) - tolerance) <= 2 * np.max(np.abs(reference - exact))


@pytest.mark.parametrize("train_dtype, export_dtype, compute", [
    (np.float32, "float64", np.float64),  # float64 rows: scikit-learn promotes to float64
    (np.float64, "float32", np.float64),  # float64 coefs_: scikit-learn computes in float64 whatever the rows
])
def test_mlp_computes_in_float64_where_sklearn_does(train_dtype, export_dtype, compute, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(hidden_layer_sizes=(20, 9), activation="tanh", max_iter=40, random_state=0).fit(X32.astype(train_dtype), Y32_MULTI)
    scorer = _scorer(model, tmp_path, export_dtype)
    assert scorer.compute_dtype is compute
    rtol, atol = (1e-9, 1e-12) if export_dtype == "float64" else (1e-5, 1e-6)
    for n in FP32_BATCHES:
        Xq = np.vstack([X32, X32 * 1e3])[::-1][:n].astype(export_dtype)
        np.testing.assert_allclose(scorer.score(Xq, ["predict_proba"])[0], model.predict_proba(Xq), rtol=rtol, atol=atol)


def test_mlp_model_file_without_coef_datatype_computes_in_float64(tmp_path):
    """Model files written before coef_datatype existed score as they did: in float64."""
    model = _fit32(MLPClassifier(hidden_layer_sizes=(8,), max_iter=40, random_state=0), Y32_MULTI)
    stored = load_model(tensorwire.export(model, tmp_path / "m" / "1", dtype="float32"))
    assert stored.manifest.params["coef_datatype"] == "FP32"
    params = {k: v for k, v in stored.manifest.params.items() if k != "coef_datatype"}
    scorer = build_scorer(dataclasses.replace(stored.manifest, params=params), stored.arrays)
    assert scorer.compute_dtype is np.float64
    np.testing.assert_allclose(scorer.score(X32, ["predict_proba"])[0], model.predict_proba(X32), rtol=1e-5, atol=1e-6)
    bad = dataclasses.replace(stored.manifest, params={**params, "coef_datatype": "FP16"})
    with pytest.raises(ModelFormatError, match="coef_datatype"):
        build_scorer(bad, stored.arrays)


EDGE_VALUES = np.array([0.0, -0.0, 1e-300, 1e-8, -1e-8, 0.3, -0.3466, 0.35, 2.0, -5.5, 19.0, -19.1, 40.0, -300.0, 709.0, -740.0, 800.0, -1e4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [1, mlp.BLAS_MIN_ROWS + 2])
@pytest.mark.parametrize("name, reference", [
    ("identity", lambda v: v),
    ("relu", lambda v: np.maximum(v, 0)),
    ("logistic", expit),
    ("tanh", np.tanh),
])
def test_dense_layer_activations_at_edge_values(name, reference, rows, dtype):
    """An identity layer isolates the activation: the vectorised exp-based ones against scipy and numpy on values
    near 0, at the polynomial's range ends, where results saturate and where exp underflows."""
    width = EDGE_VALUES.shape[0]
    src = np.tile(EDGE_VALUES, (rows, 1)).astype(dtype)
    src[1:] *= -1.0
    dst = np.empty_like(src)
    mlp.dense_layer(src, np.eye(width, dtype=dtype), np.zeros(width, dtype=dtype), mlp.ACTIVATIONS[name], dst)
    expect = reference(src.astype(np.float64))
    rtol, atol = (1e-9, 1e-12) if dtype == np.float64 else (1e-6, 1e-7)
    np.testing.assert_allclose(dst, expect, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [2, mlp.BLAS_MIN_ROWS + 2])
def test_dense_layer_softmax_at_edge_values(rows, dtype):
    logits = np.array([[0.0, 0.0, 0.0], [1e4, -1e4, 0.0], [-800.0, 0.0, -700.0], [3.0, 3.0 + 1e-7, -2.0], [-1e3, -1e3, -1e3 - 30.0]])
    src = np.resize(logits, (rows, 3)).astype(dtype)
    dst = np.empty_like(src)
    mlp.dense_layer(src, np.eye(3, dtype=dtype), np.zeros(3, dtype=dtype), mlp.SOFTMAX, dst)
    rtol, atol = (1e-9, 1e-12) if dtype == np.float64 else (1e-6, 1e-7)
    np.testing.assert_allclose(dst, softmax(src.astype(np.float64), axis=1), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mlp_rows_in_place_and_copied_agree(dtype, tmp_path):
    """Without pre-scaling the kernel reads C-contiguous rows of the model's precision in place (mlp_forward_direct);
    Fortran-ordered rows, and rows of another precision, go through the copying kernel: same numbers either way."""
    model = _fit32(MLPClassifier(hidden_layer_sizes=(20, 9), max_iter=40, random_state=0), Y32_MULTI)
    scorer = _scorer(model, tmp_path, dtype)
    assert scorer.reads_rows_in_place
    Xq = X32[: mlp.TILE_ROWS + 7].astype(dtype)
    in_place = scorer.score(Xq, ["predict_proba"])[0]
    copied = scorer.score(np.asfortranarray(Xq), ["predict_proba"])[0]
    np.testing.assert_array_equal(in_place, copied)
    np.testing.assert_allclose(in_place, model.predict_proba(Xq), rtol=1e-5 if dtype == "float32" else 1e-9, atol=1e-6 if dtype == "float32" else 1e-12)


# Every hidden activation, a float64-trained (float64 arithmetic) and a float32-trained (float32 arithmetic for float32
# rows) network, at batches on both sides of the gemm dispatch, a whole tile, and several tiles with a partial last one.
TILE_BATCHES = (1, mlp.BLAS_MIN_ROWS - 1, mlp.BLAS_MIN_ROWS, mlp.TILE_ROWS, 2 * mlp.TILE_ROWS + 5)
X_TILES = (RNG.normal(size=(max(TILE_BATCHES), 6)) * 2.0).astype(np.float32)


@pytest.mark.parametrize("train_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_mlp_tiles_match_sklearn_for_every_activation(activation, train_dtype, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(hidden_layer_sizes=(24, 16), activation=activation, max_iter=30, random_state=0).fit(
            X_TILES.astype(train_dtype), np.digitize(X_TILES[:, 0] - X_TILES[:, 3], [-1.0, 1.0])
        )
    for row_dtype in ("float32", "float64"):
        scorer = _scorer(model, tmp_path / row_dtype, row_dtype)
        assert scorer.compute_dtype is (np.float32 if train_dtype is np.float32 and row_dtype == "float32" else np.float64)
        rtol, atol = (1e-9, 1e-12) if row_dtype == "float64" else (1e-5, 1e-6)
        for n in TILE_BATCHES:
            Xq = X_TILES[:n].astype(row_dtype)
            got = scorer.score(Xq, ["predict_proba"])[0]
            np.testing.assert_allclose(got, model.predict_proba(Xq), rtol=rtol, atol=atol, err_msg=f"{row_dtype} rows, batch {n}")
            # rows the kernel copies (Fortran order) score exactly as rows it reads in place
            np.testing.assert_array_equal(scorer.score(np.asfortranarray(Xq), ["predict_proba"])[0], got)
