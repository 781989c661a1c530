"""DBSCAN assignment against the rule computed with scikit-learn's own NearestNeighbors on the model's core samples.

The rule: a row takes the label of its nearest core sample (NearestNeighbors(n_neighbors=1),
brute force, the model's metric, so ties go as scikit-learn's kneighbors sends them) if that
sample lies within eps (<=), else -1.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import DBSCAN
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tensorwire.kernels import config
from tensorwire.server.modeling.export import export
from tensorwire.server.modeling.registry import build_scorer
from tensorwire.server.repository.model_format import load_model


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)


def _scorer(model, tmp_path, dtype: str = "float64"):
    stored = load_model(export(model, tmp_path / "m" / "1", dtype=dtype))
    return build_scorer(stored.manifest, stored.arrays)


def assignment(db: DBSCAN, Q: np.ndarray) -> np.ndarray:
    """The rule, with scikit-learn's NearestNeighbors on the core samples."""
    if len(db.core_sample_indices_) == 0:
        return np.full(Q.shape[0], -1)
    nn = NearestNeighbors(n_neighbors=1, metric=db.metric, p=db.p, algorithm="brute").fit(db.components_)
    distances, indices = nn.kneighbors(Q)
    return np.where(distances[:, 0] <= db.eps, db.labels_[db.core_sample_indices_][indices[:, 0]], -1)


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(4)
    centres = np.array([[0.0, 0.0, 0.0], [3.0, 3.0, 0.0], [0.0, 3.0, 3.0], [-3.0, 1.0, 2.0]])
    X = np.concatenate([c + 0.4 * rng.normal(size=(80, 3)) for c in centres])
    Q = np.concatenate([rng.uniform(-4, 5, size=(300, 3)), X[:20]])
    return X, Q


METRICS = [("euclidean", None, 0.45), ("manhattan", None, 0.7), ("chebyshev", None, 0.35), ("minkowski", 3, 0.4), ("cosine", None, 0.01)]


@pytest.mark.parametrize("metric,p,eps", METRICS)
def test_assignment_matches_the_rule(blobs, tmp_path, metric, p, eps):
    X, Q = blobs
    db = DBSCAN(eps=eps, min_samples=5, metric=metric, p=p).fit(X)
    expect = assignment(db, Q)
    assert len(set(expect)) >= 3 and (expect == -1).any()  # the data exercise several clusters and noise
    (got,) = _scorer(db, tmp_path / "64").score(_readonly(Q), ["predict"])
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expect)
    Q32 = Q.astype(np.float32)
    (got,) = _scorer(db, tmp_path / "32", "float32").score(_readonly(Q32), ["predict"])
    np.testing.assert_array_equal(got, assignment(db, Q32.astype(np.float64)))


def test_parallel_variant(blobs, tmp_path, monkeypatch):
    X, Q = blobs
    rows = np.concatenate([Q] * 2)  # over 256 rows: several tiles
    monkeypatch.setattr(config, "PARALLEL_MIN_ROWS", 1)
    for metric, p, eps in (METRICS[0], METRICS[-1]):
        db = DBSCAN(eps=eps, min_samples=5, metric=metric, p=p).fit(X)
        (got,) = _scorer(db, tmp_path / metric).score(_readonly(rows), ["predict"])
        np.testing.assert_array_equal(got, assignment(db, rows))


def _squares(first: tuple[float, float], second: tuple[float, float]) -> np.ndarray:
    """Two clusters of four core points each: unit squares with lower-left corners `first` and `second`."""
    unit = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    return np.concatenate([unit + first, unit + second])


LEFT = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]  # a unit square of core points
RIGHT = [[3.0, 0.0], [4.0, 0.0], [3.0, 1.0], [4.0, 1.0]]  # another, 2 to the right of it
LAYOUTS = {
    "left first": LEFT + RIGHT,
    "right first": RIGHT + LEFT,
    # right's first point makes it cluster 0, yet left's (1, 0) has the lower core index of the two tied at (2, 0)
    "interleaved": [RIGHT[3], LEFT[1], LEFT[0], LEFT[2], LEFT[3], RIGHT[0], RIGHT[1], RIGHT[2]],
}


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "chebyshev", "minkowski"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_points_exactly_at_eps_and_ties_between_clusters(tmp_path, metric, layout):
    """(2, 0) lies exactly eps = 1 from a core point of each cluster: kneighbors' tie rule (the lower core index) decides."""
    X = np.array(LAYOUTS[layout])
    db = DBSCAN(eps=1.0, min_samples=3, metric=metric, p=3 if metric == "minkowski" else None).fit(X)
    assert len(db.core_sample_indices_) == 8 and set(db.labels_) == {0, 1}
    Q = np.array([[2.0, 0.0], [-1.0, 0.0], [0.0, -1.0], [np.nextafter(-1.0, -2.0), 0.0], [2.0, 0.5], [10.0, 10.0]])
    expect = assignment(db, Q)
    (got,) = _scorer(db, tmp_path).score(_readonly(Q), ["predict"])
    np.testing.assert_array_equal(got, expect)
    tied = [i for i, row in enumerate(LAYOUTS[layout]) if row in ([1.0, 0.0], [3.0, 0.0])]
    assert expect[0] == db.labels_[min(tied)]  # the tied core sample listed first wins, whatever its label
    origin = LAYOUTS[layout].index([0.0, 0.0])
    assert list(expect[1:4]) == [db.labels_[origin]] * 2 + [-1]  # at eps: in; just beyond: noise


def test_cosine_ties_and_eps(tmp_path):
    """Cosine: duplicated directions tie exactly; a row at cosine distance exactly eps = 1 (orthogonal) is in."""
    X = np.array([[1.0, 0.0], [2.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.0, 3.0], [0.1, 1.0]])
    db = DBSCAN(eps=0.01, min_samples=2, metric="cosine").fit(X)
    Q = np.array([[5.0, 0.0], [0.0, 0.5], [1.0, 1.0], [-1.0, 0.0]])
    (got,) = _scorer(db, tmp_path / "a").score(_readonly(Q), ["predict"])
    np.testing.assert_array_equal(got, assignment(db, Q))
    db = DBSCAN(eps=1.0, min_samples=1, metric="cosine").fit(np.array([[1.0, 0.0], [-1.0, 0.0]]))
    Q = np.array([[0.0, 2.0], [0.0, -1.0], [-1.0, 1.0]])
    expect = assignment(db, Q)
    (got,) = _scorer(db, tmp_path / "b").score(_readonly(Q), ["predict"])
    np.testing.assert_array_equal(got, expect)
    assert list(expect[:2]) == [0, 0]


def test_no_core_samples_all_noise(tmp_path):
    X = np.array([[0.0, 0.0], [5.0, 5.0], [10.0, 0.0]])
    db = DBSCAN(eps=1.0, min_samples=2).fit(X)
    assert len(db.core_sample_indices_) == 0
    (got,) = _scorer(db, tmp_path).score(_readonly(X), ["predict"])
    np.testing.assert_array_equal(got, [-1, -1, -1])


def test_pipeline(blobs, tmp_path):
    X, Q = blobs
    scale = np.array([1.0, 100.0, 0.01])
    model = make_pipeline(StandardScaler(), DBSCAN(eps=0.3, min_samples=5)).fit(X * scale + 7)
    db = model[-1]
    expect = assignment(db, model[0].transform(Q * scale + 7))
    assert len(set(expect)) >= 3
    (got,) = _scorer(model, tmp_path).score(_readonly(Q * scale + 7), ["predict"])
    np.testing.assert_array_equal(got, expect)


@pytest.mark.parametrize(
    "kwargs,problem",
    [
        ({"metric": "haversine"}, "metric 'haversine'"),
        ({"metric": "precomputed"}, "metric 'precomputed'"),
        ({"metric": lambda a, b: float(np.abs(a - b).sum())}, "metric <function"),
        ({"metric": "seuclidean", "metric_params": {"V": np.ones(2)}}, "metric 'seuclidean' with metric_params"),
        ({"metric": "minkowski", "p": 3, "metric_params": {"w": np.ones(2)}}, "metric 'minkowski' with metric_params"),
    ],
)
def test_refusals(tmp_path, kwargs, problem):
    X = np.random.default_rng(0).normal(size=(30, 2))
    data = np.abs(X[:, :1] - X[:, :1].T) if kwargs["metric"] == "precomputed" else X
    db = DBSCAN(eps=0.5, min_samples=3, **kwargs).fit(data)
    with pytest.raises(ValueError, match=f"DBSCAN: {problem}"):
        export(db, tmp_path / "m" / "1")
