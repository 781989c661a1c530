"""Exported linear models score like scikit-learn: export, model.npz, load, scorer, against the estimator."""

from __future__ import annotations

import pathlib
import pickle
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import (
    ARDRegression,
    BayesianRidge,
    ElasticNet,
    ElasticNetCV,
    HuberRegressor,
    Lars,
    Lasso,
    LassoCV,
    LassoLars,
    LinearRegression,
    LogisticRegression,
    LogisticRegressionCV,
    MultiTaskElasticNet,
    MultiTaskLasso,
    OrthogonalMatchingPursuit,
    Perceptron,
    Ridge,
    RidgeClassifier,
    RidgeClassifierCV,
    RidgeCV,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, PolynomialFeatures, StandardScaler
from sklearn.svm import LinearSVC, LinearSVR

from tensorwire.server.modeling.export import PickleNotTrustedError, export, export_pickle_file
from tensorwire.server.modeling.registry import Scorer, build_scorer
from tensorwire.server.repository.model_format import ON_REQUEST_OUTPUTS, Manifest, ModelFormatError, TensorSpec, load_model

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

DTYPES = {"float32": np.float32, "float64": np.float64}
# DESIGN.md: (rtol, atol) for fp32 and fp64 models
TOLERANCE = {"float32": (1e-5, 1e-6), "float64": (1e-9, 1e-12)}
INT_LABELS = [-3, 4, 10, 42, 99]
STR_LABELS = ["ant", "bée", "cat", "dög", "ñu"]
SCORE_ROWS = (1, 7, 33, 10_000)


# --- helpers ----------------------------------------------------------------------


def features(rng: np.random.Generator, n: int, n_features: int, wide: bool) -> np.ndarray:
    """Features on different scales and offsets; wide ones (for pipelines) make scalers matter."""
    scales = np.geomspace(0.1, 50.0, n_features) if wide else np.geomspace(0.5, 4.0, n_features)
    offsets = np.linspace(-20.0, 20.0, n_features) if wide else np.linspace(-2.0, 2.0, n_features)
    return rng.normal(size=(n, n_features)) * scales + offsets


def classification(
    seed: int, n_features: int, labels: list[Any], wide: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_score): learnable classes from a random linear rule."""
    rng = np.random.default_rng(seed)
    X = features(rng, 200, n_features, wide)
    z = (X - X.mean(axis=0)) / X.std(axis=0)
    W = rng.normal(size=(n_features, len(labels)))
    index = np.argmax(z @ W + rng.normal(scale=0.5, size=(200, len(labels))), axis=1)
    y = np.asarray(labels, dtype=object if isinstance(labels[0], str) else None)[index]
    return X, y, features(rng, max(SCORE_ROWS), n_features, wide)


def regression(
    seed: int, n_features: int, n_targets: int, wide: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = features(rng, 200, n_features, wide)
    columns = max(n_targets, 1)
    y = X @ rng.normal(size=(n_features, columns)) + rng.normal(size=(200, columns)) + 5.0
    return X, (y[:, 0] if n_targets == 0 else y), features(rng, max(SCORE_ROWS), n_features, wide)


def assert_close(actual: np.ndarray, expected: np.ndarray, dtype: str, what: str = "") -> None:
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def readonly(array: np.ndarray) -> np.ndarray:
    """A read-only view over bytes, as a request tensor arrives (np.frombuffer)."""
    return np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=array.dtype).reshape(array.shape)


def exported_scorer(estimator: Any, tmp_path: pathlib.Path, dtype: str) -> tuple[Manifest, Scorer]:
    path = export(estimator, tmp_path / "model" / "1", dtype=dtype)
    stored = load_model(path)
    return stored.manifest, build_scorer(stored.manifest, stored.arrays, str(path))


def sklearn_outputs(estimator: Any, X: np.ndarray) -> dict[str, np.ndarray]:
    methods = ("predict", "decision_function", "predict_proba")
    return {m: getattr(estimator, m)(X) for m in methods if hasattr(estimator, m)}


def assert_labels_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    if expected.dtype.kind in "OU":
        assert actual.dtype == object
        assert [label.decode("utf-8") for label in actual] == list(expected)
    else:
        assert actual.dtype == (np.float64 if expected.dtype.kind == "f" else expected.dtype.type)
        np.testing.assert_array_equal(actual, expected)


def assert_matches_sklearn(
    estimator: Any,
    tmp_path: pathlib.Path,
    dtype: str,
    X_score: np.ndarray,
    reference: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Manifest:
    """Every output of the exported model equals the estimator's, for batches of 1, 7, 33 and 10k rows."""
    manifest, scorer = exported_scorer(estimator, tmp_path, dtype)
    names = [o.name for o in manifest.outputs if o.name not in ON_REQUEST_OUTPUTS]  # contributions: tests of their own
    for rows in SCORE_ROWS:
        X = X_score[:rows].astype(DTYPES[dtype])
        expected = sklearn_outputs(estimator, X if reference is None else reference(X))
        assert sorted(names) == sorted(expected)
        got = dict(zip(names, scorer.score(readonly(X), names), strict=True))
        for name, want in expected.items():
            spec = next(o for o in manifest.outputs if o.name == name)
            assert got[name].shape == want.shape, name
            assert len(spec.shape) == want.ndim, name
            if manifest.kind == "linear_classifier" and name == "predict":
                assert_labels_equal(got[name], want)
            else:
                assert got[name].dtype == DTYPES[dtype], name
                assert_close(got[name], want, dtype, name)
    return manifest


# --- classifiers ------------------------------------------------------------------

CLASSIFIERS: dict[str, Callable[[], Any]] = {
    "LogisticRegression": lambda: LogisticRegression(max_iter=1000),
    "LogisticRegression-no-intercept": lambda: LogisticRegression(fit_intercept=False, max_iter=1000),
    "LogisticRegressionCV": lambda: LogisticRegressionCV(
        Cs=3, cv=3, max_iter=1000, l1_ratios=(0.0,), scoring="neg_log_loss", use_legacy_attributes=False
    ),
    "SGD-hinge": lambda: SGDClassifier(loss="hinge", random_state=0),
    "SGD-log_loss": lambda: SGDClassifier(loss="log_loss", random_state=0),
    "SGD-modified_huber": lambda: SGDClassifier(loss="modified_huber", random_state=0),
    "SGD-squared_hinge": lambda: SGDClassifier(loss="squared_hinge", random_state=0),
    "SGD-perceptron": lambda: SGDClassifier(loss="perceptron", random_state=0),
    "LinearSVC": lambda: LinearSVC(),
    "LinearSVC-crammer_singer": lambda: LinearSVC(multi_class="crammer_singer"),
    "RidgeClassifier": lambda: RidgeClassifier(),
    "RidgeClassifierCV": lambda: RidgeClassifierCV(),
    "Perceptron": lambda: Perceptron(random_state=0),
    "OvR-LogisticRegression": lambda: OneVsRestClassifier(LogisticRegression(max_iter=1000)),
    "OvR-SGD-log_loss": lambda: OneVsRestClassifier(SGDClassifier(loss="log_loss", random_state=0)),
    "OvR-SGD-modified_huber": lambda: OneVsRestClassifier(SGDClassifier(loss="modified_huber", random_state=0)),
    "OvR-LinearSVC": lambda: OneVsRestClassifier(LinearSVC()),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("label_kind", ["int", "str"])
@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifier_matches_sklearn(
    name: str, n_classes: int, label_kind: str, dtype: str, tmp_path: pathlib.Path
) -> None:
    labels = (INT_LABELS if label_kind == "int" else STR_LABELS)[:n_classes]
    n_features = 3 if label_kind == "int" else 17
    X, y, X_score = classification(n_classes * 100 + n_features, n_features, labels)
    estimator = CLASSIFIERS[name]().fit(X, y)
    manifest = assert_matches_sklearn(estimator, tmp_path, dtype, X_score)
    assert manifest.kind == "linear_classifier"
    assert manifest.params["classes"] == list(estimator.classes_)


@pytest.mark.parametrize("labels", [[1.0, 2.0, -3.0], [False, True], [7, 8]], ids=["float", "bool", "int-binary"])
def test_classifier_label_types(labels: list[Any], tmp_path: pathlib.Path) -> None:
    X, y, X_score = classification(7, 4, labels)
    estimator = LogisticRegression().fit(X, np.asarray(y.tolist()))
    manifest = assert_matches_sklearn(estimator, tmp_path, "float64", X_score)
    assert manifest.outputs[0].datatype == {float: "FP64", bool: "BOOL", int: "INT64"}[type(labels[0])]


# --- regressors -------------------------------------------------------------------

# name -> (factory, supports multi-target y)
REGRESSORS: dict[str, tuple[Callable[[], Any], bool]] = {
    "LinearRegression": (lambda: LinearRegression(), True),
    "LinearRegression-no-intercept": (lambda: LinearRegression(fit_intercept=False), True),
    "Ridge": (lambda: Ridge(alpha=2.0), True),
    "RidgeCV": (lambda: RidgeCV(), True),
    "Lasso": (lambda: Lasso(alpha=0.1), True),
    "LassoCV": (lambda: LassoCV(cv=3), False),
    "ElasticNet": (lambda: ElasticNet(alpha=0.1), True),
    "ElasticNetCV": (lambda: ElasticNetCV(cv=3), False),
    "MultiTaskLasso": (lambda: MultiTaskLasso(alpha=0.1), True),
    "MultiTaskElasticNet": (lambda: MultiTaskElasticNet(alpha=0.1), True),
    "Lars": (lambda: Lars(), True),
    "LassoLars": (lambda: LassoLars(alpha=0.01), True),
    "OrthogonalMatchingPursuit": (lambda: OrthogonalMatchingPursuit(), True),
    "HuberRegressor": (lambda: HuberRegressor(max_iter=500), False),
    "BayesianRidge": (lambda: BayesianRidge(), False),
    "ARDRegression": (lambda: ARDRegression(), False),
    "SGDRegressor": (lambda: SGDRegressor(random_state=0), False),
    "LinearSVR": (lambda: LinearSVR(max_iter=5000), False),
}
MULTI_TASK_ONLY = {"MultiTaskLasso", "MultiTaskElasticNet"}
# (name, targets): 0 = y of shape [n], 1 = y of shape [n, 1], 3 = y of shape [n, 3]
REGRESSOR_CASES = [
    (name, targets)
    for name, (_, multi_ok) in sorted(REGRESSORS.items())
    for targets in ((1, 3) if name in MULTI_TASK_ONLY else (0, 1, 3) if multi_ok else (0,))
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "targets"), REGRESSOR_CASES)
def test_regressor_matches_sklearn(name: str, targets: int, dtype: str, tmp_path: pathlib.Path) -> None:
    factory, _ = REGRESSORS[name]
    n_features = 3 if targets == 3 else 17
    X, y, X_score = regression(targets * 10 + n_features, n_features, targets)
    estimator = factory().fit(X, y)
    manifest = assert_matches_sklearn(estimator, tmp_path, dtype, X_score)
    assert manifest.kind == "linear_regressor"
    # sklearn's predict is 2-D exactly when coef_ is; some estimators ravel a one-column y
    assert manifest.params["multi_target"] is (np.ndim(estimator.predict(X[:2])) == 2)


# --- pipelines --------------------------------------------------------------------


def _float64_if_pipeline(estimator: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """scikit-learn's scalers compute in float32 on float32 input; the exported model folds them
    exactly, so its reference is scikit-learn on the same (float32-valued) input in float64."""
    return (lambda X: X.astype(np.float64)) if isinstance(estimator, Pipeline) else None


PIPELINES: dict[str, Callable[[], Any]] = {
    "standard-logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
    "minmax-maxabs-standard-sgd_huber": lambda: Pipeline(
        [
            ("minmax", MinMaxScaler()),
            ("maxabs", MaxAbsScaler()),
            ("std", StandardScaler()),
            ("clf", SGDClassifier(loss="modified_huber", random_state=0)),
        ]
    ),
    "standard_no_mean-linearsvc": lambda: make_pipeline(StandardScaler(with_mean=False), LinearSVC()),
    "no_std-minmax_range-sgd_log": lambda: make_pipeline(
        StandardScaler(with_std=False),
        MinMaxScaler(feature_range=(-2, 3)),
        SGDClassifier(loss="log_loss", random_state=0),
    ),
    "passthrough-maxabs-ovr": lambda: Pipeline(
        [
            ("skip", "passthrough"),
            ("scale", MaxAbsScaler()),
            ("none", None),
            ("ovr", OneVsRestClassifier(LogisticRegression(max_iter=1000))),
        ]
    ),
    "nested-ridge_classifier": lambda: Pipeline(
        [("prep", make_pipeline(StandardScaler(), MinMaxScaler())), ("clf", RidgeClassifier())]
    ),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_classifier_pipeline_matches_sklearn(name: str, n_classes: int, dtype: str, tmp_path: pathlib.Path) -> None:
    X, y, X_score = classification(
        n_classes, 17, STR_LABELS[:n_classes] if n_classes == 3 else INT_LABELS[:2], wide=True
    )
    estimator = PIPELINES[name]().fit(X, y)
    manifest = assert_matches_sklearn(estimator, tmp_path, dtype, X_score, reference=_float64_if_pipeline(estimator))
    assert manifest.estimator.startswith("Pipeline(")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_regressor_pipeline_matches_sklearn(dtype: str, tmp_path: pathlib.Path) -> None:
    X, y, X_score = regression(3, 7, 3, wide=True)
    estimator = make_pipeline(MinMaxScaler(), StandardScaler(), MaxAbsScaler(), Ridge()).fit(X, y)
    manifest = assert_matches_sklearn(estimator, tmp_path, dtype, X_score, reference=_float64_if_pipeline(estimator))
    assert manifest.estimator == "Pipeline(MinMaxScaler, StandardScaler, MaxAbsScaler, Ridge)"


def test_fp32_pipeline_is_close_to_sklearn_float32_arithmetic(tmp_path: pathlib.Path) -> None:
    """Against scikit-learn's own float32 scaling, still within the fp32 tolerance on well-scaled data."""
    X, y, X_score = classification(11, 5, INT_LABELS[:3], wide=True)
    estimator = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    assert_matches_sklearn(estimator, tmp_path, "float32", X_score[:1000])


# --- hand-computed ----------------------------------------------------------------


def test_hand_computed_binary_logistic(tmp_path: pathlib.Path) -> None:
    estimator = LogisticRegression().fit([[0.0, 0.0], [1.0, 1.0]], ["no", "yes"])
    estimator.coef_, estimator.intercept_ = np.array([[1.0, -2.0]]), np.array([0.5])
    _, scorer = exported_scorer(estimator, tmp_path, "float64")
    X = readonly(np.array([[1.0, 1.0], [0.0, 0.0], [2.0, -1.0]]))
    predict, decision, proba = scorer.score(X, ["predict", "decision_function", "predict_proba"])
    assert list(predict) == [b"no", b"yes", b"yes"]
    np.testing.assert_array_equal(decision, [-0.5, 0.5, 4.5])
    p = 1.0 / (1.0 + np.exp([0.5, -0.5, -4.5]))
    np.testing.assert_allclose(proba, np.column_stack([1 - p, p]), rtol=1e-15)


def test_hand_computed_regressor_and_scaler_folding(tmp_path: pathlib.Path) -> None:
    regressor = LinearRegression().fit([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [0.5, 2.5, -2.5])  # y = 2 a - 3 b + 0.5
    np.testing.assert_allclose(regressor.coef_, [2.0, -3.0], atol=1e-12)
    scaler = MaxAbsScaler().fit([[4.0, -2.0], [2.0, 1.0]])  # x' = [a / 4, b / 2]
    path = export(Pipeline([("scale", scaler), ("reg", regressor)]), tmp_path / "1", dtype="float64")
    stored = load_model(path)
    np.testing.assert_allclose(stored.arrays["coef"], [[0.5, -1.5]], rtol=1e-12)
    np.testing.assert_allclose(stored.arrays["intercept"], [0.5], rtol=1e-12)
    [predict] = build_scorer(stored.manifest, stored.arrays).score(readonly(np.array([[4.0, 2.0]])), ["predict"])
    np.testing.assert_allclose(predict, [2.0 - 3.0 + 0.5], rtol=1e-12)


def test_hand_computed_modified_huber(tmp_path: pathlib.Path) -> None:
    estimator = SGDClassifier(loss="modified_huber").fit([[0.0, 0.0], [1.0, 1.0]], [0, 1])
    estimator.coef_, estimator.intercept_ = np.array([[1.0, 0.0]]), np.array([0.0])
    _, scorer = exported_scorer(estimator, tmp_path, "float64")
    [proba] = scorer.score(readonly(np.array([[-2.0, 9.0], [0.5, 0.0], [3.0, 0.0]])), ["predict_proba"])
    np.testing.assert_array_equal(proba, [[1.0, 0.0], [0.25, 0.75], [0.0, 1.0]])


# --- the manifest -----------------------------------------------------------------


def test_manifest_round_trip(tmp_path: pathlib.Path) -> None:
    X, y, _ = classification(1, 6, STR_LABELS[:3])
    estimator = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    path = export(estimator, tmp_path / "m" / "3", dtype="float32")
    assert path == tmp_path / "m" / "3" / "model.npz"
    stored = load_model(path)
    manifest = stored.manifest
    assert manifest.kind == "linear_classifier"
    assert manifest.estimator == "SGDClassifier"
    assert manifest.inputs == [TensorSpec("input", "FP32", [-1, 6])]
    assert manifest.outputs == [
        TensorSpec("predict", "BYTES", [-1]),
        TensorSpec("decision_function", "FP32", [-1, 3]),
        TensorSpec("predict_proba", "FP32", [-1, 3]),
    ]
    assert manifest.params == {"classes": STR_LABELS[:3], "label_datatype": "BYTES", "link": "ovr_logistic"}
    assert {name: a.dtype for name, a in stored.arrays.items()} == {"coef": np.float64, "intercept": np.float64}
    np.testing.assert_array_equal(stored.arrays["coef"], estimator.coef_)
    np.testing.assert_array_equal(stored.arrays["intercept"], estimator.intercept_)
    assert Manifest.from_json(manifest.to_json(), path) == manifest


@pytest.mark.parametrize(
    ("factory", "link"),
    [
        (lambda: LogisticRegression(), "softmax"),
        (lambda: SGDClassifier(loss="modified_huber"), "modified_huber"),
        (lambda: OneVsRestClassifier(LogisticRegression()), "onevsrest_logistic"),
        (lambda: OneVsRestClassifier(SGDClassifier(loss="modified_huber")), "onevsrest_modified_huber"),
        (lambda: LinearSVC(), "none"),
    ],
)
def test_manifest_link(factory: Callable[[], Any], link: str, tmp_path: pathlib.Path) -> None:
    X, y, _ = classification(2, 4, INT_LABELS[:3])
    stored = load_model(export(factory().fit(X, y), tmp_path, dtype="float64"))
    assert stored.manifest.params["link"] == link
    assert ("predict_proba" in [o.name for o in stored.manifest.outputs]) is (link != "none")


# --- the scorer -------------------------------------------------------------------


def test_scorer_answers_outputs_in_the_order_asked_and_refuses_unknown(tmp_path: pathlib.Path) -> None:
    X, y, X_score = classification(4, 5, INT_LABELS[:3])
    estimator = LogisticRegression().fit(X, y)
    _, scorer = exported_scorer(estimator, tmp_path, "float64")
    Xr = readonly(X_score[:9])
    proba, predict = scorer.score(Xr, ["predict_proba", "predict"])
    assert_close(proba, estimator.predict_proba(Xr), "float64")
    np.testing.assert_array_equal(predict, estimator.predict(Xr))
    [only_labels] = scorer.score(Xr, ["predict"])
    np.testing.assert_array_equal(only_labels, predict)
    with pytest.raises(ValueError, match="transform"):
        scorer.score(Xr, ["transform"])
    with pytest.raises(ValueError, match=r"expects input \[-1, 5\], got \[9, 4\]"):
        scorer.score(readonly(X_score[:9, :4]), ["predict"])


def test_scorer_refuses_a_manifest_that_disagrees_with_its_arrays(tmp_path: pathlib.Path) -> None:
    X, y, _ = classification(9, 4, INT_LABELS[:2])
    stored = load_model(export(LogisticRegression().fit(X, y), tmp_path / "c"))
    manifest, arrays = stored.manifest, stored.arrays
    bad_link = replace(manifest, params={**manifest.params, "link": "softmax"})
    with pytest.raises(ModelFormatError, match="link 'softmax' is not one of"):
        build_scorer(bad_link, arrays)
    three_classes = replace(manifest, params={**manifest.params, "classes": [1, 2, 3]})
    with pytest.raises(ModelFormatError):
        build_scorer(three_classes, arrays)
    with pytest.raises(ModelFormatError, match="do not fit 4 input features"):
        build_scorer(manifest, {**arrays, "coef": arrays["coef"][:, :3]})
    regressor = load_model(export(LinearRegression().fit(X, X[:, 0]), tmp_path / "r"))
    with pytest.raises(ModelFormatError, match="multi_target"):
        build_scorer(replace(regressor.manifest, params={}), regressor.arrays)
    with pytest.raises(ModelFormatError, match="outputs"):
        build_scorer(replace(regressor.manifest, params={"multi_target": True}), regressor.arrays)


def test_scorer_is_safe_to_call_from_many_threads(tmp_path: pathlib.Path) -> None:
    X, y, X_score = classification(5, 8, STR_LABELS[:5])
    estimator = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    _, scorer = exported_scorer(estimator, tmp_path, "float32")
    batches = [readonly(X_score[i * 100 : (i + 1) * 100 + i].astype(np.float32)) for i in range(16)]
    expected = [scorer.score(b, ["predict_proba", "predict"]) for b in batches]
    results: dict[int, list[np.ndarray]] = {}

    def work(i: int) -> None:
        for _ in range(20):
            results[i] = scorer.score(batches[i], ["predict_proba", "predict"])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(16):
        np.testing.assert_array_equal(results[i][0], expected[i][0])
        np.testing.assert_array_equal(results[i][1], expected[i][1])


# --- refusals ---------------------------------------------------------------------


def test_refuses_unfitted_estimator(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match=r"cannot export LogisticRegression: it is not fitted"):
        export(LogisticRegression(), tmp_path)
    with pytest.raises(ValueError, match=r"step 'standardscaler' \(StandardScaler\) of Pipeline: it is not fitted"):
        export(make_pipeline(StandardScaler(), LogisticRegression()), tmp_path)
    assert not (tmp_path / "model.npz").exists()


def test_refuses_unsupported_estimator(tmp_path: pathlib.Path) -> None:
    X, y, _ = classification(6, 3, INT_LABELS[:2])
    with pytest.raises(
        TypeError,
        match=r"cannot export GaussianNB: no exporter for GaussianNB \(supported: .*LogisticRegression",
    ):
        export(GaussianNB().fit(X, y), tmp_path)
    with pytest.raises(TypeError, match=r"OneVsRestClassifier\(GaussianNB\).*binary linear classifiers"):
        export(OneVsRestClassifier(GaussianNB()).fit(X, y), tmp_path)


def test_refuses_unsupported_pipeline_step(tmp_path: pathlib.Path) -> None:
    X, y, _ = classification(6, 3, INT_LABELS[:2])
    pipeline = Pipeline([("poly", PolynomialFeatures()), ("clf", LogisticRegression())]).fit(X, y)
    with pytest.raises(
        TypeError,
        match=r"cannot export step 'poly' \(PolynomialFeatures\) of Pipeline: only MaxAbsScaler, MinMaxScaler, StandardScaler",
    ):
        export(pipeline, tmp_path)
    final = Pipeline([("scale", StandardScaler()), ("bayes", GaussianNB())]).fit(X, y)
    with pytest.raises(TypeError, match=r"cannot export step 'bayes' \(GaussianNB\) of Pipeline"):
        export(final, tmp_path)
    with pytest.raises(ValueError, match=r"last step 'clf' is 'passthrough'"):
        export(Pipeline([("scale", StandardScaler()), ("clf", "passthrough")]).fit(X, y), tmp_path)


def test_refuses_min_max_scaler_with_clip(tmp_path: pathlib.Path) -> None:
    X, y, _ = classification(6, 3, INT_LABELS[:2])
    pipeline = Pipeline([("mm", MinMaxScaler(clip=True)), ("clf", LogisticRegression())]).fit(X, y)
    with pytest.raises(ValueError, match=r"step 'mm' \(MinMaxScaler\) of Pipeline: clip=True .* not an affine map"):
        export(pipeline, tmp_path)


def test_refuses_multilabel_and_bad_dtype(tmp_path: pathlib.Path) -> None:
    X, _, _ = classification(6, 3, INT_LABELS[:2])
    Y = (X[:, :3] > X[:, :3].mean(axis=0)).astype(int)
    with pytest.raises(ValueError, match="multilabel"):
        export(OneVsRestClassifier(LogisticRegression()).fit(X, Y), tmp_path)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        export(LinearRegression().fit(X, X[:, 0]), tmp_path, dtype="float16")


class _Tripwire:
    """Unpickling this object creates a file: proof that loading ran code."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_needs_explicit_trust(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.joblib"
    evil.write_bytes(pickle.dumps(_Tripwire(marker)))
    with pytest.raises(PickleNotTrustedError, match=r"arbitrary code.*--trust-pickle"):
        export_pickle_file(evil, tmp_path / "out", trust_pickle=False)
    assert not marker.exists()
    with pytest.raises(TypeError, match="NoneType"):  # trusted: it ran, then export refused the result
        export_pickle_file(evil, tmp_path / "out", trust_pickle=True)
    assert marker.exists()


def test_pickle_file_export_when_trusted(tmp_path: pathlib.Path) -> None:
    X, y, X_score = classification(8, 4, STR_LABELS[:3])
    estimator = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    joblib.dump(estimator, tmp_path / "model.joblib")
    path = export_pickle_file(tmp_path / "model.joblib", tmp_path / "v1", trust_pickle=True, dtype="float64")
    stored = load_model(path)
    [proba] = build_scorer(stored.manifest, stored.arrays).score(readonly(X_score[:50]), ["predict_proba"])
    assert_close(proba, clone(estimator).fit(X, y).predict_proba(X_score[:50]), "float64")
