"""The `contributions` output of linear models: exact SHAP values, as shap.LinearExplainer gives them, and served on request.

shap's Independent masker keeps a random 100 rows of a larger background; tensorwire uses the whole background's
mean, so the oracle here is built with max_samples=len(background).
"""

from __future__ import annotations

import pathlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import shap
from scipy import sparse
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.linear_model import (
    ARDRegression,
    BayesianRidge,
    ElasticNet,
    HuberRegressor,
    Lars,
    Lasso,
    LinearRegression,
    LogisticRegression,
    MultiTaskLasso,
    OrthogonalMatchingPursuit,
    Perceptron,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler
from sklearn.svm import LinearSVC, LinearSVR

import tensorwire
from tensorwire.client import InferenceClient, InferenceServerError
from tensorwire.server.modeling.registry import Scorer, build_scorer
from tensorwire.server.repository.model_format import ModelFormatError, TensorSpec, load_model

from .conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

TOLERANCES = {"float32": (1e-5, 1e-6), "float64": (1e-9, 1e-12)}  # DESIGN.md: relative, absolute
N_FEATURES = 6


def training_data(seed: int, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X, class labels, a real target, rows to explain): features of unlike means and spreads, one far from zero."""
    rng = np.random.default_rng(seed)
    scales = np.array([1.0, 3.0, 0.2, 10.0, 1.0, 0.5])
    means = np.array([0.0, -4.0, 2.0, 50.0, 1e4, 0.0])  # 1e4 +- 1: (x - mean) must not lose what the spread holds
    X = rng.standard_normal((150, N_FEATURES)) * scales + means
    signal = (X - means) / scales
    y = np.argmax(signal[:, :n_classes] + 0.5 * rng.standard_normal((150, n_classes)), axis=1)
    target = signal @ rng.standard_normal(N_FEATURES) + 0.1 * rng.standard_normal(150)
    X_explain = rng.standard_normal((40, N_FEATURES)) * scales * 2 + means  # some rows far from the training mean
    return X, y, target, X_explain


def exported(estimator: Any, path: pathlib.Path, dtype: str, background: Any = None) -> tuple[Any, Scorer]:
    stored = load_model(tensorwire.export(estimator, path, dtype=dtype, background=background))
    return stored, build_scorer(stored.manifest, stored.arrays)


def readonly(X: np.ndarray) -> np.ndarray:
    return np.frombuffer(np.ascontiguousarray(X).tobytes(), dtype=X.dtype).reshape(X.shape)


def shap_layout(values: np.ndarray, expected: Any, n_rows: int) -> np.ndarray:
    """shap's (rows, features[, outputs]) values and expected value(s) laid out as tensorwire's contributions."""
    expected = np.asarray(expected, dtype=np.float64)
    if values.ndim == 2:
        return np.column_stack([values, np.broadcast_to(expected.reshape(-1)[:1], (n_rows, 1))])
    per_output = values.transpose(0, 2, 1)  # [rows, outputs, features], XGBoost's pred_contribs order
    return np.concatenate([per_output, np.broadcast_to(expected[None, :, None], (n_rows, expected.size, 1))], axis=2)


def linear_explainer(model: Any, background: np.ndarray) -> shap.LinearExplainer:
    return shap.LinearExplainer(model, masker=shap.maskers.Independent(background, max_samples=len(background)))


def assert_contributions(got: np.ndarray, want: np.ndarray, dtype: str) -> None:
    rtol, atol = TOLERANCES[dtype]
    assert got.dtype == np.dtype(dtype)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def raw_decision(estimator: Any, X: np.ndarray) -> np.ndarray:
    method = estimator.decision_function if hasattr(estimator, "decision_function") else estimator.predict
    return np.asarray(method(X), dtype=np.float64)


def assert_rows_sum_to_decision(contributions: np.ndarray, decision: np.ndarray, dtype: str) -> None:
    """Each row (or each class's row) sums to the decision value, to the rounding of its largest term."""
    rtol, _ = TOLERANCES[dtype]
    sums = contributions.astype(np.float64).sum(axis=-1)
    scale = np.abs(contributions).astype(np.float64).max(axis=-1) * (N_FEATURES + 1)
    assert np.all(np.abs(sums - decision.reshape(sums.shape)) <= rtol * scale + 1e-12)


# --- every linear kind against shap.LinearExplainer ----------------------------------------

REGRESSORS: dict[str, Callable[[], Any]] = {
    "LinearRegression": LinearRegression,
    "LinearRegression-no-intercept": lambda: LinearRegression(fit_intercept=False),
    "Ridge": Ridge,
    "Lasso": lambda: Lasso(alpha=0.01),
    "ElasticNet": lambda: ElasticNet(alpha=0.01),
    "Lars": Lars,
    "OrthogonalMatchingPursuit": OrthogonalMatchingPursuit,
    "HuberRegressor": lambda: HuberRegressor(max_iter=1000),
    "BayesianRidge": BayesianRidge,
    "ARDRegression": ARDRegression,
    "SGDRegressor": lambda: SGDRegressor(random_state=0),
    "LinearSVR": lambda: LinearSVR(random_state=0, max_iter=5000),
}

CLASSIFIERS: dict[str, tuple[Callable[[], Any], int]] = {
    "LogisticRegression-binary": (lambda: LogisticRegression(max_iter=2000), 2),
    "LogisticRegression-multinomial": (lambda: LogisticRegression(max_iter=2000), 3),
    "SGDClassifier-hinge": (lambda: SGDClassifier(random_state=0), 3),
    "SGDClassifier-log_loss": (lambda: SGDClassifier(loss="log_loss", random_state=0), 2),
    "LinearSVC": (lambda: LinearSVC(random_state=0, max_iter=5000), 4),
    "RidgeClassifier": (RidgeClassifier, 3),
    "Perceptron": (lambda: Perceptron(random_state=0), 2),
}


@pytest.fixture(scope="module")
def fitted() -> dict[str, tuple[Any, np.ndarray, np.ndarray]]:
    """name -> (estimator, its training rows, rows to explain); fitted once for every test of this module."""
    models: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}
    X, _, target, X_explain = training_data(0, 3)
    Xs = (X - X.mean(axis=0)) / X.std(axis=0)  # the gradient-based regressors need scaled inputs to converge
    X_explain_s = (X_explain - X.mean(axis=0)) / X.std(axis=0)
    for name, factory in REGRESSORS.items():
        rows, explain = (Xs, X_explain_s) if name.startswith(("SGD", "LinearSVR", "Huber")) else (X, X_explain)
        models[name] = (factory().fit(rows, target), rows, explain)
    models["Ridge-3-targets"] = (Ridge().fit(X, np.column_stack([target, -target, X[:, 0]])), X, X_explain)
    models["Ridge-1-target-2d"] = (Ridge().fit(X, target[:, None]), X, X_explain)
    models["MultiTaskLasso"] = (MultiTaskLasso(alpha=0.01).fit(X, np.column_stack([target, X[:, 1]])), X, X_explain)
    for name, (factory, n_classes) in CLASSIFIERS.items():
        _, y, _, _ = training_data(1, n_classes)
        models[name] = (factory().fit(Xs, y), Xs, X_explain_s)
    _, y3, _, _ = training_data(1, 3)
    models["OneVsRest-LogisticRegression"] = (OneVsRestClassifier(LogisticRegression(max_iter=2000)).fit(Xs, y3), Xs, X_explain_s)
    return models


def oracle(estimator: Any, background: np.ndarray, X: np.ndarray) -> np.ndarray:
    """shap.LinearExplainer's values and expected value, in tensorwire's layout."""
    if isinstance(estimator, OneVsRestClassifier):  # shap reads coef_ and intercept_; the wrapper has one per class
        model: Any = (np.vstack([e.coef_ for e in estimator.estimators_]), np.concatenate([e.intercept_ for e in estimator.estimators_]))
    else:
        model = estimator
    explainer = linear_explainer(model, background)
    return shap_layout(np.asarray(explainer.shap_values(X)), explainer.expected_value, len(X))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", [*REGRESSORS, "Ridge-3-targets", "Ridge-1-target-2d", "MultiTaskLasso", *CLASSIFIERS, "OneVsRest-LogisticRegression"])
def test_every_linear_kind_matches_shap(name: str, dtype: str, fitted: dict[str, tuple[Any, np.ndarray, np.ndarray]], tmp_path: pathlib.Path) -> None:
    estimator, background, X_explain = fitted[name]
    stored, scorer = exported(estimator, tmp_path / "1", dtype, background)
    k = np.atleast_2d(estimator.coef_).shape[0] if hasattr(estimator, "coef_") else len(estimator.estimators_)
    expected_shape = [-1, N_FEATURES + 1] if k == 1 else [-1, k, N_FEATURES + 1]
    assert stored.manifest.outputs[-1] == TensorSpec("contributions", stored.manifest.input_datatype, expected_shape)
    for rows in (1, 7, 40):
        X = X_explain[:rows].astype(dtype)
        [got] = scorer.score(readonly(X), ["contributions"])
        X64 = X.astype(np.float64)  # the rows the server sees, explained in float64
        assert_contributions(got, oracle(estimator, background, X64), dtype)
        assert_rows_sum_to_decision(got, raw_decision(estimator, X64), dtype)


def test_contributions_come_beside_the_other_outputs_in_the_order_asked(fitted: dict[str, tuple[Any, np.ndarray, np.ndarray]], tmp_path: pathlib.Path) -> None:
    estimator, background, X_explain = fitted["LogisticRegression-multinomial"]
    _, scorer = exported(estimator, tmp_path / "1", "float64", background)
    X = readonly(X_explain)
    proba, contributions, labels = scorer.score(X, ["predict_proba", "contributions", "predict"])
    np.testing.assert_allclose(proba, estimator.predict_proba(X), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(labels, estimator.predict(X))
    assert_contributions(contributions, oracle(estimator, background, X), "float64")
    assert scorer.response_writer(["contributions"], np.zeros(8, np.uint8), [0]) is None  # type: ignore[attr-defined]


def test_hand_computed(tmp_path: pathlib.Path) -> None:
    regressor = LinearRegression().fit([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [0.5, 1.5, -1.5])  # y = a - 2 b + 0.5
    _, scorer = exported(regressor, tmp_path / "1", "float64", background=[[0.0, 0.0], [2.0, 4.0]])  # mean [1, 2]
    [got] = scorer.score(readonly(np.array([[3.0, 1.0]])), ["contributions"])
    np.testing.assert_allclose(got, [[2.0, 2.0, 1.0 - 4.0 + 0.5]], atol=1e-12)  # sums to 3 - 2 + 0.5


# --- pipelines: the raw input columns are explained ------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_standard_scaler_gives_the_mean_without_background(n_classes: int, dtype: str, tmp_path: pathlib.Path) -> None:
    X, y, _, X_explain = training_data(2, n_classes)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the scaler's mean is enough: no warning
        stored, scorer = exported(pipeline, tmp_path / "1", dtype)
    np.testing.assert_allclose(stored.arrays["contributions_mean"], X.mean(axis=0), rtol=1e-12)
    scaler, logistic = pipeline[0], pipeline[-1]
    coef = logistic.coef_ / scaler.scale_  # the model on the raw columns, worked out here independently of the export
    intercept = logistic.intercept_ - coef @ scaler.mean_
    Xd = X_explain.astype(dtype).astype(np.float64)
    explainer = linear_explainer((coef[0], intercept[0]) if n_classes == 2 else (coef, intercept), X)
    [got] = scorer.score(readonly(X_explain.astype(dtype)), ["contributions"])
    assert_contributions(got, shap_layout(np.asarray(explainer.shap_values(Xd)), explainer.expected_value, len(Xd)), dtype)
    assert_rows_sum_to_decision(got, pipeline.decision_function(Xd), dtype)


def test_a_standard_scaler_after_other_scalers_still_gives_the_raw_mean(tmp_path: pathlib.Path) -> None:
    X, _, target, X_explain = training_data(3, 2)
    pipeline = make_pipeline(MinMaxScaler(feature_range=(-1, 2)), MaxAbsScaler(), StandardScaler(with_std=False), Ridge()).fit(X, target)
    stored, scorer = exported(pipeline, tmp_path / "1", "float64")
    np.testing.assert_allclose(stored.arrays["contributions_mean"], X.mean(axis=0), rtol=1e-10)
    [got] = scorer.score(readonly(X_explain), ["contributions"])
    assert_rows_sum_to_decision(got, pipeline.predict(X_explain), "float64")


def interventional_shapley(model: Callable[[np.ndarray], np.ndarray], background: np.ndarray, X: np.ndarray) -> np.ndarray:
    """The definition, evaluated on a model's own outputs: for an additive model (a linear one, whatever steps it
    composes), feature j's value is E_b[f(x_j, b_-j)] - E_b[f(b)], and the expected value is E_b[f(b)]."""
    base = model(background).mean(axis=0)
    values = []
    for j in range(X.shape[1]):
        mixed = np.repeat(background[None], len(X), axis=0)
        mixed[:, :, j] = X[:, None, j]
        values.append(model(mixed.reshape(-1, X.shape[1])).reshape(len(X), len(background), -1).mean(axis=1) - base)
    per_output = np.stack(values, axis=2)  # [rows, outputs, features]
    explained = np.concatenate([per_output, np.broadcast_to(base[None, :, None], (len(X), base.size, 1))], axis=2)
    return explained[:, 0, :] if base.size == 1 else explained


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_projection_pipeline_matches_the_definition_on_the_pipeline_itself(dtype: str, tmp_path: pathlib.Path) -> None:
    """Scalers and PCA fold into the weights; the definition, run on the pipeline's own decision_function, checks the
    folded explanation without sharing its algebra."""
    X, y, _, X_explain = training_data(4, 3)
    pipeline = make_pipeline(MinMaxScaler(), PCA(4, whiten=True), LogisticRegression(max_iter=2000)).fit(X, y)
    background = X[:60]
    _, scorer = exported(pipeline, tmp_path / "1", dtype, background)
    Xd = X_explain.astype(dtype).astype(np.float64)
    want = interventional_shapley(pipeline.decision_function, background, Xd)
    [got] = scorer.score(readonly(Xd.astype(dtype)), ["contributions"])
    rtol, atol = TOLERANCES[dtype]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=max(atol, 1e-11 * np.abs(want).max()))  # sums of 60 evaluations


# --- without a mean: no output, and a warning that says how to give one ----------------------


@pytest.mark.parametrize(
    "factory",
    [
        lambda: Ridge(),
        lambda: make_pipeline(StandardScaler(with_mean=False), Ridge()),
        lambda: make_pipeline(PCA(3), StandardScaler(), Ridge()),  # the scaler's mean is of PCA's output, not of the input
    ],
)
def test_without_a_mean_export_warns_and_the_model_has_no_contributions(factory: Callable[[], Any], tmp_path: pathlib.Path) -> None:
    X, _, target, _ = training_data(5, 2)
    with pytest.warns(UserWarning, match=r"without its 'contributions' output .* background=X_train"):
        stored, scorer = exported(factory().fit(X, target), tmp_path / "1", "float64")
    assert [o.name for o in stored.manifest.outputs] == ["predict"]
    assert "contributions_mean" not in stored.arrays
    with pytest.raises(ValueError, match="has no output 'contributions'"):
        scorer.score(readonly(X[:2]), ["contributions"])


def test_a_calibrated_classifiers_members_neither_explain_nor_warn(tmp_path: pathlib.Path) -> None:
    X, y, _, _ = training_data(6, 2)
    calibrated = CalibratedClassifierCV(make_pipeline(StandardScaler(), LogisticRegression()), cv=2).fit(X, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stored, _ = exported(calibrated, tmp_path / "1", "float64")
    assert not [w for w in caught if "contributions" in str(w.message)]
    assert "contributions" not in [o.name for o in stored.manifest.outputs]
    assert not [name for name in stored.arrays if "contributions" in name]


# --- bad background: clear errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("background", "error", "message"),
    [
        (lambda X: X[:, :4], ValueError, r"background has 4 columns, Ridge was fitted on 6"),
        (lambda X: X[:, 0], ValueError, r"background must be 2-d, rows x features, not of shape \[150\]"),
        (lambda X: X[:0], ValueError, "background has no rows"),
        (lambda X: np.where(np.arange(6) == 2, np.inf, X), ValueError, r"background holds infinity \(first at row 0, column 2\)"),
        (lambda X: np.where((np.arange(150) == 7)[:, None] & (np.arange(6) == 1), np.nan, X), ValueError, r"holds NaN \(first at row 7, column 1\)"),
        (lambda X: X.astype(str).astype(object) + "x", TypeError, "background must hold numbers"),
        (lambda X: sparse.csr_matrix(X), TypeError, r"background must be dense .* \.toarray\(\)"),
    ],
)
def test_bad_background_is_refused_naming_the_problem(background: Callable[[np.ndarray], Any], error: type, message: str, tmp_path: pathlib.Path) -> None:
    X, _, target, _ = training_data(7, 2)
    with pytest.raises(error, match=message):
        tensorwire.export(Ridge().fit(X, target), tmp_path / "1", background=background(X))
    assert not (tmp_path / "1" / "model.npz").exists()


def test_background_columns_must_be_the_fitted_ones_in_order(tmp_path: pathlib.Path) -> None:
    pd = pytest.importorskip("pandas")
    X, _, target, _ = training_data(8, 2)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(N_FEATURES)])
    pipeline = make_pipeline(StandardScaler(), Ridge()).fit(frame, target)
    with pytest.raises(ValueError, match=r"background's columns \['f1', 'f0'"):
        tensorwire.export(pipeline, tmp_path / "1", background=frame[["f1", "f0", "f2", "f3", "f4", "f5"]])
    stored, _ = exported(pipeline, tmp_path / "2", "float64", background=frame.iloc[:50])
    np.testing.assert_allclose(stored.arrays["contributions_mean"], X[:50].mean(axis=0), rtol=1e-15)


def test_the_scorer_refuses_a_manifest_that_disagrees_with_its_arrays(fitted: dict[str, tuple[Any, np.ndarray, np.ndarray]], tmp_path: pathlib.Path) -> None:
    estimator, background, _ = fitted["LogisticRegression-multinomial"]
    stored, _ = exported(estimator, tmp_path / "1", "float32", background)
    without_mean = {name: a for name, a in stored.arrays.items() if name != "contributions_mean"}
    with pytest.raises(ModelFormatError, match="outputs"):
        build_scorer(stored.manifest, without_mean)
    with pytest.raises(ModelFormatError, match="contributions_mean' has shape"):
        build_scorer(stored.manifest, {**stored.arrays, "contributions_mean": stored.arrays["contributions_mean"][:3]})
    with pytest.raises(ModelFormatError, match="contributions_mean' holds NaN"):
        build_scorer(stored.manifest, {**stored.arrays, "contributions_mean": np.full(N_FEATURES, np.nan)})
    undeclared = replace(stored.manifest, outputs=stored.manifest.outputs[:-1])
    with pytest.raises(ModelFormatError, match="outputs"):
        build_scorer(undeclared, stored.arrays)


# --- served: ModelMetadata lists it, a request names it to get it ----------------------------------

@pytest.fixture(scope="module")
def contributions_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("contributions")
    repository = root / "models"
    X, y, target, _ = training_data(9, 3)
    models: dict[str, Any] = {
        "multiclass": LogisticRegression(max_iter=2000).fit(X, y),
        "scaled": Pipeline([("scale", StandardScaler()), ("ridge", Ridge())]).fit(X, target),
    }
    tensorwire.export(models["multiclass"], repository / "multiclass" / "1", dtype="float32", background=X)
    tensorwire.export(models["scaled"], repository / "scaled" / "1", dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no mean: no contributions, as this model is here to show
        tensorwire.export(Ridge().fit(X, target), repository / "plain" / "1", dtype="float64")
    server = start_server(repository, root / "server.log", "--workers", "1")
    with InferenceClient(server.url) as client:
        deadline = time.monotonic() + 60
        while not all(client.model_ready(name) for name in ("multiclass", "scaled", "plain")):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
    try:
        yield server, {**models, "X": X}
    finally:
        stop_server(server)


def test_our_client_gets_contributions_only_when_it_names_them(contributions_server: tuple[RunningServer, dict[str, Any]]) -> None:
    server, served = contributions_server
    X = served["X"]
    rng = np.random.default_rng(10)
    with InferenceClient(server.url) as client:
        metadata = client.model_metadata("multiclass")
        assert {o.name: list(o.shape) for o in metadata.outputs}["contributions"] == [-1, 3, N_FEATURES + 1]
        assert {o.name: list(o.shape) for o in client.model_metadata("scaled").outputs} == {"predict": [-1], "contributions": [-1, N_FEATURES + 1]}
        for batch in (1, 5, 300):
            R = X[rng.integers(0, len(X), batch)] + rng.standard_normal((batch, N_FEATURES))
            assert set(client.infer("multiclass", R.astype(np.float32))) == {"predict", "decision_function", "predict_proba"}
            for _ in range(2):  # the second request takes the request-plan path
                got = client.infer("multiclass", R.astype(np.float32), outputs=["contributions", "predict"])
                R32 = R.astype(np.float32).astype(np.float64)
                assert_contributions(got["contributions"], oracle(served["multiclass"], X, R32), "float32")
                np.testing.assert_array_equal(got["predict"], served["multiclass"].predict(R32))
                got = client.infer("scaled", R, outputs=["contributions"])
                assert list(got) == ["contributions"]
                assert_rows_sum_to_decision(got["contributions"], served["scaled"].predict(R), "float64")
            assert set(client.infer("scaled", R)) == {"predict"}
        with pytest.raises(InferenceServerError) as caught:
            client.infer("plain", X[:2], outputs=["contributions"])
        assert caught.value.code.name == "INVALID_ARGUMENT" and "contributions" in str(caught.value)
        assert client.infer("plain", X[:2])["predict"].shape == (2,)  # the server is unharmed


def test_tritonclient_reads_the_three_dimensional_output(contributions_server: tuple[RunningServer, dict[str, Any]]) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient is installed by .ci/run")
    server, served = contributions_server
    R = served["X"][:11].astype(np.float32)
    client = grpcclient.InferenceServerClient(server.url)
    try:
        config = client.get_model_config("multiclass").config
        assert {o.name: list(o.dims) for o in config.output}["contributions"] == [3, N_FEATURES + 1]
        inp = grpcclient.InferInput("input", list(R.shape), "FP32")
        inp.set_data_from_numpy(R)
        result = client.infer("multiclass", [inp], outputs=[grpcclient.InferRequestedOutput("contributions")])
        got = result.as_numpy("contributions")
        assert_contributions(got, oracle(served["multiclass"], served["X"], R.astype(np.float64)), "float32")
        assert result.as_numpy("predict") is None
    finally:
        client.close()
