"""Exported kernel SVMs, k-means, PCA/TruncatedSVD and their pipelines score like scikit-learn: export, model.npz, load, scorer.

Tolerances are DESIGN.md's (1e-9 relative + 1e-12 absolute for fp64 models, 1e-5 + 1e-6 for fp32 ones) plus the
rounding scikit-learn's own answer carries, reasoned as the kernel tests reason it:

- SVM decision values: 1e-15 times sum_s |alpha_s K(x, sv_s)| + |b| (test_kernels_svm.py); a linear kernel folded
  into weights: 1e-15 times sum_s |alpha_s| sum_j |x_j sv_sj| + |b|;
- k-means: 8 eps (|x|^2 + |c|^2) on squared distances (test_kernels_kmeans.py);
- projections: 4 eps (|x| |W| + |mean| |W|) / divisor (test_kernels_decomposition.py);
- where a pipeline composes steps (a chain of scalers, a projection or a Normalizer before the final estimator),
  scikit-learn rounds each intermediate and tensorwire rounds the composition: the final estimator's input is only
  known to 16 eps times the magnitude of the terms that make it, and that reaches the output through the final
  estimator's gradient (measured here by central differences). A lone scaler is fused in scikit-learn's own order
  and gets no such allowance.

Labels must be identical except on rows whose deciding scores are within that tolerance of a tie; those are counted
and must be few.
"""

from __future__ import annotations

import copy
import pathlib
import threading
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import make_classification, make_regression
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics.pairwise import pairwise_kernels
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, Normalizer, PolynomialFeatures, StandardScaler
from sklearn.svm import SVC, SVR, NuSVC, NuSVR, OneClassSVM

from tensorwire.kernels import config
from tensorwire.server.modeling.export import export
from tensorwire.server.modeling.registry import Scorer, build_scorer
from tensorwire.server.repository.model_format import Manifest, ModelFormatError, load_model

pytestmark = pytest.mark.filterwarnings("ignore")  # SVC(probability=True) is deprecated in scikit-learn 1.9, still supported

DTYPES = {"float32": np.float32, "float64": np.float64}
RTOL = {"float32": 1e-5, "float64": 1e-9}
ATOL = {"float32": 1e-6, "float64": 1e-12}
COND_TOL = 1e-15
EPS = float(np.finfo(np.float64).eps)
ROWS = (1, 7, 333, 3001)
LABELS = ["ant", "bée", "cat", "dög"]


# --- helpers ---------------------------------------------------------------------------


def readonly(a: np.ndarray) -> np.ndarray:
    """The array as a request delivers it: a read-only np.frombuffer view."""
    a = np.ascontiguousarray(a)
    return np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)


def fit(estimator: Any, X: np.ndarray, y: Any = None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(X, y)


def exported_scorer(estimator: Any, tmp_path: pathlib.Path, dtype: str) -> tuple[Manifest, Scorer]:
    path = export(estimator, tmp_path / "model" / "1", dtype=dtype)
    stored = load_model(path)
    return stored.manifest, build_scorer(stored.manifest, stored.arrays, str(path))


def classification(n_classes: int, seed: int, n_rows: int = 180, n_features: int = 6) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(n_rows, n_features, n_informative=4, n_redundant=1, n_classes=n_classes,
                               n_clusters_per_class=1, random_state=seed)
    return X, y


def rows_like(X: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Rows spread like X, the first tenth exact copies of X's rows (support vectors among them)."""
    rng = np.random.default_rng(seed)
    rows = X[rng.integers(0, len(X), n)] + rng.normal(scale=0.5, size=(n, X.shape[1])) * X.std(axis=0)
    copies = min(len(X), max(1, n // 10))
    rows[:copies] = X[:copies]
    return rows


def blobs(n_rows: int, n_features: int, n_centers: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(n_centers, n_features))
    return centres[rng.integers(0, n_centers, n_rows)] + rng.normal(size=(n_rows, n_features))


def split(estimator: Any) -> tuple[list[Any], Any]:
    """(preprocessing steps, final estimator), nested pipelines flattened and passthrough left out."""
    if not isinstance(estimator, Pipeline):
        return [], estimator
    steps: list[Any] = []
    for _, step in estimator.steps:
        if isinstance(step, Pipeline):
            steps.extend(split(step)[0] + [split(step)[1]])
        elif step is not None and not (isinstance(step, str) and step == "passthrough"):
            steps.append(step)
    return steps[:-1], steps[-1]


def final_input(steps: list[Any], X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Z, delta): what scikit-learn hands the final estimator, and a bound on the rounding it carries where tensorwire composes steps.

    `err` bounds Z's absolute error in units of eps, step by step: the error that comes in, scaled as the step scales it,
    plus the rounding of the step's own operations (a subtraction rounds relative to its result, a product or a dot
    product relative to its terms). The input rows are exact.
    """
    Z, err = X, np.zeros_like(X)
    for step in steps:
        out = step.transform(Z)
        if isinstance(step, StandardScaler):
            err = err / (step.scale_ if step.with_std else 1.0) + 2 * np.abs(out)
        elif isinstance(step, MinMaxScaler):
            err = (err + np.abs(Z)) * np.abs(step.scale_) + np.abs(out)
        elif isinstance(step, MaxAbsScaler):
            err = err / step.scale_ + np.abs(out)
        elif isinstance(step, (PCA, TruncatedSVD)):
            W = np.abs(step.components_.T)
            err = (err + np.abs(Z)) @ W
            if isinstance(step, PCA):
                err = (err + np.abs(step.mean_) @ W) / (np.sqrt(step.explained_variance_) if step.whiten else 1.0)
            err = err + np.abs(out)
        elif isinstance(step, Normalizer):
            norms = {"l1": np.abs(Z).sum(axis=1), "l2": np.sqrt((Z * Z).sum(axis=1)), "max": np.abs(Z).max(axis=1)}[step.norm]
            err = (err + np.abs(Z)) / np.where(norms < 10 * EPS, 1.0, norms)[:, None] + np.abs(out)
        else:
            raise TypeError(f"no rounding model for {type(step).__name__}")
        Z = out
    composed = len(steps) > 1 or any(isinstance(s, (PCA, TruncatedSVD, Normalizer)) for s in steps)
    return Z, (16 * EPS * err if composed else np.zeros_like(Z))


def propagated(f: Callable[[np.ndarray], np.ndarray], Z: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """sum_j |df/dz_j| delta_j per row and output (twice, for safety), the gradient by central differences."""
    base = f(Z).reshape(len(Z), -1)
    total = np.zeros_like(base)
    if not delta.any():
        return total
    for j in range(Z.shape[1]):
        h = 1e-6 * max(float(np.abs(Z[:, j]).max()), 1e-300)
        up, down = Z.copy(), Z.copy()
        up[:, j] += h
        down[:, j] -= h
        slope = (f(up).reshape(base.shape) - f(down).reshape(base.shape)) / (2 * h)
        total += np.abs(slope) * delta[:, j:j + 1]
    return 2 * total


def assert_within(ours: np.ndarray, ref: np.ndarray, tol: np.ndarray, what: str) -> None:
    err = np.abs(np.asarray(ours, dtype=np.float64) - ref)
    if err.size and not np.all(err <= tol):
        worst = np.unravel_index(np.argmax(err - tol), err.shape)
        raise AssertionError(f"{what}: max excess {float((err - tol)[worst]):.3g} at {worst}: ours {ours[worst]!r}, sklearn {ref[worst]!r}")


def assert_labels(ours: np.ndarray, ref: np.ndarray, near_tie: np.ndarray, what: str) -> None:
    """Labels equal except on rows near a tie; those must be few."""
    if ref.dtype.kind in "OU":
        ours = np.array([label.decode("utf-8") for label in ours], dtype=object)
    differ = ours != ref
    assert not np.any(differ & ~near_tie), f"{what}: labels differ on rows {np.flatnonzero(differ & ~near_tie)[:10]}, not near ties"
    assert near_tie.sum() <= max(2, 0.01 * len(ref)), f"{what}: {near_tie.sum()} near ties out of {len(ref)}"


def pair_coefficients(model: Any) -> np.ndarray:
    """Dense (n_sv, n_pairs) coefficients in libsvm's pair order (one column for SVR, NuSVR, OneClassSVM)."""
    if not isinstance(model, (SVC, NuSVC)):
        return model.dual_coef_.T
    n_support = model.n_support_
    start = np.concatenate([[0], np.cumsum(n_support)])
    k = len(n_support)
    dense = np.zeros((model.support_vectors_.shape[0], k * (k - 1) // 2))
    p = 0
    for i in range(k):
        for j in range(i + 1, k):
            dense[start[i]:start[i + 1], p] = model.dual_coef_[j - 1, start[i]:start[i + 1]]
            dense[start[j]:start[j + 1], p] = model.dual_coef_[i, start[j]:start[j + 1]]
            p += 1
    return dense


def svm_condition(model: Any, Z: np.ndarray) -> np.ndarray:
    """The size of the sum whose rounding scikit-learn carries too (see the module docstring)."""
    if model.kernel == "linear":
        return np.abs(Z) @ np.abs(model.support_vectors_).T @ np.abs(pair_coefficients(model)) + np.abs(model.intercept_)
    K = pairwise_kernels(Z, model.support_vectors_, metric=model.kernel, gamma=model._gamma, coef0=model.coef0,
                         degree=model.degree, filter_params=True)
    return np.abs(K) @ np.abs(pair_coefficients(model)) + np.abs(model.intercept_)


def check_outputs(estimator: Any, tmp_path: pathlib.Path, dtype: str, X_score: np.ndarray, rows: tuple[int, ...] = ROWS) -> Manifest:
    """Score batches of each size read-only; every output has the declared shape and dtype and matches scikit-learn."""
    manifest, scorer = exported_scorer(estimator, tmp_path, dtype)
    names = [o.name for o in manifest.outputs]
    steps, model = split(estimator)
    for n in rows:
        X = X_score[:n].astype(DTYPES[dtype])
        got = dict(zip(names, scorer.score(readonly(X), names), strict=True))
        for spec in manifest.outputs:
            assert got[spec.name].shape == (n, *spec.shape[1:]), spec
            if spec.datatype in ("FP32", "FP64"):
                assert got[spec.name].dtype == DTYPES[dtype], spec
            elif spec.datatype == "INT64":
                assert got[spec.name].dtype == np.int64, spec
        # scikit-learn on the same (fp32-valued) rows in float64: tensorwire computes in float64 whatever the input.
        X64 = X.astype(np.float64)
        Z, delta = final_input(steps, X64)
        CHECKS[manifest.kind](estimator, model, got, X64, Z, delta, dtype, f"{manifest.estimator} {dtype} {n} rows")
    return manifest


def check_svc(estimator: Any, model: Any, got: dict[str, np.ndarray], X: np.ndarray, Z: np.ndarray, delta: np.ndarray, dtype: str, what: str) -> None:
    k = len(model.classes_)
    as_ovo = copy.deepcopy(model)
    as_ovo.decision_function_shape = "ovo"

    def ovo(Zs: np.ndarray) -> np.ndarray:
        return as_ovo.decision_function(Zs).reshape(len(Zs), -1)

    ref = ovo(Z)
    carried = COND_TOL * svm_condition(model, Z) + propagated(ovo, Z, delta)  # what scikit-learn's own value carries
    tol = ATOL[dtype] + RTOL[dtype] * np.abs(ref) + carried
    flip = np.any(np.abs(ref) <= tol, axis=1)  # some pair's vote could go either way
    near = flip
    if k == 2:
        assert_within(got["decision_function"], ref[:, 0], tol[:, 0], what)
    elif model.decision_function_shape == "ovo":
        assert_within(got["decision_function"], ref, tol, what)
    else:
        # ovr = votes + s / (3 (|s| + 1)), s a sum of k - 1 pair values: its error is at most theirs summed.
        ref_ovr = model.decision_function(Z)
        tol_ovr = ATOL[dtype] + RTOL[dtype] * np.abs(ref_ovr) + tol.sum(axis=1, keepdims=True)
        assert_within(got["decision_function"][~flip], ref_ovr[~flip], tol_ovr[~flip], what)
        if model.break_ties:
            top2 = np.sort(ref_ovr, axis=1)[:, -2:]
            near = flip | (top2[:, 1] - top2[:, 0] <= 2 * tol_ovr[:, 0])
    assert_labels(got["predict"], estimator.predict(X), near, what)
    if "predict_proba" in got:
        ref_p = model.predict_proba(Z)
        # A smooth map of the decision values (|dp/d decision| <= |A| / 4 per pair, the coupling mixes k of them): what
        # those carry reaches the probabilities scaled by at most k |A|; 1e-11 absolute as in test_kernels_svm.py.
        slope = np.abs(np.asarray(model.probA_)).max()
        tol_p = max(ATOL[dtype], 1e-11) + RTOL[dtype] * np.abs(ref_p) + k * slope * carried.max(axis=1, keepdims=True)
        assert_within(got["predict_proba"], ref_p, tol_p, what + " proba")


def check_single_svm(estimator: Any, model: Any, got: dict[str, np.ndarray], X: np.ndarray, Z: np.ndarray, delta: np.ndarray, dtype: str, what: str) -> None:
    one_class = isinstance(model, OneClassSVM)
    f = model.decision_function if one_class else model.predict
    ref = f(Z)
    tol = ATOL[dtype] + RTOL[dtype] * np.abs(ref) + COND_TOL * svm_condition(model, Z)[:, 0] + propagated(f, Z, delta)[:, 0]
    if one_class:
        assert_within(got["decision_function"], ref, tol, what)
        assert_labels(got["predict"], estimator.predict(X), np.abs(ref) <= tol, what)
    else:
        assert_within(got["predict"], ref, tol, what)


def check_kmeans(estimator: Any, model: Any, got: dict[str, np.ndarray], X: np.ndarray, Z: np.ndarray, delta: np.ndarray, dtype: str, what: str) -> None:
    centres = model.cluster_centers_.astype(np.float64)
    # scikit-learn scores a model fitted on float32 in float32 only (float64 rows raise a Cython buffer mismatch).
    fitted = model.cluster_centers_.dtype

    def sq_distances(Zs: np.ndarray) -> np.ndarray:
        return model.transform(Zs.astype(fitted)).astype(np.float64) ** 2

    ref_sq = sq_distances(Z)
    norms = np.einsum("ij,ij->i", Z, Z)[:, None] + np.einsum("ij,ij->i", centres, centres)[None, :]
    # A model fitted on float32 scores in float32 in scikit-learn: its own rounding is float32's.
    eps = float(np.finfo(model.cluster_centers_.dtype).eps)
    tol = ATOL[dtype] + RTOL[dtype] * ref_sq + 8 * eps * norms + propagated(sq_distances, Z, delta)
    assert_within(got["transform"].astype(np.float64) ** 2, ref_sq, tol + 2 * EPS * ref_sq, what)
    order = np.argsort(ref_sq, axis=1)
    first, second = (np.take_along_axis(ref_sq, order[:, i:i + 1], axis=1)[:, 0] for i in (0, 1))
    near = second - first <= 2 * np.take_along_axis(tol, order[:, 1:2], axis=1)[:, 0]
    assert_labels(got["predict"], estimator.predict(X.astype(fitted)), near, what)


def check_projection(estimator: Any, model: Any, got: dict[str, np.ndarray], X: np.ndarray, Z: np.ndarray, delta: np.ndarray, dtype: str, what: str) -> None:
    ref = model.transform(Z)
    W = np.abs(model.components_.T).astype(np.float64)
    size = np.abs(Z) @ W
    if isinstance(model, PCA):
        size = size + np.abs(model.mean_) @ W
        if model.whiten:
            size = size / np.sqrt(model.explained_variance_)
    eps = float(np.finfo(model.components_.dtype).eps)
    tol = ATOL[dtype] + RTOL[dtype] * np.abs(ref) + 4 * eps * size + propagated(model.transform, Z, delta)
    assert_within(got["transform"], ref, tol, what)


def check_linear(estimator: Any, model: Any, got: dict[str, np.ndarray], X: np.ndarray, Z: np.ndarray, delta: np.ndarray, dtype: str, what: str) -> None:
    if "decision_function" in got:
        f = model.decision_function
        ref = f(Z)
        size = np.abs(Z) @ np.abs(np.atleast_2d(model.coef_)).T + np.abs(model.intercept_)
        tol = ATOL[dtype] + RTOL[dtype] * np.abs(ref) + 4 * EPS * size.reshape(ref.shape) + propagated(f, Z, delta).reshape(ref.shape)
        assert_within(got["decision_function"], ref, tol, what)
        top = ref.reshape(len(ref), -1)
        near = np.abs(top[:, 0]) <= tol.reshape(len(ref), -1)[:, 0] if top.shape[1] == 1 else (
            np.diff(np.sort(top, axis=1)[:, -2:], axis=1)[:, 0] <= 2 * tol.max(axis=-1))
        assert_labels(got["predict"], estimator.predict(X), near, what)
    else:
        ref = model.predict(Z)
        size = np.abs(Z) @ np.abs(np.atleast_2d(model.coef_)).T + np.abs(model.intercept_)
        tol = ATOL[dtype] + RTOL[dtype] * np.abs(ref) + 4 * EPS * size.reshape(ref.shape) + propagated(model.predict, Z, delta).reshape(ref.shape)
        assert_within(got["predict"], ref, tol, what)


CHECKS = {
    "svc": check_svc, "svr": check_single_svm, "one_class_svm": check_single_svm, "kmeans": check_kmeans,
    "projection": check_projection, "linear_classifier": check_linear, "linear_regressor": check_linear,
}


# --- kernel SVMs ------------------------------------------------------------------------

# (id, estimator factory, n_classes, string labels, dtype)
SVC_CASES: list[tuple[str, Callable[[], Any], int, bool, str]] = [
    ("rbf-ovr-proba", lambda: SVC(kernel="rbf", C=2.0, probability=True, random_state=0), 3, True, "float64"),
    ("rbf-ovo-4", lambda: SVC(kernel="rbf", gamma="auto", decision_function_shape="ovo"), 4, False, "float32"),
    ("poly-ovr-break_ties", lambda: SVC(kernel="poly", degree=3, coef0=1.0, break_ties=True), 4, True, "float64"),
    ("sigmoid-binary-proba", lambda: SVC(kernel="sigmoid", gamma=0.05, probability=True, random_state=0), 2, True, "float32"),
    ("linear-ovo", lambda: SVC(kernel="linear", decision_function_shape="ovo"), 3, False, "float64"),
    ("linear-binary", lambda: SVC(kernel="linear", C=0.5), 2, False, "float32"),
    ("nu-poly-proba", lambda: NuSVC(kernel="poly", nu=0.3, degree=2, probability=True, random_state=1), 3, False, "float64"),
    ("nu-rbf-binary", lambda: NuSVC(kernel="rbf", nu=0.4), 2, True, "float32"),
]


@pytest.mark.parametrize(("name", "factory", "n_classes", "strings", "dtype"), SVC_CASES, ids=[c[0] for c in SVC_CASES])
def test_svc_matches_sklearn(name: str, factory: Callable[[], Any], n_classes: int, strings: bool, dtype: str, tmp_path: pathlib.Path) -> None:
    X, y = classification(n_classes, seed=n_classes + len(name))
    labels = np.array(LABELS, dtype=object)[y] if strings else y * 3 - 2
    model = fit(factory(), X, labels)
    manifest = check_outputs(model, tmp_path, dtype, rows_like(X, max(ROWS), seed=1))
    assert manifest.kind == "svc"
    assert manifest.params["classes"] == list(model.classes_)
    assert manifest.params["gamma"] == model._gamma  # 'scale' and 'auto' resolved at export
    assert ("predict_proba" in [o.name for o in manifest.outputs]) is ("proba" in name)


@pytest.mark.parametrize("kernel", ["linear", "rbf", "poly", "sigmoid"])
def test_regressors_and_one_class_match_sklearn(kernel: str, tmp_path: pathlib.Path) -> None:
    X, y = make_regression(200, 5, noise=5.0, random_state=2)
    y = y / np.abs(y).max()
    X_score = rows_like(X, max(ROWS), seed=2)
    gamma = 0.05 if kernel == "sigmoid" else "scale"
    models = [SVR(kernel=kernel, C=3.0, gamma=gamma), NuSVR(kernel=kernel, nu=0.4, gamma=gamma), OneClassSVM(kernel=kernel, nu=0.2, gamma=gamma)]
    for i, model in enumerate(models):
        fitted = fit(model, X, None if isinstance(model, OneClassSVM) else y)
        dtype = ("float64", "float32")[i % 2]
        manifest = check_outputs(fitted, tmp_path / str(i), dtype, X_score)
        assert manifest.kind == ("one_class_svm" if isinstance(model, OneClassSVM) else "svr")


# --- k-means and projections ---------------------------------------------------------------


@pytest.mark.parametrize("estimator", [KMeans, MiniBatchKMeans])
@pytest.mark.parametrize("fit_dtype", ["float64", "float32"])
def test_kmeans_matches_sklearn(estimator: Any, fit_dtype: str, tmp_path: pathlib.Path) -> None:
    X = blobs(600, 7, 5, seed=3).astype(fit_dtype)
    kwargs = {"batch_size": 128, "max_iter": 20} if estimator is MiniBatchKMeans else {}
    model = estimator(n_clusters=5, n_init=1, random_state=0, **kwargs).fit(X)
    manifest = check_outputs(model, tmp_path, fit_dtype, blobs(max(ROWS), 7, 5, seed=4))
    assert manifest.kind == "kmeans"
    # predict alone: the labels without the distances
    _, scorer = exported_scorer(model, tmp_path / "again", fit_dtype)
    Xr = readonly(blobs(50, 7, 5, seed=5).astype(fit_dtype))
    [labels] = scorer.score(Xr, ["predict"])
    np.testing.assert_array_equal(labels, scorer.score(Xr, ["transform", "predict"])[1])


@pytest.mark.parametrize(("factory", "dtype"), [
    (lambda: PCA(4), "float64"), (lambda: PCA(3, whiten=True), "float32"), (lambda: PCA(6, whiten=True), "float64"),
    (lambda: TruncatedSVD(3, random_state=0), "float32"), (lambda: TruncatedSVD(5, random_state=0), "float64"),
], ids=["pca", "pca-whiten-fp32", "pca-whiten-full", "tsvd-fp32", "tsvd"])
def test_projections_match_sklearn(factory: Callable[[], Any], dtype: str, tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(6)
    X = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + rng.normal(scale=3.0, size=6)
    model = factory().fit(X)
    manifest = check_outputs(model, tmp_path, dtype, rng.normal(size=(max(ROWS), 6)) @ rng.normal(size=(6, 6)))
    assert manifest.kind == "projection"


# --- pipelines -----------------------------------------------------------------------------

SCALES = np.array([1e-6, 1e-3, 1.0, 1e3, 1e6, 1e9])
OFFSETS = np.array([0.0, 5e3, -1.0, 1e6, 0.0, -3e12])  # means that dwarf the spread

# (id, pipeline factory, target: "classes" | "values" | None, extreme feature scales, expected kind, stage ops)
PIPELINES: list[tuple[str, Callable[[], Any], str | None, bool, str, list[str]]] = [
    ("standard-svc_rbf", lambda: make_pipeline(StandardScaler(), SVC(gamma=0.3, decision_function_shape="ovo")), "classes", True, "svc", []),
    ("minmax-kmeans", lambda: make_pipeline(MinMaxScaler(), KMeans(4, n_init=1, random_state=0)), None, True, "kmeans", []),
    ("maxabs-pca_whiten", lambda: make_pipeline(MaxAbsScaler(), PCA(3, whiten=True)), None, True, "projection", []),
    ("standard-minmax-svr", lambda: make_pipeline(StandardScaler(), MinMaxScaler((-1, 2)), SVR(C=3.0)), "values", False, "svr", []),
    ("standard-minmax-kmeans", lambda: make_pipeline(StandardScaler(), MinMaxScaler(), KMeans(3, n_init=1, random_state=0)), None, True, "kmeans", []),
    ("minmax-maxabs-standard-oneclass", lambda: make_pipeline(MinMaxScaler(), MaxAbsScaler(), StandardScaler(), OneClassSVM(nu=0.2)),
     None, False, "one_class_svm", []),
    ("standard-pca-svc_rbf_proba", lambda: make_pipeline(StandardScaler(), PCA(4), SVC(probability=True, random_state=0)),
     "classes", False, "svc", ["project"]),
    ("normalizer-kmeans", lambda: make_pipeline(Normalizer(), KMeans(3, n_init=1, random_state=0)), None, False, "kmeans", ["normalize"]),
    ("standard-normalizer_l1-svc_poly", lambda: make_pipeline(StandardScaler(), Normalizer("l1"), SVC(kernel="poly", degree=2, coef0=1.0)),
     "classes", False, "svc", ["normalize"]),
    ("pca-standard-pca_whiten", lambda: make_pipeline(PCA(5), StandardScaler(), PCA(3, whiten=True)), None, False, "projection", []),
    ("standard-tsvd-standard-svc_linear", lambda: make_pipeline(StandardScaler(), TruncatedSVD(4, random_state=0), StandardScaler(), SVC(kernel="linear")),
     "classes", False, "svc", []),
    ("pca_whiten-logistic", lambda: make_pipeline(PCA(4, whiten=True), LogisticRegression(max_iter=1000)), "classes", False, "linear_classifier", []),
    ("standard-tsvd-ridge", lambda: make_pipeline(StandardScaler(), TruncatedSVD(3, random_state=0), Ridge()), "values", False, "linear_regressor", []),
    ("nested-pca-normalizer-pca-kmeans", lambda: Pipeline([("prep", make_pipeline(StandardScaler(), PCA(5))), ("norm", Normalizer("max")),
                                                           ("pca", PCA(3)), ("km", MiniBatchKMeans(3, n_init=1, random_state=0))]),
     None, False, "kmeans", ["project", "normalize", "project"]),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("name", "factory", "target", "extreme", "kind", "stages"), PIPELINES, ids=[p[0] for p in PIPELINES])
def test_pipeline_matches_sklearn(
    name: str, factory: Callable[[], Any], target: str | None, extreme: bool, kind: str, stages: list[str], dtype: str, tmp_path: pathlib.Path
) -> None:
    X, y = classification(3, seed=len(name))
    if target == "values":
        y = X @ np.linspace(-1.0, 1.0, X.shape[1]) + 0.1 * np.sin(3 * X[:, 0])
    X_score = rows_like(X, 2000, seed=7)
    if extreme:
        X, X_score = X * SCALES + OFFSETS, X_score * SCALES + OFFSETS
    else:
        X, X_score = X * np.linspace(0.5, 20.0, 6) + np.linspace(-30.0, 30.0, 6), X_score * np.linspace(0.5, 20.0, 6) + np.linspace(-30.0, 30.0, 6)
    pipeline = fit(factory(), X, None if target is None else y)
    # fp32 rows cannot hold features offset by 3e12 to within their spread: extreme scales are an fp64 affair.
    if extreme and dtype == "float32":
        X_score = X_score.astype(np.float32).astype(np.float64)
    manifest = check_outputs(pipeline, tmp_path, dtype, X_score, rows=(1, 5, 2000))
    assert manifest.kind == kind
    assert [s["op"] for s in manifest.params.get("stages", [])] == stages
    assert manifest.estimator.startswith("Pipeline(")


def test_duplicated_rows_score_alike(tmp_path: pathlib.Path) -> None:
    X, y = classification(3, seed=9)
    pipeline = fit(make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)), X, y)
    _, scorer = exported_scorer(pipeline, tmp_path, "float64")
    base = np.concatenate([pipeline[-1].support_vectors_[:3] * pipeline[0].scale_ + pipeline[0].mean_, X[:4]])
    Xt = readonly(np.repeat(base, 11, axis=0))
    decision, proba, labels = scorer.score(Xt, ["decision_function", "predict_proba", "predict"])
    np.testing.assert_allclose(decision, pipeline.decision_function(Xt), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(proba, pipeline.predict_proba(Xt), rtol=1e-9, atol=1e-11)
    np.testing.assert_array_equal(labels, pipeline.predict(Xt))
    np.testing.assert_allclose(decision.reshape(len(base), 11, -1), np.broadcast_to(decision[::11, None], (len(base), 11, 3)), rtol=0, atol=1e-14)


def test_svm_fitted_on_sparse_rows(tmp_path: pathlib.Path) -> None:
    from scipy import sparse

    X, y = classification(3, seed=10)
    X[np.abs(X) < 0.5] = 0.0
    model = fit(SVC(kernel="rbf", decision_function_shape="ovo"), sparse.csr_matrix(X), y)  # sparse support_vectors_ and dual_coef_
    _, scorer = exported_scorer(model, tmp_path, "float64")
    Xt = rows_like(X, 200, seed=11)
    decision, labels = scorer.score(readonly(Xt), ["decision_function", "predict"])
    np.testing.assert_allclose(decision, model.decision_function(sparse.csr_matrix(Xt)), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(labels, model.predict(sparse.csr_matrix(Xt)))


# --- load-time compilation, the parallel path and threads ---------------------------------------


def test_parallel_path_and_concurrent_calls(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = classification(4, seed=12)
    models = {
        "svc": fit(make_pipeline(StandardScaler(), PCA(5), SVC(probability=True, random_state=0)), X, y),
        "kmeans": KMeans(4, n_init=1, random_state=0).fit(X),
        "pca": make_pipeline(MinMaxScaler(), PCA(3, whiten=True)).fit(X),
    }
    batches = [readonly(rows_like(X, 300 + 37 * i, seed=i).astype(np.float32)) for i in range(8)]
    for name, model in models.items():
        manifest, scorer = exported_scorer(model, tmp_path / name, "float32")
        names = [o.name for o in manifest.outputs]
        serial = [scorer.score(b, names) for b in batches]
        monkeypatch.setattr(config, "PARALLEL_MIN_ROWS", 256)  # every batch takes the parallel variants now
        monkeypatch.setattr(config, "THREAD_BUDGET", 2)
        results: dict[int, list[np.ndarray]] = {}

        def work(i: int, scorer: Scorer = scorer, names: list[str] = names, results: dict[int, list[np.ndarray]] = results) -> None:
            for _ in range(5):
                results[i] = scorer.score(batches[i], names)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        monkeypatch.setattr(config, "PARALLEL_MIN_ROWS", 4096)
        for i, want in enumerate(serial):
            for ours, theirs in zip(results[i], want, strict=True):
                if ours.dtype.kind == "f":
                    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7, err_msg=name)  # fp32 outputs of the same float64 sums
                else:
                    np.testing.assert_array_equal(ours, theirs, err_msg=name)


# --- the manifest ---------------------------------------------------------------------------


def test_manifest_of_a_staged_svc(tmp_path: pathlib.Path) -> None:
    X, y = classification(3, seed=13)
    pipeline = fit(make_pipeline(StandardScaler(), PCA(4), MinMaxScaler(), SVC(gamma="scale", probability=True, random_state=0)), X, y)
    stored = load_model(export(pipeline, tmp_path / "1", dtype="float32"))
    m = stored.manifest
    assert (m.kind, m.estimator) == ("svc", "Pipeline(StandardScaler, PCA, MinMaxScaler, SVC)")
    assert m.params["stages"] == [{"op": "project"}]
    assert set(m.params) == {"kernel", "gamma", "coef0", "degree", "classes", "label_datatype", "decision_function_shape",
                             "break_ties", "probability", "stages"}
    assert set(stored.arrays) == {"shift", "scale", "offset", "sv", "sv_sq_norms", "centre", "coef_t", "block_bounds", "block_outputs",
                                  "intercept", "prob_a", "prob_b", "stage0_shift", "stage0_scale", "stage0_offset",
                                  "stage0_components_t", "stage0_bias", "stage0_divisor"}
    np.testing.assert_array_equal(stored.arrays["stage0_shift"], pipeline[0].mean_)  # StandardScaler subtracts first, exactly
    np.testing.assert_array_equal(stored.arrays["scale"], pipeline[2].scale_)  # the MinMaxScaler after PCA is fused into the SVM
    assert m.inputs[0].shape == [-1, 6] and stored.arrays["sv"].shape[1] == 4
    assert [(o.name, o.datatype, o.shape) for o in m.outputs] == [
        ("predict", "INT64", [-1]), ("decision_function", "FP32", [-1, 3]), ("predict_proba", "FP32", [-1, 3])]


def test_linear_steps_fold_into_one_weight_matrix(tmp_path: pathlib.Path) -> None:
    X, y = classification(3, seed=14)
    pipeline = fit(make_pipeline(StandardScaler(), PCA(4, whiten=True), TruncatedSVD(3, random_state=0), LogisticRegression()), X, y)
    stored = load_model(export(pipeline, tmp_path / "1", dtype="float64"))
    assert stored.manifest.kind == "linear_classifier" and stored.arrays["coef"].shape == (3, 6)
    # A linear-kernel SVM after a projection: its weights absorb the projection; the scaler before stays fused.
    svc = fit(make_pipeline(StandardScaler(), PCA(4), SVC(kernel="linear")), X, y)
    stored = load_model(export(svc, tmp_path / "2", dtype="float64"))
    assert stored.manifest.params["stages"] == [] and stored.arrays["sv"].shape == (3, 6)
    np.testing.assert_array_equal(stored.arrays["shift"], svc[0].mean_)


def test_scorer_refuses_a_manifest_that_disagrees_with_its_arrays(tmp_path: pathlib.Path) -> None:
    X, y = classification(3, seed=15)
    stored = load_model(export(fit(make_pipeline(PCA(4), SVC()), X, y), tmp_path / "1"))
    m, arrays = stored.manifest, stored.arrays
    with pytest.raises(ModelFormatError, match="block_bounds"):
        build_scorer(m, {**arrays, "block_bounds": np.array([0, 1, 2, 99])})
    with pytest.raises(ModelFormatError, match="block_outputs"):
        build_scorer(m, {**arrays, "block_outputs": arrays["block_outputs"] + 5})
    with pytest.raises(ModelFormatError, match=r"array 'sv' has shape"):
        build_scorer(m, {**arrays, "sv": arrays["sv"][:, :2]})
    with pytest.raises(ModelFormatError, match="stage 0"):
        build_scorer(replace(m, params={**m.params, "stages": [{"op": "rotate"}]}), arrays)
    with pytest.raises(ModelFormatError, match="kernel"):
        build_scorer(replace(m, params={**m.params, "kernel": "precomputed"}), arrays)
    with pytest.raises(ModelFormatError, match="outputs"):
        build_scorer(replace(m, params={**m.params, "probability": True}), {**arrays, "prob_a": np.ones(3), "prob_b": np.ones(3)})
    _, scorer = exported_scorer(fit(make_pipeline(PCA(4), SVC()), X, y), tmp_path / "2", "float64")
    with pytest.raises(ValueError, match="predict_proba"):
        scorer.score(readonly(X[:3]), ["predict_proba"])
    with pytest.raises(ValueError, match=r"expects input \[-1, 6\], got \[3, 5\]"):
        scorer.score(readonly(X[:3, :5]), ["predict"])


# --- refusals --------------------------------------------------------------------------------


def test_refusals_name_the_step_and_the_estimator(tmp_path: pathlib.Path) -> None:
    X, y = classification(2, seed=16)
    with pytest.raises(ValueError, match=r"step 'normalizer' \(Normalizer\) of Pipeline before LogisticRegression: Normalizer is not a linear map"):
        export(fit(make_pipeline(Normalizer(), LogisticRegression()), X, y), tmp_path)
    with pytest.raises(ValueError, match=r"cannot export SVC: kernel 'precomputed' is not one of"):
        export(fit(SVC(kernel="precomputed"), X @ X.T, y), tmp_path)
    with pytest.raises(ValueError, match=r"cannot export SVC: kernel <function"):
        export(fit(SVC(kernel=lambda a, b: a @ b.T), X, y), tmp_path)
    X3, y3 = classification(3, seed=17)
    with pytest.raises(ValueError, match=r"break_ties=True with decision_function_shape='ovo'"):
        export(fit(SVC(break_ties=True, decision_function_shape="ovo"), X3, y3), tmp_path)
    with pytest.raises(TypeError, match=r"step 'polynomialfeatures' \(PolynomialFeatures\) of Pipeline: only MaxAbsScaler, MinMaxScaler, "
                                        r"StandardScaler .* and Normalizer, PCA, TruncatedSVD can precede"):
        export(fit(make_pipeline(PolynomialFeatures(), SVC()), X, y), tmp_path)
    with pytest.raises(ValueError, match=r"step 'minmaxscaler' \(MinMaxScaler\) of Pipeline: clip=True"):
        export(make_pipeline(MinMaxScaler(clip=True), KMeans(2, n_init=1)).fit(X), tmp_path)
    with pytest.raises(ValueError, match=r"step 'pca' \(PCA\) of Pipeline: it is not fitted"):
        export(Pipeline([("pca", PCA(2)), ("svc", fit(SVC(), X[:, :2], y))]), tmp_path)
    with pytest.raises(ValueError, match=r"Pipeline ending in SVC: the steps before it give 3 features, it was fitted on 6"):
        export(Pipeline([("pca", PCA(3).fit(X)), ("svc", fit(SVC(), X, y))]), tmp_path)
    assert not (tmp_path / "model.npz").exists()
