"""Nearest neighbours (KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors) against scikit-learn, in process.

Exported, loaded and scored as the server does; indices must be identical (the data
here avoid near-ties except exact duplicates, whose order is scikit-learn's: lower
training index first), distances and probabilities within DESIGN.md's 1e-9 / 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

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


def test_refusals(tmp_path):
    X, y, Q = _data(1, 50, 2, 3)
    with pytest.raises(ValueError, match="weights"):
        export(KNeighborsClassifier(3, weights=lambda d: d).fit(X, y), tmp_path / "a" / "1")
    with pytest.raises(ValueError, match="metric"):
        export(KNeighborsClassifier(3, metric="cosine").fit(X, y), tmp_path / "b" / "1")
