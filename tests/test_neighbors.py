"""Nearest neighbours (KNeighbors*, NearestNeighbors, RadiusNeighbors*) against scikit-learn, in process.

Exported, loaded and scored as the server does; indices must be identical (the data
here avoid near-ties except exact duplicates, whose order is scikit-learn's: its ArgKmin's
heaps, merged per thread for small batches, and its introsort for the ArgKmin metrics,
numpy's argpartition-then-argsort order for cosine), distances and probabilities within
DESIGN.md's 1e-9 / 1e-12.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors, RadiusNeighborsClassifier, RadiusNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, Normalizer, StandardScaler
from sklearn.utils._sorting import _py_simultaneous_sort
from threadpoolctl import threadpool_limits

from tensorwire.kernels import config, neighbors
from tensorwire.server.errors import InvalidRequestError
from tensorwire.server.modeling.export import export
from tensorwire.server.modeling.registry import build_scorer
from tensorwire.server.repository.model_format import load_model

METRICS = [("euclidean", 2), ("manhattan", 2), ("chebyshev", 2), ("minkowski", 3), ("minkowski", 1.5)]


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)


def _scorer(model, tmp_path, dtype: str = "float64"):
    stored = load_model(export(model, tmp_path / "m" / "1", dtype=dtype))
    return build_scorer(stored.manifest, stored.arrays)


def _data(seed: int, n_train: int, n_query: int, n_features: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_train, n_features))
    return X, rng.integers(0, 3, n_train), rng.normal(size=(n_query, n_features))


@pytest.mark.parametrize("metric,p", METRICS)
@pytest.mark.parametrize("n_rows", [1, 7, 300])
def test_kneighbors_matches_sklearn(tmp_path, metric, p, n_rows):
    X, y, Q = _data(n_rows, 200, n_rows, 5)
    model = NearestNeighbors(n_neighbors=4, metric=metric, p=p, algorithm="brute").fit(X)
    distances, indices = _scorer(model, tmp_path).score(_readonly(Q), ["distances", "indices"])
    ref_d, ref_i = model.kneighbors(Q)
    np.testing.assert_array_equal(indices, ref_i)
    np.testing.assert_allclose(distances, ref_d, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("metric,p", METRICS[:2])
def test_classifier_and_regressor_match_sklearn(tmp_path, weights, metric, p):
    X, y, Q = _data(3, 150, 400, 4)
    labels = np.array(["a", "b", "c"])[y]
    clf = KNeighborsClassifier(5, weights=weights, metric=metric, p=p).fit(X, labels)
    predict, proba = _scorer(clf, tmp_path / "c").score(_readonly(Q), ["predict", "predict_proba"])
    np.testing.assert_allclose(proba, clf.predict_proba(Q), rtol=1e-9, atol=1e-12)
    assert [p.decode() for p in predict] == list(clf.predict(Q))
    reg = KNeighborsRegressor(3, weights=weights, metric=metric, p=p).fit(X, X[:, 0] * 2 + y)
    (pred,) = _scorer(reg, tmp_path / "r").score(_readonly(Q), ["predict"])
    np.testing.assert_allclose(pred, reg.predict(Q), rtol=1e-9, atol=1e-12)


def test_duplicates_and_exact_hits(tmp_path):
    """Duplicated training points tie exactly: scikit-learn keeps the lower index first; a query on a stored point weighs it alone."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 3, size=(20, 3)).astype(np.float64)
    X = np.concatenate([base, base[::-1], base[:5]])
    y = rng.integers(0, 2, X.shape[0])
    Q = np.concatenate([base, rng.integers(0, 3, size=(30, 3)).astype(np.float64) + 0.5])
    nn = NearestNeighbors(n_neighbors=6, algorithm="brute").fit(X)
    distances, indices = _scorer(nn, tmp_path / "n").score(_readonly(Q), ["distances", "indices"])
    ref_d, ref_i = nn.kneighbors(Q)
    np.testing.assert_allclose(distances, ref_d, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(indices, ref_i)
    clf = KNeighborsClassifier(4, weights="distance").fit(X, y)
    predict, proba = _scorer(clf, tmp_path / "c").score(_readonly(Q), ["predict", "predict_proba"])
    np.testing.assert_allclose(proba, clf.predict_proba(Q), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(predict, clf.predict(Q))


def test_float32_and_pipeline(tmp_path):
    X, y, Q = _data(5, 300, 50, 6)
    model = make_pipeline(StandardScaler(), KNeighborsClassifier(5)).fit(X * 10 + 3, y)
    Q = (Q * 10 + 3).astype(np.float32)
    predict, proba = _scorer(model, tmp_path, dtype="float32").score(_readonly(Q), ["predict", "predict_proba"])
    assert proba.dtype == np.float32
    np.testing.assert_allclose(proba, model.predict_proba(Q.astype(np.float64)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(predict, model.predict(Q.astype(np.float64)))


# --- exact ties: scikit-learn's heaps and sort, for every k ----------------------------


def test_simultaneous_sort_is_sklearns_item_for_item():
    """The port against scikit-learn's compiled simultaneous_sort: ties (it is not stable), sorted and reversed runs, sizes 0 to 300."""
    rng = np.random.default_rng(0)
    for trial in range(1500):
        n = trial % 301
        values = [
            rng.integers(0, 3, n).astype(np.float64),
            rng.normal(size=n),
            np.sort(rng.integers(0, 5, n).astype(np.float64))[::-1].copy(),
            np.repeat(rng.integers(0, 4, n // 8 + 1).astype(np.float64), 8)[:n].copy(),
            np.arange(n, dtype=np.float64) % 7,
        ][trial % 5]
        order = rng.permutation(n).astype(np.intp)
        ref_v, ref_i = values.copy(), order.copy()
        if n:
            _py_simultaneous_sort(ref_v, ref_i, n, use_three_way_partition=False)
        got_v, got_i = values.copy(), order.astype(np.int64)
        neighbors.simultaneous_sort(got_v, got_i)
        np.testing.assert_array_equal(got_i, ref_i)
        np.testing.assert_array_equal(got_v, ref_v)


def test_simultaneous_sort_heapsort_fallback():
    """0, 2, 3, ..., n - 1, 1 costs the median-of-three quicksort two items a level and runs it out of depth (found with
    McIlroy's adversary against this introsort; it heapsorts the last 40 of 64): that heapsort must be scikit-learn's too."""
    for n in (64, 100, 256):
        sequence = np.concatenate([[0.0], np.arange(2.0, n), [1.0]])
        for values in (sequence, sequence // 3):  # // 3: with ties
            ref_v, ref_i = values.copy(), np.arange(n, dtype=np.intp)
            _py_simultaneous_sort(ref_v, ref_i, n, use_three_way_partition=False)
            got_v, got_i = values.copy(), np.arange(n, dtype=np.int64)
            neighbors.simultaneous_sort(got_v, got_i)
            np.testing.assert_array_equal(got_i, ref_i)
            np.testing.assert_array_equal(got_v, ref_v)


def _tied_data(seed: int, n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """Training rows drawn from 40 small integer points (so every metric ties exactly, norm expansion included), labels per row."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 3, size=(40, 3)).astype(np.float64)
    return base[rng.integers(0, 40, n_train)], rng.integers(0, 3, n_train)


def _tied_queries(seed: int, n_query: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q = rng.integers(0, 3, size=(n_query, 3)).astype(np.float64)
    Q[1::2] += 0.5  # between the points: more distances tie
    return Q


@pytest.mark.parametrize("metric,p", METRICS)
@pytest.mark.parametrize("k", [16, 20, 31, 64])
def test_duplicates_tie_order_for_large_k(tmp_path, metric, p, k):
    """Indices identical to scikit-learn's kneighbors with ties throughout the k: batches it merges per-thread heaps for
    (1, 7 rows) and a batch it does not (more rows than the training set), at 1 and 2 OpenMP threads."""
    X, _ = _tied_data(k, 700)  # 3 chunks of 256 training rows
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="openmp"):
            model = NearestNeighbors(n_neighbors=k, metric=metric, p=p, algorithm="brute").fit(X)
            scorer = _scorer(model, tmp_path / str(threads))
            for n_query in (1, 7, 900):
                Q = _tied_queries(n_query, n_query)
                ref_d, ref_i = model.kneighbors(Q)
                distances, indices = scorer.score(_readonly(Q), ["distances", "indices"])
                np.testing.assert_array_equal(indices, ref_i)
                np.testing.assert_allclose(distances, ref_d, rtol=1e-9, atol=1e-12)


def test_tie_order_is_neither_index_order_nor_one_heaps():
    """Guards the tests above: scikit-learn's order differs from index order and from one heap per row sorted (the order
    this family served before), so a kernel ignoring either rule would fail them."""
    X, _ = _tied_data(20, 700)
    Q = _tied_queries(7, 7)
    with threadpool_limits(2, user_api="openmp"):
        ref = NearestNeighbors(n_neighbors=20, algorithm="brute").fit(X).kneighbors(Q, return_distance=False)
    one_heap_d, one_heap_i = np.empty((7, 20)), np.empty((7, 20), dtype=np.int64)
    neighbors.kneighbors(Q, np.zeros(3), np.ones(3), np.zeros(3), X, 0, 2.0, one_heap_d, one_heap_i)
    assert not np.array_equal(one_heap_i, ref)
    assert any(list(row) != sorted(row) for row in ref)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("metric,p", METRICS)
@pytest.mark.parametrize("k", [16, 31])
def test_duplicates_classifier_and_regressor_for_large_k(tmp_path, weights, metric, p, k):
    """Labels differ between copies of a point, so which copies make the k (ties at the k-th place) decides the answer."""
    X, y = _tied_data(3 * k, 600)
    Q = _tied_queries(k, 9)
    clf = KNeighborsClassifier(k, weights=weights, metric=metric, p=p, algorithm="brute").fit(X, np.array(["a", "b", "c"])[y])
    predict, proba = _scorer(clf, tmp_path / "c").score(_readonly(Q), ["predict", "predict_proba"])
    np.testing.assert_allclose(proba, clf.predict_proba(Q), rtol=1e-9, atol=1e-12)
    assert [v.decode() for v in predict] == list(clf.predict(Q))
    reg = KNeighborsRegressor(k, weights=weights, metric=metric, p=p, algorithm="brute").fit(X, y * 1.5 + np.arange(X.shape[0]) * 0.01)
    (pred,) = _scorer(reg, tmp_path / "r").score(_readonly(Q), ["predict"])
    np.testing.assert_allclose(pred, reg.predict(Q), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("metric", [0, 1, 2, 3])
def test_parallel_tiles_merge_ranges_as_the_serial_kernel(metric):
    """argkmin_parallel splits the batch into row tiles; every row must still merge its ranges' heaps as argkmin does."""
    X, _ = _tied_data(metric, 1100)
    Q = _tied_queries(metric, 600)
    pre = (np.zeros(3), np.ones(3), np.zeros(3))
    ranges = neighbors.argkmin_ranges(Q.shape[0], X.shape[0], 3)
    assert ranges.shape[0] == 4
    got = np.empty((600, 20)), np.empty((600, 20), dtype=np.int64)
    ref = np.empty((600, 20)), np.empty((600, 20), dtype=np.int64)
    neighbors.argkmin_parallel(Q, *pre, X, metric, 3.0, ranges, *got)
    neighbors.argkmin(Q, *pre, X, metric, 3.0, ranges, *ref)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[0], ref[0])


def test_argkmin_ranges_follow_sklearns_strategy():
    """parallel_on_X (no ranges) once the batch outnumbers the training rows or 4 x 256 rows per thread; else libgomp's split of the chunks."""
    assert neighbors.argkmin_ranges(1001, 1000, 4).shape == (0,)
    assert neighbors.argkmin_ranges(2049, 10_000, 2).shape == (0,)
    np.testing.assert_array_equal(neighbors.argkmin_ranges(2048, 10_000, 2), [0, 20 * 256, 10_000])  # 40 chunks
    np.testing.assert_array_equal(neighbors.argkmin_ranges(1, 1300, 4), [0, 512, 1024, 1280, 1300])  # 6 chunks: 2, 2, 1, 1
    np.testing.assert_array_equal(neighbors.argkmin_ranges(1, 100, 8), [0, 100])


# --- cosine ---------------------------------------------------------------------------


def _cosine_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training rows with exact cosine ties (duplicates, rows doubled: the same direction), zero rows, and queries hitting them."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(12, 4))
    X = np.concatenate([base, base[::-1], 2 * base[:6], np.zeros((3, 4)), rng.normal(size=(40, 4)), base[:5]])
    Q = np.concatenate([base[:6], 4 * base[6:9], np.zeros((2, 4)), np.full((1, 4), 1e-300), rng.normal(size=(60, 4))])
    return X, Q


@pytest.mark.parametrize("k", [1, 3, 8, 30])
def test_cosine_kneighbors_matches_sklearn_with_its_tie_order(tmp_path, k):
    X, Q = _cosine_data(k)
    model = NearestNeighbors(n_neighbors=k, metric="cosine").fit(X)
    distances, indices = _scorer(model, tmp_path).score(_readonly(Q), ["distances", "indices"])
    ref_d, ref_i = model.kneighbors(Q)
    np.testing.assert_array_equal(indices, ref_i)
    np.testing.assert_allclose(distances, ref_d, rtol=1e-9, atol=1e-12)
    assert (ref_d[: 6, :2] < 1e-12).all() and (ref_d[9:12] == 1.0).all()  # the data hold exact hits and zero-norm queries


def test_cosine_ties_follow_sklearn_not_index_order(tmp_path):
    """Four copies of each row: scikit-learn's brute force lists them in numpy's argpartition order, not by index; so do we."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(10, 3))
    X = np.concatenate([base, base, base[::-1], base])
    model = NearestNeighbors(n_neighbors=7, metric="cosine").fit(X)
    _, indices = _scorer(model, tmp_path).score(_readonly(base), ["distances", "indices"])
    ref = model.kneighbors(base, return_distance=False)
    np.testing.assert_array_equal(indices, ref)
    assert any(list(row[:4]) != sorted(row[:4]) for row in ref)  # guards the test: index order would not pass it


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_cosine_classifier_regressor_float32_and_parallel(tmp_path, monkeypatch, weights):
    X, Q = _cosine_data(7)
    y = np.arange(X.shape[0]) % 3
    Q = np.concatenate([Q] * 5)  # over 256 rows: several tiles of the parallel variant
    clf = KNeighborsClassifier(4, metric="cosine", weights=weights).fit(X, y)
    reg = KNeighborsRegressor(5, metric="cosine", weights=weights).fit(X, X[:, 0])
    monkeypatch.setattr(config, "PARALLEL_MIN_ROWS", 1)
    for dtype, tol in (("float64", (1e-9, 1e-12)), ("float32", (1e-5, 1e-6))):
        rows = Q.astype(dtype)
        predict, proba = _scorer(clf, tmp_path / f"c{dtype}", dtype).score(_readonly(rows), ["predict", "predict_proba"])
        np.testing.assert_array_equal(predict, clf.predict(rows.astype(np.float64)))
        np.testing.assert_allclose(proba, clf.predict_proba(rows.astype(np.float64)), rtol=tol[0], atol=tol[1])
        (pred,) = _scorer(reg, tmp_path / f"r{dtype}", dtype).score(_readonly(rows), ["predict"])
        np.testing.assert_allclose(pred, reg.predict(rows.astype(np.float64)), rtol=tol[0], atol=tol[1])


# --- radius neighbours -----------------------------------------------------------------

RADIUS_METRICS = [("euclidean", 2, 1.2), ("manhattan", 2, 2.0), ("chebyshev", 2, 0.9), ("minkowski", 3, 1.1), ("cosine", 2, 0.3)]


@pytest.fixture(scope="module")
def radius_data():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(400, 3))
    y = np.array(["ant", "bee", "cat"])[rng.integers(0, 3, 400)]
    # exact hits (rows 120 to 129); rows far from all; zero rows (no neighbour at cosine distance < 1)
    Q = np.concatenate([rng.normal(size=(120, 3)), X[:10], rng.normal(size=(5, 3)) + 8.0, np.zeros((2, 3))])
    return X, y, Q


@pytest.fixture(scope="module")
def radius_scorers(radius_data, tmp_path_factory):
    """(estimator, scorer) per (task, metric, weights), fitted once for the module."""
    X, y, _ = radius_data
    made = {}
    for metric, p, radius in RADIUS_METRICS:
        for weights in ("uniform", "distance"):
            for task, model in (
                ("clf", RadiusNeighborsClassifier(radius=radius, metric=metric, p=p, weights=weights, outlier_label="most_frequent", algorithm="ball_tree" if metric != "cosine" else "brute")),
                ("reg", RadiusNeighborsRegressor(radius=radius, metric=metric, p=p, weights=weights)),
            ):
                model.fit(X, y if task == "clf" else np.c_[X[:, 0] * 2 + 1, X[:, 1] ** 2])
                made[task, metric, weights] = (model, _scorer(model, tmp_path_factory.mktemp("radius")))
    return made


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("metric", [m for m, _, _ in RADIUS_METRICS])
def test_radius_classifier_matches_sklearn(radius_data, radius_scorers, metric, weights):
    _, _, Q = radius_data
    model, scorer = radius_scorers["clf", metric, weights]
    predict, proba = scorer.score(_readonly(Q), ["predict", "predict_proba"])
    assert [v.decode() for v in predict] == list(model.predict(Q))
    if metric == "cosine" and weights == "uniform":
        # scikit-learn's RadiusNeighborsClassMode path (brute force, uniform, not euclidean) leaves an outlier's
        # probabilities at 0 for 'most_frequent'; its documented rule, and every other path, puts 1 on that class.
        ref = model.predict_proba(Q)
        outliers = ref.sum(axis=1) == 0
        ref[outliers, list(model.classes_).index(model.outlier_label_[0])] = 1.0
    else:
        ref = model.predict_proba(Q)
    if metric == "cosine" and weights == "distance":
        # A row's cosine distance to itself is 1 - <x/|x|, x/|x|>: 0 or a few 1e-16 depending on the summation order
        # (BLAS's or ours), and 1/d of that noise decides the weights: no library can agree on exact hits there.
        keep = np.ones(Q.shape[0], dtype=bool)
        keep[120:130] = False
        proba, ref = proba[keep], ref[keep]
    np.testing.assert_allclose(proba, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("metric", [m for m, _, _ in RADIUS_METRICS])
def test_radius_regressor_matches_sklearn_nan_without_neighbours(radius_data, radius_scorers, metric, weights):
    _, _, Q = radius_data
    model, scorer = radius_scorers["reg", metric, weights]
    (pred,) = scorer.score(_readonly(Q), ["predict"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns that it predicts NaN
        ref = model.predict(Q)
    assert pred.shape == ref.shape == (Q.shape[0], 2)
    np.testing.assert_array_equal(np.isnan(pred), np.isnan(ref))
    assert np.isnan(ref).any() and not np.isnan(ref).all()
    if metric == "cosine" and weights == "distance":  # exact hits: see test_radius_classifier_matches_sklearn
        pred, ref = np.delete(pred, np.s_[120:130], axis=0), np.delete(ref, np.s_[120:130], axis=0)
    np.testing.assert_allclose(pred, ref, rtol=1e-9, atol=1e-12)


def test_radius_parallel_variant_and_float32(radius_data, radius_scorers, monkeypatch, tmp_path):
    X, y, Q = radius_data
    rows = np.concatenate([Q] * 3)  # over 256 rows: several tiles
    monkeypatch.setattr(config, "PARALLEL_MIN_ROWS", 1)
    model, scorer = radius_scorers["clf", "manhattan", "distance"]
    predict, proba = scorer.score(_readonly(rows), ["predict", "predict_proba"])
    np.testing.assert_allclose(proba, model.predict_proba(rows), rtol=1e-9, atol=1e-12)
    rows32 = rows.astype(np.float32)
    model, _ = radius_scorers["reg", "euclidean", "uniform"]
    (pred,) = _scorer(model, tmp_path, "float32").score(_readonly(rows32), ["predict"])
    assert pred.dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(pred, model.predict(rows32.astype(np.float64)), rtol=1e-5, atol=1e-6)


BOUNDARY = [  # (metric, p, radius): the training rows at (3, 4) and (-3, -4) lie exactly at the radius from the origin
    ("euclidean", 2, 5.0),
    ("manhattan", 2, 7.0),
    ("chebyshev", 2, 4.0),
    ("minkowski", 3, float(np.cbrt(91.0))),
]


@pytest.mark.parametrize("metric,p,radius", BOUNDARY)
def test_rows_exactly_at_the_radius_are_neighbours(tmp_path, metric, p, radius):
    X = np.array([[0.0, 0.0], [3.0, 4.0], [-3.0, -4.0], [6.0, 8.0], [0.0, 9.0]])
    y = np.array([1.0, 10.0, 100.0, 1000.0, 10000.0])
    Q = np.zeros((1, 2))
    for r, expect in ((radius, 111.0 / 3), (np.nextafter(radius, 0.0), 1.0)):
        reg = RadiusNeighborsRegressor(radius=r, metric=metric, p=p, algorithm="brute").fit(X, y)
        (pred,) = _scorer(reg, tmp_path / str(r)).score(_readonly(Q), ["predict"])
        np.testing.assert_allclose(reg.predict(Q), [expect], rtol=1e-12)
        np.testing.assert_allclose(pred, [expect], rtol=1e-12)


def test_cosine_radius_boundary(tmp_path):
    """Orthogonal rows are at cosine distance exactly 1: inside radius 1, outside the float just below it."""
    X = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    y = np.array([1.0, 10.0, 100.0])
    Q = np.array([[3.0, 0.0]])
    for r, expect in ((1.0, 5.5), (np.nextafter(1.0, 0.0), 1.0)):
        reg = RadiusNeighborsRegressor(radius=r, metric="cosine").fit(X, y)
        (pred,) = _scorer(reg, tmp_path / str(r)).score(_readonly(Q), ["predict"])
        np.testing.assert_allclose(reg.predict(Q), [expect], rtol=1e-12)
        np.testing.assert_allclose(pred, [expect], rtol=1e-12)


@pytest.fixture(scope="module")
def outlier_data():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [6.0, 5.0], [5.0, 6.0]])
    Q = np.array([[0.0, 0.0], [20.0, 20.0], [5.5, 5.0], [-20.0, 3.0]])  # rows 1 and 3 have no neighbour within 1.5
    return X, Q


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize(
    "y,outlier_label",
    [([5, 6, 7, 7, 7], "most_frequent"), ([5, 6, 7, 7, 7], 6), ([5, 6, 7, 7, 7], -1), (["a", "b", "c", "c", "b"], "z"), ([0.0, 1.0, 1.0, 2.0, 2.0], [3.0])],
)
def test_outlier_label(tmp_path, outlier_data, weights, y, outlier_label):
    """A label for rows without neighbours: one of the classes (probability 1 on it) or another (probabilities 0)."""
    X, Q = outlier_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns of an outlier label that is not a class
        model = RadiusNeighborsClassifier(radius=1.5, weights=weights, outlier_label=outlier_label).fit(X, np.array(y))
        ref_proba, ref_predict = model.predict_proba(Q), model.predict(Q)
    predict, proba = _scorer(model, tmp_path).score(_readonly(Q), ["predict", "predict_proba"])
    np.testing.assert_allclose(proba, ref_proba, rtol=1e-9, atol=1e-12)
    got = [v.decode() for v in predict] if predict.dtype == object else list(predict)
    assert got == list(ref_predict)
    assert ref_predict[1] == model.outlier_label_[0]


def test_no_outlier_label_refuses_rows_without_neighbours(tmp_path, outlier_data):
    X, Q = outlier_data
    model = RadiusNeighborsClassifier(radius=1.5).fit(X, [0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="No neighbors found"):
        model.predict(Q)
    scorer = _scorer(model, tmp_path)
    with pytest.raises(InvalidRequestError, match=r"row\(s\) 1, 3 have no training row within radius 1.5"):
        scorer.score(_readonly(Q), ["predict"])
    predict, proba = scorer.score(_readonly(Q[[0, 2]]), ["predict", "predict_proba"])
    np.testing.assert_array_equal(predict, model.predict(Q[[0, 2]]))
    np.testing.assert_allclose(proba, model.predict_proba(Q[[0, 2]]), rtol=1e-9, atol=1e-12)


def test_radius_duplicates_and_exact_hits(tmp_path):
    """Integer rows, duplicated: distance weights give the rows at distance 0 all the weight, as scikit-learn does."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 4, size=(30, 3)).astype(np.float64)
    X = np.concatenate([base, base[:10]])
    y = rng.integers(0, 3, X.shape[0])
    Q = np.concatenate([base[:15], rng.integers(0, 4, size=(20, 3)) + 0.5])
    clf = RadiusNeighborsClassifier(radius=1.0, weights="distance", outlier_label="most_frequent").fit(X, y)
    predict, proba = _scorer(clf, tmp_path / "c").score(_readonly(Q), ["predict", "predict_proba"])
    np.testing.assert_allclose(proba, clf.predict_proba(Q), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(predict, clf.predict(Q))
    reg = RadiusNeighborsRegressor(radius=1.0, weights="distance").fit(X, y * 1.5)
    (pred,) = _scorer(reg, tmp_path / "r").score(_readonly(Q), ["predict"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(pred, reg.predict(Q), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "steps",
    [lambda: [StandardScaler()], lambda: [MinMaxScaler(), StandardScaler()], lambda: [StandardScaler(), PCA(3)], lambda: [Normalizer()]],
)
def test_radius_and_cosine_pipelines(tmp_path, steps):
    X, y, Q = _data(9, 300, 80, 5)
    X, Q = X * [1, 10, 100, 1, 0.1] + 50, Q * [1, 10, 100, 1, 0.1] + 50
    clf = make_pipeline(*steps(), RadiusNeighborsClassifier(radius=1.5, weights="distance", outlier_label=0)).fit(X, y)
    predict, proba = _scorer(clf, tmp_path / "c").score(_readonly(Q), ["predict", "predict_proba"])
    np.testing.assert_allclose(proba, clf.predict_proba(Q), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(predict, clf.predict(Q))
    reg = make_pipeline(*steps(), RadiusNeighborsRegressor(radius=1.5)).fit(X, y * 0.5)
    (pred,) = _scorer(reg, tmp_path / "r").score(_readonly(Q), ["predict"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(pred, reg.predict(Q), rtol=1e-9, atol=1e-12)
    knn = make_pipeline(*steps(), KNeighborsClassifier(5, metric="cosine")).fit(X, y)
    predict, proba = _scorer(knn, tmp_path / "k").score(_readonly(Q), ["predict", "predict_proba"])
    np.testing.assert_allclose(proba, knn.predict_proba(Q), rtol=1e-9, atol=1e-12)


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize("make", [KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors, RadiusNeighborsClassifier, RadiusNeighborsRegressor])
def test_refusals(tmp_path, make):
    """Metrics, metric parameters and weights tensorwire does not serve are refused at export, by name."""
    X, y, _ = _data(1, 50, 2, 3)
    cases = [
        ({"metric": "haversine"}, "metric 'haversine'", X[:, :2]),
        ({"metric": "precomputed"}, "metric 'precomputed'", np.abs(X[:, :1] - X[:, :1].T)),
        ({"metric": lambda a, b: float(np.abs(a - b).sum())}, "metric <function", X),
        ({"metric": "minkowski", "metric_params": {"w": np.ones(3)}}, "metric 'minkowski' with metric_params", X),
        ({"metric": "seuclidean", "metric_params": {"V": np.ones(3)}}, "metric 'seuclidean' with metric_params", X),
    ]
    if make is not NearestNeighbors:
        cases.append(({"weights": lambda d: d}, "weights <function", X))
    for i, (kwargs, problem, data) in enumerate(cases):
        model = make(**kwargs)
        model = model.fit(data) if make is NearestNeighbors else model.fit(data, y)
        with pytest.raises(ValueError, match=f"{make.__name__}: {problem}"):
            export(model, tmp_path / str(i) / "1")
