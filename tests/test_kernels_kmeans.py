"""k-means kernels against scikit-learn (KMeans, MiniBatchKMeans) and against hand-computed cases.

Distances must agree within 1e-9 relative plus 1e-12 absolute (1e-5 and 1e-6 for
models fitted on float32, which scikit-learn scores in float32); labels must be
identical except where the two nearest centres are within that tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.preprocessing import StandardScaler

from tensorwire.kernels import kmeans

TOLERANCE = {np.dtype(np.float64): (1e-9, 1e-12), np.dtype(np.float32): (1e-5, 1e-6)}


def _readonly(a: np.ndarray) -> np.ndarray:
    """The array as a request delivers it: a read-only np.frombuffer view."""
    a = np.ascontiguousarray(a)
    return np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)


def _affine(n_features: int, shift=None, scale=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.zeros(n_features) if shift is None else np.asarray(shift, dtype=np.float64),
        np.ones(n_features) if scale is None else np.asarray(scale, dtype=np.float64),
        np.zeros(n_features),
    )


def _score(model, X: np.ndarray, shift=None, scale=None, parallel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(labels, distances) from the kernels, parameters taken straight from cluster_centers_."""
    centers_t, sq_norms = kmeans.kmeans_params(model.cluster_centers_)
    affine = _affine(X.shape[1], shift, scale)
    labels = np.empty(X.shape[0], dtype=np.int64)
    distances = np.empty((X.shape[0], centers_t.shape[1]))
    predict = kmeans.kmeans_predict_parallel if parallel else kmeans.kmeans_predict
    transform = kmeans.kmeans_transform_parallel if parallel else kmeans.kmeans_transform
    predict(X, *affine, centers_t, sq_norms, labels)
    transform(X, *affine, centers_t, sq_norms, distances)
    return labels, distances


def _assert_parity(labels: np.ndarray, distances: np.ndarray, ref_labels: np.ndarray, ref_distances: np.ndarray,
                   X: np.ndarray, centres: np.ndarray, dtype) -> None:
    rtol, atol = TOLERANCE[np.dtype(dtype)]
    # Both sides compute |x|^2 - 2 x.c + |c|^2, whose rounding is eps (|x|^2 + |c|^2), not eps |x - c|^2: near a
    # centre the distance itself is noise of size sqrt(eps) |x| on both sides, so squared distances are compared,
    # with that rounding added to the absolute tolerance.
    eps = float(np.finfo(dtype).eps)
    norms = np.einsum("ij,ij->i", X, X)[:, None] + np.einsum("ij,ij->i", centres, centres)[None, :]
    ours_sq = distances.astype(np.float64) ** 2
    ref_sq = ref_distances.astype(np.float64) ** 2
    tol = atol + rtol * ref_sq + 8 * eps * norms
    assert np.all(np.abs(ours_sq - ref_sq) <= tol), float(np.max(np.abs(ours_sq - ref_sq) - tol))
    np.testing.assert_allclose(distances[ref_sq > 1e-3 * norms], ref_distances[ref_sq > 1e-3 * norms], rtol=rtol, atol=atol)
    # A label may differ only where the two nearest centres are within tolerance of each other.
    order = np.argsort(ref_sq, axis=1)
    first = np.take_along_axis(ref_sq, order[:, :1], axis=1)[:, 0]
    second = np.take_along_axis(ref_sq, order[:, 1:2], axis=1)[:, 0]
    near_tie = second - first <= 2 * np.take_along_axis(tol, order[:, 1:2], axis=1)[:, 0]
    differ = labels != ref_labels
    assert not np.any(differ & ~near_tie), np.flatnonzero(differ & ~near_tie)[:10]
    assert near_tie.sum() <= max(2, 0.01 * len(labels))


def _blobs(n_rows: int, n_features: int, n_centers: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(n_centers, n_features))
    return centres[rng.integers(0, n_centers, n_rows)] + rng.normal(size=(n_rows, n_features))


def test_hand_two_centres_and_exact_tie() -> None:
    model = type("Fitted", (), {"cluster_centers_": np.array([[0.0, 0.0], [10.0, 0.0]])})()
    X = np.array([[1.0, 0.0], [9.0, 0.0], [5.0, 0.0], [5.0, 3.0]])
    labels, distances = _score(model, X)
    np.testing.assert_array_equal(labels, [0, 1, 0, 0])  # an exact tie goes to the first centre, as in scikit-learn
    np.testing.assert_allclose(distances, [[1, 9], [9, 1], [5, 5], [np.sqrt(34), np.sqrt(34)]], rtol=1e-15)


@pytest.mark.parametrize("estimator", [KMeans, MiniBatchKMeans])
@pytest.mark.parametrize("fit_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(5, 3), (30, 8), (3, 17)])
def test_parity_with_sklearn(estimator, fit_dtype, shape: tuple[int, int]) -> None:
    n_features, n_centers = shape
    X = _blobs(1200, n_features, n_centers, seed=n_features).astype(fit_dtype)
    kwargs = {"batch_size": 256, "max_iter": 10} if estimator is MiniBatchKMeans else {}
    model = estimator(n_clusters=n_centers, n_init=1, random_state=0, **kwargs).fit(X)
    for n_rows in (1, 7, 3001):
        Xt = _readonly(_blobs(n_rows, n_features, n_centers, seed=100 + n_rows).astype(fit_dtype))
        labels, distances = _score(model, Xt)
        _assert_parity(labels, distances, model.predict(Xt), model.transform(Xt), Xt.astype(np.float64), model.cluster_centers_, fit_dtype)


def test_float32_rows_on_float64_model() -> None:
    X = _blobs(800, 6, 5, seed=3)
    model = KMeans(5, n_init=1, random_state=0).fit(X)
    Xt = _readonly(_blobs(500, 6, 5, seed=4).astype(np.float32))
    labels, distances = _score(model, Xt)
    # scikit-learn's own predict rejects float32 rows on a float64 model (a Cython buffer mismatch): cast for it.
    X64 = Xt.astype(np.float64)
    _assert_parity(labels, distances, model.predict(X64), model.transform(X64), X64, model.cluster_centers_, np.float64)


def test_duplicated_rows_and_centres_as_rows() -> None:
    X = _blobs(600, 4, 6, seed=5)
    model = KMeans(6, n_init=1, random_state=0).fit(X)
    Xt = np.repeat(np.concatenate([X[:20], model.cluster_centers_]), 9, axis=0)
    labels, distances = _score(model, Xt)
    _assert_parity(labels, distances, model.predict(Xt), model.transform(Xt), Xt, model.cluster_centers_, np.float64)
    assert np.all(labels.reshape(-1, 9) == labels[::9, None])


def test_fused_scaler_extreme_feature_scales() -> None:
    scales = np.array([1e-6, 1e-3, 1.0, 1e4, 1e8])
    offsets = np.array([3.0, -2e3, 0.5, 1e7, -5e12])
    X_raw = _blobs(900, 5, 4, seed=6) * scales + offsets
    scaler = StandardScaler().fit(X_raw)
    model = KMeans(4, n_init=1, random_state=0).fit(scaler.transform(X_raw))
    Xt_raw = _readonly(_blobs(2500, 5, 4, seed=7) * scales + offsets)
    labels, distances = _score(model, Xt_raw, shift=scaler.mean_, scale=1.0 / scaler.scale_)
    Xt = scaler.transform(Xt_raw)
    _assert_parity(labels, distances, model.predict(Xt), model.transform(Xt), Xt, model.cluster_centers_, np.float64)


def test_parallel_variants_match_serial() -> None:
    X = _blobs(1000, 9, 7, seed=8)
    model = KMeans(7, n_init=1, random_state=0).fit(X)
    Xt = _readonly(_blobs(5000, 9, 7, seed=9))
    serial = _score(model, Xt)
    parallel = _score(model, Xt, parallel=True)
    np.testing.assert_array_equal(parallel[0], serial[0])
    np.testing.assert_allclose(parallel[1], serial[1], rtol=1e-15, atol=1e-15)


def test_kernels_are_dispatchers_with_the_config_options() -> None:
    from numba.core.registry import CPUDispatcher

    from tensorwire.kernels import config

    dispatchers = {name: f for name, f in vars(kmeans).items() if isinstance(f, CPUDispatcher)}
    assert {"kmeans_predict", "kmeans_predict_parallel", "kmeans_transform", "kmeans_transform_parallel"} <= set(dispatchers)
    for name, dispatcher in dispatchers.items():
        assert dispatcher.targetoptions.get("nogil") is config.NOGIL, name
        assert dispatcher.targetoptions.get("fastmath", False) is config.FASTMATH, name
        assert dispatcher.targetoptions.get("parallel", False) is name.endswith("_parallel"), name
        assert type(dispatcher._cache).__name__ != "NullCache", f"{name} is not cached"
