"""scikit-learn trees, forests, gradient boosting and isolation forests: tensorwire's outputs against the library's own.

Each case is fitted once (small data, few trees) and compared on held-out rows and on rows placed at and
one float step either side of the model's thresholds, for float32 and float64 requests.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression
from sklearn.tree import (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    ExtraTreeClassifier,
    ExtraTreeRegressor,
)
from threadpoolctl import threadpool_limits

from tensorwire.server.families.trees.ensemble import TreeEnsemble
from tensorwire.server.families.trees.sklearn_trees import SKLEARN_CONVERTERS

from .tree_parity import (
    adversarial_rows,
    assert_labels_equal,
    assert_scores_close,
    served_outputs,
)

DTYPES = [np.float32, np.float64]
N_ROWS = 60
CATEGORICAL = [1, 3]  # the HistGradientBoosting categorical cases' categorical columns
CATEGORY_POOL = np.array([0, 2, 3, 5, 7, 300, 1, 4, 6, 301, 1000, -1, -3, -0.0, np.nan])  # known, unknown, negative, NaN


# --- data ---


def _classification(n_classes: int, labels: Any = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(2 * 160, 6, n_informative=4, n_redundant=1, n_classes=n_classes, random_state=seed)
    return X, (np.asarray(labels)[y] if labels is not None else y)


def _regression(n_targets: int = 1, positive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_regression(2 * 160, 6, n_informative=4, n_targets=n_targets, noise=1.0, random_state=1)
    return X, (np.exp(y / np.abs(y).max()) if positive else y)


def _with_nan(X: np.ndarray, seed: int = 2) -> np.ndarray:
    X = X.copy()
    X[np.random.default_rng(seed).random(X.shape) < 0.1] = np.nan
    return X


def _categorical(classify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Two categorical columns (values with gaps, one >= 256, NaN in training) and NaN in a numeric column."""
    rng = np.random.default_rng(3)
    n = 2 * 200
    X = rng.normal(size=(n, 5))
    X[:, 1] = rng.choice([0, 2, 3, 5, 7, 300], size=n)
    X[:, 3] = rng.integers(0, 6, size=n)
    X[rng.random(n) < 0.1, 3] = np.nan
    X[rng.random(n) < 0.05, 4] = np.nan
    score = X[:, 0] + 3 * np.isin(X[:, 1], [2, 7, 300]) + 2 * (np.nan_to_num(X[:, 3], nan=1.0) % 2) + rng.normal(size=n) * 0.3
    return X, (np.digitize(score, np.quantile(score, [0.33, 0.66])) if classify else score)


Case = tuple[Callable[[], Any], Callable[[], tuple[np.ndarray, np.ndarray]]]

CASES: dict[str, Case] = {
    # sklearn.tree models
    "tree-clf-binary": (lambda: DecisionTreeClassifier(max_depth=6, random_state=0), lambda: _classification(2)),
    "tree-clf-3-str": (lambda: DecisionTreeClassifier(max_depth=6, random_state=0), lambda: _classification(3, ["ant", "bee", "cat"])),
    "tree-clf-nan-train": (lambda: DecisionTreeClassifier(max_depth=6, random_state=0), lambda: (_with_nan(_classification(3)[0]), _classification(3)[1])),
    "extratree-clf-4-int": (lambda: ExtraTreeClassifier(max_depth=8, random_state=0), lambda: _classification(4, [3, 7, 11, 20])),
    "tree-reg": (lambda: DecisionTreeRegressor(max_depth=6, random_state=0), lambda: _regression()),
    "tree-reg-nan-train": (lambda: DecisionTreeRegressor(max_depth=6, random_state=0), lambda: (_with_nan(_regression()[0]), _regression()[1])),
    "extratree-reg-multi": (lambda: ExtraTreeRegressor(max_depth=8, random_state=0), lambda: _regression(3)),
    # forests
    "forest-clf-binary-str": (lambda: RandomForestClassifier(12, max_depth=5, random_state=0), lambda: _classification(2, ["no", "yes"])),
    "forest-clf-3": (lambda: RandomForestClassifier(12, max_depth=5, random_state=0), lambda: _classification(3)),
    "forest-clf-nan-train": (lambda: RandomForestClassifier(12, max_depth=5, random_state=0), lambda: (_with_nan(_classification(2)[0]), _classification(2)[1])),
    "forest-reg": (lambda: RandomForestRegressor(12, max_depth=5, random_state=0), lambda: _regression()),
    "forest-reg-multi": (lambda: RandomForestRegressor(12, max_depth=5, random_state=0), lambda: _regression(3)),
    "extratrees-clf-3": (lambda: ExtraTreesClassifier(12, max_depth=6, random_state=0), lambda: _classification(3)),
    "extratrees-reg": (lambda: ExtraTreesRegressor(12, max_depth=6, random_state=0), lambda: _regression()),
    # GradientBoosting
    "gb-clf-binary-str": (lambda: GradientBoostingClassifier(n_estimators=15, random_state=0), lambda: _classification(2, ["neg", "pos"])),
    "gb-clf-3": (lambda: GradientBoostingClassifier(n_estimators=10, random_state=0), lambda: _classification(3)),
    "gb-clf-3-zero": (lambda: GradientBoostingClassifier(n_estimators=10, init="zero", random_state=0), lambda: _classification(3)),
    "gb-clf-exponential": (lambda: GradientBoostingClassifier(n_estimators=15, loss="exponential", random_state=0), lambda: _classification(2)),
    "gb-clf-binary-zero": (lambda: GradientBoostingClassifier(n_estimators=15, init="zero", learning_rate=0.3, random_state=0), lambda: _classification(2)),
    "gb-reg": (lambda: GradientBoostingRegressor(n_estimators=15, random_state=0), lambda: _regression()),
    "gb-reg-huber": (lambda: GradientBoostingRegressor(n_estimators=15, loss="huber", random_state=0), lambda: _regression()),
    "gb-reg-absolute": (lambda: GradientBoostingRegressor(n_estimators=15, loss="absolute_error", random_state=0), lambda: _regression()),
    "gb-reg-quantile": (lambda: GradientBoostingRegressor(n_estimators=15, loss="quantile", alpha=0.8, random_state=0), lambda: _regression()),
    "gb-reg-zero": (lambda: GradientBoostingRegressor(n_estimators=15, init="zero", random_state=0), lambda: _regression()),
    "gb-reg-dummy-init": (lambda: GradientBoostingRegressor(n_estimators=10, init=DummyRegressor(strategy="median"), random_state=0), lambda: _regression()),
    # HistGradientBoosting
    "hgb-clf-binary": (lambda: HistGradientBoostingClassifier(max_iter=15, random_state=0), lambda: _classification(2)),
    "hgb-clf-3-str": (lambda: HistGradientBoostingClassifier(max_iter=10, random_state=0), lambda: _classification(3, ["ant", "bee", "cat"])),
    "hgb-clf-nan-train": (lambda: HistGradientBoostingClassifier(max_iter=15, random_state=0), lambda: (_with_nan(_classification(2)[0]), _classification(2)[1])),
    "hgb-reg": (lambda: HistGradientBoostingRegressor(max_iter=15, random_state=0), lambda: _regression()),
    "hgb-reg-nan-train": (lambda: HistGradientBoostingRegressor(max_iter=15, random_state=0), lambda: (_with_nan(_regression()[0]), _regression()[1])),
    "hgb-reg-poisson": (lambda: HistGradientBoostingRegressor(max_iter=15, loss="poisson", random_state=0), lambda: _regression(positive=True)),
    "hgb-reg-gamma": (lambda: HistGradientBoostingRegressor(max_iter=15, loss="gamma", random_state=0), lambda: _regression(positive=True)),
    "hgb-reg-quantile": (lambda: HistGradientBoostingRegressor(max_iter=15, loss="quantile", quantile=0.3, random_state=0), lambda: _regression()),
    "hgb-reg-categorical": (lambda: HistGradientBoostingRegressor(max_iter=15, categorical_features=CATEGORICAL, random_state=0), lambda: _categorical(False)),
    "hgb-clf-3-categorical": (lambda: HistGradientBoostingClassifier(max_iter=10, categorical_features=CATEGORICAL, random_state=0), lambda: _categorical(True)),
    # IsolationForest
    "iforest": (lambda: IsolationForest(n_estimators=15, random_state=0), lambda: _regression()),
    "iforest-feature-subsample": (lambda: IsolationForest(n_estimators=15, max_features=0.5, contamination=0.1, random_state=0), lambda: _regression()),
    "iforest-bootstrap-nan-train": (lambda: IsolationForest(n_estimators=15, max_samples=64, bootstrap=True, random_state=0), lambda: (_with_nan(_regression()[0]), _regression()[1])),
}


class Fitted:
    """A case's estimator fitted on the first half of its data, its TreeEnsemble, and its held-out half."""

    def __init__(self, name: str) -> None:
        make_estimator, make_data = CASES[name]
        X, y = make_data()
        half = X.shape[0] // 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.estimator = make_estimator().fit(X[:half], y[:half])
        self.name, self.X_test = name, X[half:]
        self.ensemble: TreeEnsemble = SKLEARN_CONVERTERS[type(self.estimator)](self.estimator)

    def rows(self, kind: str, seed: int) -> np.ndarray:
        if kind == "held-out":
            return self.X_test[:N_ROWS]
        X = adversarial_rows(self.ensemble, N_ROWS, seed, nan=self.ensemble.accepts_nan, inf=self.ensemble.accepts_inf)
        if not self.ensemble.accepts_inf:
            # a split that sends only NaN one way has threshold inf, which adversarial_rows copies into the rows
            big = float(np.finfo(np.float32 if self.ensemble.precision == "float32" else np.float64).max)
            X = np.where(np.isnan(X), X, np.clip(X, -big, big))
        if self.name.endswith("categorical"):
            # non-integer categories are a known gap (test_hgb_non_integer_category); every other value is fair
            rng = np.random.default_rng(seed)
            X[:, CATEGORICAL] = rng.choice(CATEGORY_POOL, size=(N_ROWS, len(CATEGORICAL)))
        return X


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """HistGradientBoosting's OpenMP threads only slow these tiny fits and predictions down on a busy machine."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def fitted() -> Callable[[str], Fitted]:
    cache: dict[str, Fitted] = {}

    def get(name: str) -> Fitted:
        if name not in cache:
            cache[name] = Fitted(name)
        return cache[name]

    return get


def _library(estimator: Any, name: str, X: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # feature names, overflow in the float32 cast
        return np.asarray(getattr(estimator, name)(X))


def _assert_parity(ensemble: TreeEnsemble, estimator: Any, X: np.ndarray, dtype: Any) -> None:
    # the library is fed the very values a request of this dtype carries
    with np.errstate(over="ignore"):  # float64 values beyond float32's range become inf, as in the library
        Xd = np.ascontiguousarray(X, dtype=dtype)
        served = served_outputs(ensemble, Xd, dtype)
    assert set(served) == {"predict"} | ({"predict_proba"} if ensemble.task == "classification" else set()) | (
        {"decision_function"} if ensemble.has_decision or ensemble.task == "isolation" else set()
    ) | ({"score_samples"} if ensemble.task == "isolation" else set())
    for name, actual in served.items():
        expected = _library(estimator, name, Xd)
        if name == "predict" and ensemble.task != "regression":
            assert_labels_equal(actual, expected)
        else:
            assert actual.shape == expected.shape, name
            assert_scores_close(actual, expected, dtype)


# --- parity ---


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", ["held-out", "adversarial"])
@pytest.mark.parametrize("case", list(CASES))
def test_parity(fitted: Callable[[str], Fitted], case: str, kind: str, dtype: Any) -> None:
    model = fitted(case)
    _assert_parity(model.ensemble, model.estimator, model.rows(kind, seed=sum(map(ord, case))), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", ["hgb-reg", "hgb-clf-3-str", "iforest", "iforest-feature-subsample"])
def test_parity_extremes(fitted: Callable[[str], Fitted], case: str, dtype: Any) -> None:
    """Where the library takes infinities: ±inf, and float64 values beyond float32's range (inf after the cast)."""
    model = fitted(case)
    assert model.ensemble.accepts_inf
    X = np.repeat(model.X_test[:8], 6, axis=0)
    column = np.arange(X.shape[0]) % X.shape[1]
    X[np.arange(X.shape[0]), column] = np.tile([np.inf, -np.inf, 1e39, -1e39, 1e300, -1e300], 8)
    _assert_parity(model.ensemble, model.estimator, X, dtype)


def _accepts(estimator: Any, X: np.ndarray) -> bool:
    try:
        _library(estimator, "predict", X)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("case", list(CASES))
def test_nan_and_inf_flags_match_library(fitted: Callable[[str], Fitted], case: str) -> None:
    """accepts_nan / accepts_inf say whether the library's predict takes NaN / ±inf in every column;
    a float64 beyond float32's range counts as inf for the float32 models."""
    model = fitted(case)
    rows = model.X_test[:2]

    def accepts_everywhere(value: float) -> bool:
        results = []
        for column in range(rows.shape[1]):
            X = rows.copy()
            X[:, column] = value
            results.append(_accepts(model.estimator, X))
        return all(results)

    assert model.ensemble.accepts_nan == accepts_everywhere(np.nan)
    assert model.ensemble.accepts_inf == accepts_everywhere(np.inf) == accepts_everywhere(-np.inf)
    if model.ensemble.precision == "float32":
        assert model.ensemble.accepts_inf == accepts_everywhere(1e39)


# --- what the converters record ---


def test_every_estimator_has_a_converter() -> None:
    registered = {cls.__name__ for cls in SKLEARN_CONVERTERS}
    kinds = {type(CASES[name][0]()).__name__ for name in CASES}
    assert kinds == registered


def test_routing_semantics_recorded(fitted: Callable[[str], Fitted]) -> None:
    for case, precision in [("tree-reg", "float32"), ("forest-clf-3", "float32"), ("gb-reg", "float32"), ("iforest", "float32"), ("hgb-reg", "float64")]:
        ensemble = fitted(case).ensemble
        assert (ensemble.precision, ensemble.comparison) == (precision, "le"), case
    gb = fitted("gb-clf-3").ensemble
    assert (gb.link, gb.n_raw, gb.has_decision, gb.n_trees) == ("softmax", 3, True, 30)
    assert list(gb.tree_output[:3]) == [0, 1, 2]
    exponential = fitted("gb-clf-exponential").ensemble
    assert (exponential.link, exponential.link_scale, exponential.n_raw) == ("logistic", 2.0, 1)
    assert np.array_equal(fitted("gb-clf-3-zero").ensemble.base, np.zeros(3))
    forest = fitted("forest-clf-3").ensemble
    assert (forest.link, forest.divisor, forest.n_raw) == ("proba", 12.0, 3)
    assert fitted("forest-reg-multi").ensemble.n_raw == 3
    assert fitted("hgb-reg-poisson").ensemble.link == "exp"
    assert fitted("extratree-clf-4-int").ensemble.classes == [3, 7, 11, 20]
    assert fitted("tree-clf-3-str").ensemble.classes == ["ant", "bee", "cat"]
    categorical = fitted("hgb-reg-categorical").ensemble
    assert categorical.categorical is not None and categorical.categorical.any()
    assert set(categorical.feature[categorical.categorical]) <= set(CATEGORICAL)


# --- refusals ---


@pytest.mark.parametrize("make", [lambda: DecisionTreeClassifier(max_depth=3), lambda: RandomForestClassifier(3, max_depth=3), lambda: ExtraTreesClassifier(3, max_depth=3)])
def test_multioutput_classification_refused(make: Callable[[], Any]) -> None:
    X, y = _classification(2)
    estimator = make().fit(X, np.column_stack([y, 1 - y]))
    with pytest.raises(ValueError, match="multi-output classification"):
        SKLEARN_CONVERTERS[type(estimator)](estimator)


@pytest.mark.parametrize("make, data", [
    (lambda: GradientBoostingRegressor(n_estimators=3, init=LinearRegression()), _regression),
    (lambda: GradientBoostingClassifier(n_estimators=3, init=DecisionTreeClassifier(max_depth=2)), lambda: _classification(2)),
])
def test_unsupported_init_refused(make: Callable[[], Any], data: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
    X, y = data()
    estimator = make().fit(X, y)
    name = type(estimator.init_).__name__
    with pytest.raises(ValueError, match=f"init={name} has no closed form"):
        SKLEARN_CONVERTERS[type(estimator)](estimator)


def test_hgb_negative_category_refused() -> None:
    X, y = _categorical(False)
    X[:, 1] = np.where(X[:, 1] == 300, -2, X[:, 1])
    estimator = HistGradientBoostingRegressor(max_iter=3, categorical_features=CATEGORICAL).fit(X, y)
    with pytest.raises(ValueError, match="not integers in"):
        SKLEARN_CONVERTERS[type(estimator)](estimator)


def test_extra_tree_best_splitter_refuses_nan() -> None:
    X, y = _classification(2)
    estimator = ExtraTreeClassifier(splitter="best", max_depth=4).fit(X, y)
    assert not SKLEARN_CONVERTERS[type(estimator)](estimator).accepts_nan
    assert not _accepts(estimator, np.where(np.eye(1, X.shape[1], dtype=bool), np.nan, X[:1]))


def test_isolation_forest_single_sample_trees() -> None:
    """max_samples=1: c(1) = 0, and scikit-learn sets every score to -2 ** -1."""
    X = _regression()[0]
    estimator = IsolationForest(n_estimators=4, max_samples=1, random_state=0).fit(X)
    _assert_parity(SKLEARN_CONVERTERS[type(estimator)](estimator), estimator, X[:20], np.float64)


# --- edges where each library has its own rule ---


def test_gb_binary_predict_at_zero() -> None:
    X, y = np.array([[0.0], [0.0], [1.0], [1.0], [1.0]]), np.array([0, 1, 0, 0, 1])
    estimator = GradientBoostingClassifier(n_estimators=1, max_depth=1, init="zero").fit(X, y)
    assert estimator.decision_function(X[:1])[0] == 0.0
    assert_labels_equal(served_outputs(SKLEARN_CONVERTERS[type(estimator)](estimator), X)["predict"], estimator.predict(X))


def test_hgb_non_integer_category(fitted: Callable[[str], Fitted]) -> None:
    model = fitted("hgb-reg-categorical")
    X = np.repeat(model.X_test[:1], 4, axis=0)
    X[:, 3] = [0.5, 2.5, -0.5, 4.25]
    _assert_parity(model.ensemble, model.estimator, X, np.float64)
