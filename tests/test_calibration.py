"""CalibratedClassifierCV exported and scored like scikit-learn: export, model.npz, load, scorer; and over gRPC.

Every classifier tensorwire exports, bare, in a Pipeline, or as the CalibratedClassifierCV's preprocessing's final
step, is calibrated with "sigmoid" and "isotonic", ensemble=True and False, two and three classes, and scored as fp32
and fp64 models. predict_proba must match scikit-learn's (on the same rows, widened to float64 as scikit-learn widens
them) to DESIGN.md's tolerances: 1e-9 relative + 1e-12 absolute for fp64 models, 1e-5 + 1e-6 for fp32 ones. predict
must equal scikit-learn's except where scikit-learn's top two probabilities are within that tolerance of each other
(isotonic plateaus make exact ties common), and even there it must name one of the tied classes.
"""

from __future__ import annotations

import pathlib
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.ensemble import ExtraTreesClassifier, GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import (
    LogisticRegression,
    LogisticRegressionCV,
    Perceptron,
    RidgeClassifier,
    RidgeClassifierCV,
    SGDClassifier,
)
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, RadiusNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, PolynomialFeatures, StandardScaler
from sklearn.svm import SVC, LinearSVC, NuSVC
from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

import tensorwire
from tensorwire.client import InferenceClient
from tensorwire.kernels import config
from tensorwire.server.modeling.export import export
from tensorwire.server.modeling.registry import EXPORTERS, Scorer, build_scorer, load_families
from tensorwire.server.repository.model_format import Manifest, ModelFormatError, load_model

pytestmark = pytest.mark.filterwarnings("ignore")  # convergence warnings of tiny fits say nothing here

RTOL = {"float32": 1e-5, "float64": 1e-9}
ATOL = {"float32": 1e-6, "float64": 1e-12}
N_FEATURES = 5

# Every classifier tensorwire exports (test_every_exported_classifier_is_calibrated checks the list is complete).
CLASSIFIERS: dict[str, Callable[[], Any]] = {
    "LogisticRegression": lambda: LogisticRegression(),
    "LogisticRegressionCV": lambda: LogisticRegressionCV(Cs=3, cv=2),
    "SGDClassifier": lambda: SGDClassifier(random_state=0),
    "SGDClassifier(log_loss)": lambda: SGDClassifier(loss="log_loss", random_state=0),
    "LinearSVC": lambda: LinearSVC(),
    "RidgeClassifier": lambda: RidgeClassifier(),
    "RidgeClassifierCV": lambda: RidgeClassifierCV(),
    "Perceptron": lambda: Perceptron(random_state=0),
    "OneVsRestClassifier": lambda: OneVsRestClassifier(LogisticRegression()),
    "SVC": lambda: SVC(),
    "SVC(poly, ovo)": lambda: SVC(kernel="poly", degree=2, decision_function_shape="ovo"),
    "SVC(linear)": lambda: SVC(kernel="linear"),
    "NuSVC": lambda: NuSVC(nu=0.3),
    "Pipeline(StandardScaler, SVC)": lambda: make_pipeline(StandardScaler(), SVC()),
    "Pipeline(MinMaxScaler, PCA, LogisticRegression)": lambda: make_pipeline(MinMaxScaler(), PCA(3), LogisticRegression()),
    "CalibratedClassifierCV(LinearSVC)": lambda: CalibratedClassifierCV(LinearSVC(), cv=2),  # calibrated on predict_proba
    # trees: predict_proba (forests) or decision_function (boosting)
    "DecisionTreeClassifier": lambda: DecisionTreeClassifier(max_depth=4, random_state=0),
    "ExtraTreeClassifier": lambda: ExtraTreeClassifier(max_depth=4, random_state=0),
    "RandomForestClassifier": lambda: RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0),
    "ExtraTreesClassifier": lambda: ExtraTreesClassifier(n_estimators=5, max_depth=4, random_state=0),
    "GradientBoostingClassifier": lambda: GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0),
    "HistGradientBoostingClassifier": lambda: HistGradientBoostingClassifier(max_iter=10, random_state=0),
    # calibrated on predict_proba
    "KNeighborsClassifier": lambda: KNeighborsClassifier(n_neighbors=5),
    "RadiusNeighborsClassifier": lambda: RadiusNeighborsClassifier(radius=4.0, outlier_label="most_frequent"),
    "MLPClassifier": lambda: MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0),
}
METHODS = ("sigmoid", "isotonic")


# --- helpers ---------------------------------------------------------------------------


def readonly(a: np.ndarray) -> np.ndarray:
    """The array as a request delivers it: a read-only np.frombuffer view."""
    a = np.ascontiguousarray(a)
    return np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)


def fit(estimator: Any, X: np.ndarray, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(X, y)


def exported_scorer(estimator: Any, where: pathlib.Path, dtype: str) -> tuple[Manifest, Scorer]:
    path = export(estimator, where / dtype / "1", dtype=dtype)
    stored = load_model(path)
    return stored.manifest, build_scorer(stored.manifest, stored.arrays, str(path))


def dataset(n_classes: int, seed: int = 0, n_rows: int = 150) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(n_rows, N_FEATURES, n_informative=3, n_redundant=1, n_classes=n_classes,
                               n_clusters_per_class=1, class_sep=0.8, flip_y=0.05, random_state=seed)
    labels = np.array(["ant", "bée", "cat"])[y] if n_classes == 3 else y * 3 - 1  # str and int labels
    return X * 4 + 2, labels


def queries(X: np.ndarray, seed: int) -> list[np.ndarray]:
    """Batches of 1, 7 and ~250 rows: spread like X, exact training rows (isotonic thresholds), repeats, rows far outside."""
    rng = np.random.default_rng(seed)
    spread = X[rng.integers(0, len(X), 200)] + rng.normal(scale=0.5, size=(200, X.shape[1])) * X.std(axis=0)
    far = X.mean(axis=0) + rng.normal(size=(20, X.shape[1])) * X.std(axis=0) * 30
    big = np.vstack([spread, X[:20], np.repeat(X[:3], 4, axis=0), far, np.zeros((1, X.shape[1]))])
    return [X[7:8], spread[:7], big]


def assert_matches(estimator: Any, manifest: Manifest, scorer: Scorer, Q: np.ndarray, dtype: str, what: str) -> None:
    rows = Q.astype(dtype)
    predict, proba = scorer.score(readonly(rows), ["predict", "predict_proba"])
    ref_proba = estimator.predict_proba(rows.astype(np.float64))
    ref_predict = estimator.predict(rows.astype(np.float64))
    assert proba.dtype == np.dtype(dtype) and proba.shape == ref_proba.shape, what
    tol = RTOL[dtype] * np.abs(ref_proba) + ATOL[dtype]
    err = np.abs(proba.astype(np.float64) - ref_proba)
    if not np.all(err <= tol):
        worst = np.unravel_index(np.argmax(err - tol), err.shape)
        raise AssertionError(f"{what}: predict_proba off by {err[worst]:.3g} at {worst}: ours {proba[worst]!r}, sklearn {ref_proba[worst]!r}")
    labels = np.array([p.decode() for p in predict], dtype=object) if predict.dtype == object else predict
    classes = [c.decode() if isinstance(c, bytes) else c for c in manifest.params["classes"]]
    assert list(classes) == list(estimator.classes_), what
    top2 = np.sort(ref_proba, axis=1)[:, -2:]
    near_tie = top2[:, 1] - top2[:, 0] <= 2 * (RTOL[dtype] * top2[:, 1] + ATOL[dtype])
    differ = labels != ref_predict
    assert not np.any(differ & ~near_tie), f"{what}: labels differ on rows {np.flatnonzero(differ & ~near_tie)[:10]}, not near ties"
    ours_index = np.searchsorted(estimator.classes_, labels.astype(estimator.classes_.dtype))
    ours_proba = ref_proba[np.arange(len(rows)), ours_index]
    assert np.all(ours_proba >= top2[:, 1] - 2 * (RTOL[dtype] * top2[:, 1] + ATOL[dtype])), f"{what}: a label that is not one of the tied classes"
    assert scorer.score(readonly(rows), ["predict_proba"])[0].shape == ref_proba.shape  # one output alone


def check_everywhere(estimator: Any, X: np.ndarray, tmp_path: pathlib.Path, what: str, seed: int = 1) -> None:
    for dtype in ("float32", "float64"):
        manifest, scorer = exported_scorer(estimator, tmp_path, dtype)
        assert manifest.kind == "calibrated_classifier"
        assert [(o.name, o.datatype, o.shape) for o in manifest.outputs] == [
            ("predict", manifest.outputs[0].datatype, [-1]), ("predict_proba", "FP32" if dtype == "float32" else "FP64", [-1, len(estimator.classes_)])]
        for Q in queries(X, seed):
            assert_matches(estimator, manifest, scorer, Q, dtype, f"{what} {dtype} {len(Q)} rows")


@pytest.fixture(scope="module")
def data() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {k: dataset(k) for k in (2, 3)}


# --- every classifier, both methods, both ensembles ----------------------------------------


def test_every_exported_classifier_is_calibrated() -> None:
    load_families()
    exported = {cls for cls in EXPORTERS if issubclass(cls, ClassifierMixin)}
    covered: set[type] = set()
    for make in CLASSIFIERS.values():
        estimator = make()
        covered.add(type(estimator.steps[-1][1]) if hasattr(estimator, "steps") else type(estimator))
    assert exported <= covered, f"not calibrated in these tests: {sorted(c.__name__ for c in exported - covered)}"


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("ensemble", [True, False])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_calibrated_classifier_matches_sklearn(
    name: str, method: str, ensemble: bool, n_classes: int, data: dict[int, tuple[np.ndarray, np.ndarray]], tmp_path: pathlib.Path
) -> None:
    X, y = data[n_classes]
    estimator = fit(CalibratedClassifierCV(CLASSIFIERS[name](), method=method, ensemble=ensemble, cv=3), X, y)
    assert len(estimator.calibrated_classifiers_) == (3 if ensemble else 1)
    check_everywhere(estimator, X, tmp_path, f"CalibratedClassifierCV({name}, {method}, ensemble={ensemble}, {n_classes} classes)")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("inner", ["LinearSVC", "SVC", "LogisticRegression"])
def test_calibrated_classifier_inside_a_pipeline(inner: str, method: str, data: dict[int, tuple[np.ndarray, np.ndarray]], tmp_path: pathlib.Path) -> None:
    """make_pipeline(scalers, CalibratedClassifierCV(...)): the steps run before every calibrated classifier's own."""
    for n_classes in (2, 3):
        X, y = data[n_classes]
        estimator = fit(make_pipeline(MinMaxScaler(), StandardScaler(), CalibratedClassifierCV(CLASSIFIERS[inner](), method=method, cv=3)), X, y)
        check_everywhere(estimator, X, tmp_path / str(n_classes), f"Pipeline(..., CalibratedClassifierCV({inner}, {method}))")
    # steps inside and outside together
    X, y = data[3]
    around = CalibratedClassifierCV(make_pipeline(StandardScaler(), SVC()), method=method, cv=3)
    estimator = fit(make_pipeline(MinMaxScaler(), around), X, y)
    check_everywhere(estimator, X, tmp_path / "both", f"Pipeline(MinMaxScaler, CalibratedClassifierCV(Pipeline(StandardScaler, SVC)), {method})")


def test_the_scikit_learn_1_9_replacement_for_svc_probability(data: dict[int, tuple[np.ndarray, np.ndarray]], tmp_path: pathlib.Path) -> None:
    """CalibratedClassifierCV(SVC(), ensemble=False), as scikit-learn 1.9's deprecation of probability=True advises; default cv."""
    for n_classes in (2, 3):
        X, y = data[n_classes]
        estimator = fit(CalibratedClassifierCV(SVC(), ensemble=False), X, y)
        check_everywhere(estimator, X, tmp_path / str(n_classes), f"CalibratedClassifierCV(SVC(), ensemble=False) {n_classes} classes")


@pytest.mark.parametrize("method", METHODS)
def test_prefit_classifier_in_a_frozen_estimator(method: str, data: dict[int, tuple[np.ndarray, np.ndarray]], tmp_path: pathlib.Path) -> None:
    for n_classes in (2, 3):
        X, y = data[n_classes]
        prefit = fit(make_pipeline(StandardScaler(), LinearSVC()), X[:80], y[:80])
        estimator = fit(CalibratedClassifierCV(FrozenEstimator(prefit), method=method), X[80:], y[80:])
        check_everywhere(estimator, X, tmp_path / str(n_classes), f"CalibratedClassifierCV(FrozenEstimator, {method}) {n_classes} classes")


# --- adversarial data ------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_constant_decision_values(method: str, tmp_path: pathlib.Path) -> None:
    """Training rows all alike: every fold's decision values are one constant (isotonic keeps a single threshold)."""
    for n_classes in (2, 3):
        X = np.tile([[1.0, -2.0, 0.5, 3.0, 0.0]], (60, 1))
        y = np.arange(60) % n_classes
        estimator = fit(CalibratedClassifierCV(LogisticRegression(), method=method, cv=3), X, y)
        if method == "isotonic":
            assert all(len(c.X_thresholds_) == 1 for m in estimator.calibrated_classifiers_ for c in m.calibrators)
        rng = np.random.default_rng(3)
        for dtype in ("float32", "float64"):
            manifest, scorer = exported_scorer(estimator, tmp_path / str(n_classes), dtype)
            for Q in (X[:1], X[:5] + rng.normal(size=(5, 5)), rng.normal(size=(40, 5)) * 100):
                assert_matches(estimator, manifest, scorer, Q, dtype, f"constant {method} {n_classes} classes {dtype}")


def test_isotonic_zero_sum_rows_and_probabilities_just_above_one(data: dict[int, tuple[np.ndarray, np.ndarray]], tmp_path: pathlib.Path) -> None:
    """Rows where every class's calibrator says 0 get the uniform distribution; values in (1, 1 + 1e-5] become 1, others stay."""
    X, y = data[3]
    estimator = fit(CalibratedClassifierCV(LinearSVC(), method="isotonic", cv=3), X, y)
    for member in estimator.calibrated_classifiers_:
        for calibrator in member.calibrators:  # zero below the median threshold: some rows have all three at zero
            x, t = calibrator.X_thresholds_, calibrator.y_thresholds_
            calibrator.y_thresholds_ = np.where(x < np.median(x), 0.0, t)
            calibrator._build_f(x, calibrator.y_thresholds_)
    Q = queries(X, 5)[2]
    ref = estimator.predict_proba(Q)
    assert np.any(np.all(ref == 1 / 3, axis=1)), "no row takes the uniform fallback"
    check_everywhere(estimator, X, tmp_path / "zero", "isotonic with zero-sum rows")

    X2, y2 = data[2]
    binary = fit(CalibratedClassifierCV(LogisticRegression(), method="isotonic", ensemble=False, cv=3), X2, y2)
    (calibrator,) = binary.calibrated_classifiers_[0].calibrators
    x, t = calibrator.X_thresholds_, calibrator.y_thresholds_.copy()
    t[-1] = 1 + 4e-6  # clipped to 1 by scikit-learn
    t[-2] = 1 + 3e-5 if len(t) > 2 else t[-2]  # left alone
    calibrator.y_thresholds_ = t
    calibrator._build_f(x, t)
    ref = binary.predict_proba(X2)
    assert np.any(ref[:, 1] == 1.0) and np.any(ref[:, 0] < 0)
    check_everywhere(binary, X2, tmp_path / "above", "isotonic with thresholds above 1")


def test_float32_fitted_thresholds(tmp_path: pathlib.Path) -> None:
    """Fitted on float32 rows, LogisticRegression's decision values and the isotonic thresholds are float32."""
    for n_classes in (2, 3):
        X, y = dataset(n_classes, seed=4)
        X32 = X.astype(np.float32)
        estimator = fit(CalibratedClassifierCV(LogisticRegression(), method="isotonic", cv=3), X32, y)
        assert estimator.calibrated_classifiers_[0].calibrators[0].X_thresholds_.dtype == np.float32
        manifest, scorer = exported_scorer(estimator, tmp_path / str(n_classes), "float32")
        for Q in queries(X, 6):
            assert_matches(estimator, manifest, scorer, Q.astype(np.float32), "float32", f"float32-fitted {n_classes} classes")


@pytest.mark.parametrize("fitted_dtype", [np.float32, np.float64])
def test_isotonic_clips_rows_outside_its_thresholds(fitted_dtype: Any, tmp_path: pathlib.Path) -> None:
    """Thresholds rising to the very ends (no flat end segment): rows beyond them are clipped, not extrapolated."""
    for n_classes in (2, 3):
        X, y = dataset(n_classes, seed=8)
        estimator = fit(CalibratedClassifierCV(LogisticRegression(), method="isotonic", cv=3), X.astype(fitted_dtype), y)
        for member in estimator.calibrated_classifiers_:
            for calibrator in member.calibrators:
                x = calibrator.X_thresholds_
                calibrator.y_thresholds_ = np.linspace(0.1, 0.8, len(x)).astype(x.dtype)
                calibrator._build_f(x, calibrator.y_thresholds_)
        assert estimator.calibrated_classifiers_[0].calibrators[0].X_thresholds_.dtype == fitted_dtype
        manifest, scorer = exported_scorer(estimator, tmp_path / str(n_classes), "float32")
        for Q in queries(X, 11):
            assert_matches(estimator, manifest, scorer, Q.astype(np.float32), "float32", f"sloped ends {n_classes} classes")


def test_parallel_batches(data: dict[int, tuple[np.ndarray, np.ndarray]], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = data[3]
    estimator = fit(CalibratedClassifierCV(make_pipeline(StandardScaler(), SVC()), method="isotonic", cv=3), X, y)
    for dtype in ("float32", "float64"):
        manifest, scorer = exported_scorer(estimator, tmp_path, dtype)
        monkeypatch.setattr(config, "PARALLEL_MIN_ROWS", 64)  # the member scorers take their parallel kernels
        monkeypatch.setattr(config, "THREAD_BUDGET", 2)
        assert_matches(estimator, manifest, scorer, queries(X, 7)[2], dtype, f"parallel {dtype}")
        monkeypatch.setattr(config, "PARALLEL_MIN_ROWS", 4096)


# --- refusals and bad files -----------------------------------------------------------------


def test_refusals(data: dict[int, tuple[np.ndarray, np.ndarray]], tmp_path: pathlib.Path) -> None:
    X, y = data[3]
    temperature = fit(CalibratedClassifierCV(LogisticRegression(), method="temperature", cv=3), X, y)
    with pytest.raises(ValueError, match="method 'temperature' is not supported"):
        export(temperature, tmp_path / "t" / "1")
    bayes = fit(CalibratedClassifierCV(GaussianNB(), cv=3), X, y)
    with pytest.raises(TypeError, match=r"CalibratedClassifierCV \(calibrated classifier 1 of 3\).*no exporter for GaussianNB"):
        export(bayes, tmp_path / "d" / "1")
    poly = fit(CalibratedClassifierCV(make_pipeline(PolynomialFeatures(), LogisticRegression()), cv=3), X, y)
    with pytest.raises(TypeError, match="PolynomialFeatures"):
        export(poly, tmp_path / "p" / "1")
    with pytest.raises(ValueError, match="not fitted"):
        export(CalibratedClassifierCV(LinearSVC()), tmp_path / "u" / "1")


def test_bad_files_and_requests(data: dict[int, tuple[np.ndarray, np.ndarray]], tmp_path: pathlib.Path) -> None:
    X, y = data[3]
    estimator = fit(CalibratedClassifierCV(LinearSVC(), method="sigmoid", cv=3), X, y)
    path = export(estimator, tmp_path / "m" / "1", dtype="float64")
    stored = load_model(path)
    manifest, arrays = stored.manifest, stored.arrays
    build_scorer(manifest, arrays)

    def with_params(**changes: Any) -> Manifest:
        return replace(manifest, params={**manifest.params, **changes})

    member = manifest.params["members"][0]
    bad: list[tuple[Manifest, dict[str, np.ndarray], str]] = [
        (with_params(method="temperature"), arrays, "method"),
        (with_params(members=[]), arrays, "members"),
        (with_params(members=[{**member, "columns": [0, 0, 1]}]), arrays, "columns"),
        (with_params(members=[{**member, "columns": [0, 1, 7]}]), arrays, "columns"),
        (with_params(members=[{**member, "response": "predict"}]), arrays, "response"),
        (with_params(members=[{**member, "kind": "no_such_kind"}]), arrays, "unknown model kind"),
        (manifest, {k: v for k, v in arrays.items() if k != "calibrator0_a"}, "calibrator0_a"),
        (manifest, {k: v for k, v in arrays.items() if k != "member0_coef"}, "member0|coef"),
        (manifest, {**arrays, "calibrator0_b": np.array([np.nan, 0.0, 0.0])}, "NaN"),
    ]
    for broken, broken_arrays, match in bad:
        with pytest.raises(ModelFormatError, match=match):
            build_scorer(broken, broken_arrays)

    scorer = build_scorer(manifest, arrays)
    with pytest.raises(ValueError, match="no output 'decision_function'"):
        scorer.score(readonly(X[:2]), ["decision_function"])
    with pytest.raises(ValueError, match="expects input"):
        scorer.score(readonly(X[:2, :3]), ["predict"])


# --- over gRPC --------------------------------------------------------------------------------


def test_served_over_grpc(data: dict[int, tuple[np.ndarray, np.ndarray]], tmp_path: pathlib.Path, start_tensorwire: Any) -> None:
    X3, y3 = data[3]
    X2, y2 = data[2]
    svc = fit(CalibratedClassifierCV(SVC(), ensemble=False), X3, y3)
    inside = fit(make_pipeline(StandardScaler(), CalibratedClassifierCV(LinearSVC(), method="isotonic", cv=3)), X2, y2)
    repository = tmp_path / "models"
    tensorwire.export(svc, repository / "svc" / "1", dtype="float64")
    tensorwire.export(inside, repository / "inside" / "1", dtype="float32")
    server = start_tensorwire(repository, "--workers", "1")
    with InferenceClient(server.url) as client:
        deadline = time.monotonic() + 60
        while not all(client.model_ready(name) for name in ("svc", "inside")):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        Q = queries(X3, 9)[2]
        got = client.infer("svc", Q)
        assert set(got) == {"predict", "predict_proba"}
        np.testing.assert_allclose(got["predict_proba"], svc.predict_proba(Q), rtol=1e-9, atol=1e-12)
        assert [label.decode() for label in got["predict"]] == list(svc.predict(Q))
        metadata = client.model_metadata("svc")
        assert {o.name: (o.datatype, list(o.shape)) for o in metadata.outputs} == {
            "predict": ("BYTES", [-1]), "predict_proba": ("FP64", [-1, 3])}

        rows = queries(X2, 10)[2].astype(np.float32)
        got = client.infer("inside", rows)
        assert got["predict_proba"].dtype == np.float32
        np.testing.assert_allclose(got["predict_proba"], inside.predict_proba(rows.astype(np.float64)), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got["predict"], inside.predict(rows.astype(np.float64)))
        assert list(client.infer("inside", rows[:1], outputs=["predict"])) == ["predict"]
