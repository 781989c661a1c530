"""Projection kernels against scikit-learn (PCA with and without whiten, TruncatedSVD) and hand-computed cases.

Outputs must agree within 1e-9 relative plus 1e-12 absolute for float64 models
(1e-5 and 1e-6 for models fitted on float32), plus the rounding that both sides
carry for a sum of terms |x_j w_j| (the same allowance for cancellation as the SVM tests).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

from tensorwire.kernels import decomposition

TOLERANCE = {np.dtype(np.float64): (1e-9, 1e-12), np.dtype(np.float32): (1e-5, 1e-6)}


def _readonly(a: np.ndarray) -> np.ndarray:
    """The array as a request delivers it: a read-only np.frombuffer view."""
    a = np.ascontiguousarray(a)
    return np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)


def _project(X: np.ndarray, params: tuple[np.ndarray, np.ndarray, np.ndarray], affine=None, parallel: bool = False) -> np.ndarray:
    components_t, bias, divisor = params
    shift, scale, offset = decomposition.identity_affine(X.shape[1]) if affine is None else affine
    out = np.empty((X.shape[0], components_t.shape[1]))
    fn = decomposition.project_parallel if parallel else decomposition.project
    fn(X, shift, scale, offset, components_t, bias, divisor, out)
    return out


def _assert_close(ours: np.ndarray, ref: np.ndarray, X: np.ndarray, model, dtype) -> None:
    rtol, atol = TOLERANCE[np.dtype(dtype)]
    eps = float(np.finfo(dtype).eps)
    # scikit-learn projects X, then subtracts mean @ components.T: its rounding scales with |X| |W| and |mean| |W|.
    size = np.abs(np.asarray(X, dtype=np.float64)) @ np.abs(model.components_.T).astype(np.float64)
    if hasattr(model, "mean_"):
        size = size + np.abs(model.mean_) @ np.abs(model.components_.T)
        if model.whiten:
            size = size / np.sqrt(model.explained_variance_)
    tol = atol + rtol * np.abs(ref) + 4 * eps * size
    assert np.all(np.abs(ours - ref) <= tol), float(np.max(np.abs(ours - ref) - tol))


def _data(n_rows: int, n_features: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n_features, n_features)) * rng.uniform(0.1, 5.0, n_features)
    return rng.normal(size=(n_rows, n_features)) @ mixing + rng.normal(scale=3.0, size=n_features)


def test_hand_pca_and_whiten() -> None:
    components = np.array([[1.0, 0.0], [0.0, 1.0]])
    mean = np.array([1.0, 2.0])
    X = np.array([[3.0, 5.0], [1.0, 2.0]])
    plain = _project(X, decomposition.pca_params(components, mean, np.array([4.0, 9.0]), whiten=False))
    np.testing.assert_array_equal(plain, [[2.0, 3.0], [0.0, 0.0]])
    white = _project(X, decomposition.pca_params(components, mean, np.array([4.0, 9.0]), whiten=True))
    np.testing.assert_array_equal(white, [[1.0, 1.0], [0.0, 0.0]])
    rotated = _project(np.array([[1.0, 1.0]]), decomposition.truncated_svd_params(np.array([[0.6, 0.8], [-0.8, 0.6]])))
    np.testing.assert_allclose(rotated, [[1.4, -0.2]], rtol=1e-15)


def test_hand_fused_affine() -> None:
    # ((x - shift) * scale + offset) @ I: the pre-scaling alone.
    X = np.array([[10.0, -4.0]])
    affine = (np.array([2.0, -4.0]), np.array([0.5, 3.0]), np.array([1.0, -1.0]))
    out = _project(X, decomposition.truncated_svd_params(np.eye(2)), affine=affine)
    np.testing.assert_array_equal(out, [[5.0, -1.0]])


@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("fit_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(40, 5), (6, 6), (300, 12)])
def test_pca_parity(whiten: bool, fit_dtype, shape: tuple[int, int]) -> None:
    n_features, n_components = shape
    X = _data(800, n_features, seed=n_features).astype(fit_dtype)
    model = PCA(n_components, whiten=whiten, random_state=0).fit(X)
    params = decomposition.pca_params(model.components_, model.mean_, model.explained_variance_, whiten)
    for n_rows in (1, 5, 2049):
        Xt = _readonly(_data(n_rows, n_features, seed=50 + n_rows).astype(fit_dtype))
        _assert_close(_project(Xt, params), model.transform(Xt), Xt, model, fit_dtype)


@pytest.mark.parametrize("fit_dtype", [np.float64, np.float32])
def test_truncated_svd_parity(fit_dtype) -> None:
    X = np.abs(_data(600, 30, seed=1)).astype(fit_dtype)
    model = TruncatedSVD(7, random_state=0).fit(X)
    params = decomposition.truncated_svd_params(model.components_)
    for n_rows in (1, 3, 1500):
        Xt = _readonly(np.abs(_data(n_rows, 30, seed=n_rows)).astype(fit_dtype))
        _assert_close(_project(Xt, params), model.transform(Xt), Xt, model, fit_dtype)


def test_float32_rows_on_float64_model_and_duplicates() -> None:
    X = _data(500, 8, seed=2)
    model = PCA(4, whiten=True).fit(X)
    params = decomposition.pca_params(model.components_, model.mean_, model.explained_variance_, True)
    Xt = np.repeat(_data(50, 8, seed=3), 7, axis=0).astype(np.float32)
    ours = _project(_readonly(Xt), params)
    _assert_close(ours, model.transform(Xt), Xt, model, np.float64)
    np.testing.assert_allclose(ours.reshape(50, 7, -1), np.broadcast_to(ours[::7, None, :], (50, 7, 4)), rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("scaler", [StandardScaler, MinMaxScaler, MaxAbsScaler])
def test_fused_scaler_extreme_feature_scales(scaler) -> None:
    scales = np.array([1e-6, 1e-2, 1.0, 1e3, 1e6, 1e9])
    offsets = np.array([0.0, 4e2, -1.0, 3e6, 0.0, 2e12])
    X = _data(700, 6, seed=4) * scales + offsets
    pipe = make_pipeline(scaler(), PCA(3, whiten=True)).fit(X)
    fitted, model = pipe[0], pipe[1]
    if scaler is StandardScaler:
        affine = (fitted.mean_, 1.0 / fitted.scale_, np.zeros(6))
    elif scaler is MinMaxScaler:
        affine = (np.zeros(6), fitted.scale_, fitted.min_)
    else:
        affine = (np.zeros(6), 1.0 / fitted.max_abs_, np.zeros(6))
    params = decomposition.pca_params(model.components_, model.mean_, model.explained_variance_, True)
    Xt = _readonly(_data(1200, 6, seed=5) * scales + offsets)
    _assert_close(_project(Xt, params, affine=affine), pipe.transform(Xt), fitted.transform(Xt), model, np.float64)


def test_parallel_variant_matches_serial() -> None:
    X = _data(400, 10, seed=6)
    model = PCA(5).fit(X)
    params = decomposition.pca_params(model.components_, model.mean_, model.explained_variance_, False)
    Xt = _readonly(_data(5000, 10, seed=7))
    np.testing.assert_allclose(_project(Xt, params, parallel=True), _project(Xt, params), rtol=1e-15, atol=1e-15)


def test_kernels_are_dispatchers_with_the_config_options() -> None:
    from numba.core.registry import CPUDispatcher

    from tensorwire.kernels import config

    dispatchers = {name: f for name, f in vars(decomposition).items() if isinstance(f, CPUDispatcher)}
    assert {"project", "project_parallel", "affine_rows"} <= set(dispatchers)
    for name, dispatcher in dispatchers.items():
        assert dispatcher.targetoptions.get("nogil") is config.NOGIL, name
        assert dispatcher.targetoptions.get("fastmath", False) is config.FASTMATH, name
        assert dispatcher.targetoptions.get("parallel", False) is name.endswith("_parallel"), name
        assert type(dispatcher._cache).__name__ != "NullCache", f"{name} is not cached"
