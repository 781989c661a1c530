"""Kernel SVM kernels against scikit-learn (SVC, NuSVC, SVR, NuSVR, OneClassSVM) and against hand-computed cases.

Scores must agree within 1e-9 relative plus an absolute term. The absolute term
is 1e-12 plus 1e-15 times the sum's own size, sum_s |alpha_s K(x, sv_s)| + |b|:
scikit-learn's value carries rounding of that order itself (a linear-kernel
decision of 0.001 made of terms near 1e4 is only known to ~1e-12 by libsvm), so
a bar below it would test the summation order, not the kernel.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.metrics.pairwise import pairwise_kernels
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC, SVR, NuSVC, NuSVR, OneClassSVM

from tensorwire.kernels import svm

KERNELS = ["linear", "rbf", "poly", "sigmoid"]
RTOL, ATOL, COND_TOL = 1e-9, 1e-12, 1e-15


def _readonly(a: np.ndarray) -> np.ndarray:
    """The array as a request delivers it: a read-only np.frombuffer view."""
    a = np.ascontiguousarray(a)
    return np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)


def _affine(n_features: int, shift=None, scale=None, offset=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.zeros(n_features) if shift is None else np.asarray(shift, dtype=np.float64),
        np.ones(n_features) if scale is None else np.asarray(scale, dtype=np.float64),
        np.zeros(n_features) if offset is None else np.asarray(offset, dtype=np.float64),
    )


def _params(model, shift=None, scale=None, offset=None) -> dict:
    """The kernel arguments, taken straight from a fitted estimator's attributes."""
    n_features = model.support_vectors_.shape[1]
    shift, scale, offset = _affine(n_features, shift, scale, offset)
    sv, sv_sq, centre = svm.support_vector_params(model.support_vectors_, model.kernel)
    if isinstance(model, (SVC, NuSVC)):
        coef_t, bounds, outputs = svm.svc_coefficients(model.dual_coef_, model.n_support_)
    else:
        coef_t, bounds, outputs = svm.single_output_coefficients(model.dual_coef_)
    return {
        "shift": shift, "scale": scale, "offset": offset, "sv": sv, "sv_sq_norms": sv_sq, "centre": centre, "coef_t": coef_t,
        "block_bounds": bounds, "block_outputs": outputs, "intercept": np.asarray(model.intercept_, dtype=np.float64),
        "kernel_code": svm.KERNEL_CODES[model.kernel], "gamma": float(model._gamma), "coef0": float(model.coef0),
        "degree": int(model.degree),
    }


def _decision(X: np.ndarray, p: dict, parallel: bool = False) -> np.ndarray:
    out = np.empty((X.shape[0], p["intercept"].shape[0]))
    fn = svm.svm_decision_parallel if parallel else svm.svm_decision
    fn(X, p["shift"], p["scale"], p["offset"], p["sv"], p["sv_sq_norms"], p["centre"], p["coef_t"], p["block_bounds"], p["block_outputs"],
       p["intercept"], p["kernel_code"], p["gamma"], p["coef0"], p["degree"], out)
    return out


def _pair_coefficients(model) -> np.ndarray:
    """A plain-NumPy oracle of libsvm's layout: dense (n_sv, n_pairs) coefficients, pair (i, j) in libsvm order."""
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


def _condition(model, X: np.ndarray) -> np.ndarray:
    """sum_s |alpha_s K(x, sv_s)| + |b| per row and output: the size of the sum whose rounding scikit-learn carries too."""
    K = pairwise_kernels(np.asarray(X, dtype=np.float64), model.support_vectors_, metric=model.kernel,
                         gamma=model._gamma, coef0=model.coef0, degree=model.degree, filter_params=True)
    dense = _pair_coefficients(model) if isinstance(model, (SVC, NuSVC)) else model.dual_coef_.T
    return np.abs(K) @ np.abs(dense) + np.abs(model.intercept_)


def _assert_scores_close(ours: np.ndarray, ref: np.ndarray, cond: np.ndarray) -> np.ndarray:
    """Assert |ours - ref| <= tol elementwise and return tol."""
    tol = ATOL + RTOL * np.abs(ref) + COND_TOL * cond
    err = np.abs(ours - ref)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), f"max excess {float((err - tol)[worst]):.3g} at {worst}: ours {ours[worst]!r}, sklearn {ref[worst]!r}"
    return tol


def _assert_labels(ours: np.ndarray, ref: np.ndarray, near_tie: np.ndarray) -> None:
    """Labels equal except on rows whose deciding scores are within tolerance of a tie; those must be few."""
    differ = ours != ref
    assert not np.any(differ & ~near_tie), f"labels differ on rows {np.flatnonzero(differ & ~near_tie)[:10]} that are not near ties"
    assert near_tie.sum() <= max(2, 0.01 * len(ref)), f"{near_tie.sum()} near ties out of {len(ref)}"


def _classification(n_classes: int, n_rows: int = 240, n_features: int = 7, seed: int = 0):
    X, y = make_classification(n_rows, n_features, n_informative=5, n_redundant=1, n_classes=n_classes,
                               n_clusters_per_class=1, random_state=seed)
    return X, y


def _fit(estimator, X, y=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # probability=True is deprecated in scikit-learn 1.9, still supported until 1.11
        return estimator.fit(X, y)


def _prob_ab(model) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(model.probA_, dtype=np.float64), np.asarray(model.probB_, dtype=np.float64)


def _test_rows(X_train: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Rows spread like the training data, plus exact copies of training rows (support vectors among them)."""
    rng = np.random.default_rng(seed)
    rows = X_train[rng.integers(0, len(X_train), n)] + rng.normal(scale=0.5, size=(n, X_train.shape[1]))
    rows[: max(1, n // 10)] = X_train[: max(1, n // 10)]
    return rows


def _svc_outputs(ovo: np.ndarray, k: int) -> np.ndarray:
    labels = np.empty(ovo.shape[0], dtype=np.int64)
    svm.svc_predict(ovo, k, labels)
    return labels


def _vote_near_tie(ref_ovo: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Rows where some one-vs-one decision is within tolerance of 0, so a vote could go either way."""
    return np.any(np.abs(ref_ovo) <= tol, axis=1)


# --- hand-checked cases -------------------------------------------------------------------------


def test_exp_nonpositive_within_one_ulp() -> None:
    xs = np.concatenate([-np.logspace(-300, np.log10(700), 2000), [0.0, -0.0, -0.34657359027997264, -0.3465735902799727, -1.0, -700.0]])
    for x in xs:
        got = svm.exp_nonpositive(float(x))
        want = math.exp(x)
        assert abs(got - want) <= 1.1 * np.spacing(want), (x, got, want)


def test_hand_linear_binary() -> None:
    # decision(x) = -0.5 <x, (1,0)> + 0.5 <x, (0,1)> + 0.25
    p = {
        "shift": np.zeros(2), "scale": np.ones(2), "offset": np.zeros(2), "sv": np.array([[1.0, 0.0], [0.0, 1.0]]),
        "sv_sq_norms": np.zeros(2), "centre": np.zeros(2), "coef_t": np.array([[-0.5], [0.5]]), "block_bounds": np.array([0, 2]),
        "block_outputs": np.zeros((1, 1), dtype=np.int64), "intercept": np.array([0.25]),
        "kernel_code": svm.KERNEL_CODES["linear"], "gamma": 1.0, "coef0": 0.0, "degree": 3,
    }
    X = np.array([[2.0, 3.0], [4.0, 1.0], [1.0, 0.5]])
    out = _decision(X, p)
    np.testing.assert_array_equal(out[:, 0], [0.75, -1.25, 0.0])
    # scikit-learn's binary decision is libsvm's negated: < 0 is class 0, >= 0 (a tie included) class 1.
    np.testing.assert_array_equal(_svc_outputs(out, 2), [1, 0, 1])


def test_hand_rbf_poly_sigmoid() -> None:
    sv = np.array([[0.0, 0.0], [1.0, 2.0]])
    x = np.array([[1.0, 1.0]])
    coef = np.array([2.0, -1.0])
    cases = {
        "rbf": lambda s: math.exp(-0.5 * float(np.sum((x[0] - s) ** 2))),
        "poly": lambda s: (0.5 * float(x[0] @ s) + 1.0) ** 3,
        "sigmoid": lambda s: math.tanh(0.5 * float(x[0] @ s) + 1.0),
    }
    for name, k in cases.items():
        shift, scale, offset = _affine(2)
        sv_c, sq, centre = svm.support_vector_params(sv, name)
        out = np.empty((1, 1))
        svm.svm_decision(x, shift, scale, offset, sv_c, sq, centre, coef[:, None].copy(), np.array([0, 2]), np.zeros((1, 1), dtype=np.int64),
                         np.array([0.1]), svm.KERNEL_CODES[name], 0.5, 1.0, 3, out)
        want = 2.0 * k(sv[0]) - 1.0 * k(sv[1]) + 0.1
        assert out[0, 0] == pytest.approx(want, rel=1e-14, abs=1e-15), name


def test_hand_three_class_votes_and_ovr() -> None:
    # classes 0, 1, 2 with one support vector each at (0,0), (1,0), (0,1); linear kernel.
    n_support = np.array([1, 1, 1])
    dual_coef = np.array([[1.0, -1.0, 2.0], [3.0, -2.0, -1.0]])  # rows: dual_coef_[0], dual_coef_[1]
    intercept = np.array([0.5, -0.5, 0.0])
    coef_t, bounds, outputs = svm.svc_coefficients(dual_coef, n_support)
    x = np.array([[2.0, 1.0]])
    # pair (0,1): sv0 via dual_coef_[0] (j-1 = 0), sv1 via dual_coef_[0] (i = 0): 1*0 + (-1)*2 + 0.5 = -1.5
    # pair (0,2): sv0 via dual_coef_[1], sv2 via dual_coef_[0]: 3*0 + 2*1 - 0.5 = 1.5
    # pair (1,2): sv1 via dual_coef_[1], sv2 via dual_coef_[1]: (-2)*2 + (-1)*1 + 0 = -5
    out = np.empty((1, 3))
    sv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    svm.svm_decision(x, *_affine(2), sv, np.zeros(3), np.zeros(2), coef_t, bounds, outputs, intercept,
                     svm.KERNEL_CODES["linear"], 1.0, 0.0, 3, out)
    np.testing.assert_array_equal(out[0], [-1.5, 1.5, -5.0])
    # votes: (0,1) -> 1, (0,2) -> 0, (1,2) -> 2: a three-way tie, the first class wins.
    np.testing.assert_array_equal(_svc_outputs(out, 3), [0])
    ovr = np.empty((1, 3))
    svm.svc_ovr_decision(out, 3, ovr)
    conf = np.array([-1.5 + 1.5, 1.5 - 5.0, -1.5 + 5.0])  # s_i += d(i, j), s_j -= d(i, j)
    np.testing.assert_allclose(ovr[0], 1 + conf / (3 * (np.abs(conf) + 1)), rtol=1e-15)
    tied = np.empty(1, dtype=np.int64)
    svm.svc_predict_break_ties(out, 3, tied)
    assert tied[0] == 2


def test_hand_probability() -> None:
    # A = 1, B = 0 and a libsvm decision of 0 give pairwise 0.5, the coupling's starting point: exactly 1/2 each.
    for k in (2, 3):
        n_pairs = k * (k - 1) // 2
        proba = np.empty((1, k))
        svm.svc_predict_proba(np.zeros((1, n_pairs)), np.ones(n_pairs), np.zeros(n_pairs), k, proba)
        np.testing.assert_allclose(proba[0], np.full(k, 1.0 / k), rtol=1e-15)
    # A huge |decision| is clipped to libsvm's 1e-7 before coupling.
    proba = np.empty((1, 2))
    svm.svc_predict_proba(np.array([[1e6]]), np.array([1.0]), np.array([0.0]), 2, proba)
    # scikit-learn decision 1e6 -> libsvm -1e6 -> sigmoid 1 / (1 + exp(-1e6)) = 1 -> clipped to 1 - 1e-7 for class 0.
    assert proba[0, 0] == pytest.approx(1 - 1e-7, abs=0.005 / 2) and proba[0].sum() == pytest.approx(1.0)


def test_class_wider_than_a_tile_is_sliced() -> None:
    # 70,000 support vectors in three classes, against a plain-NumPy oracle of libsvm's pair sums.
    rng = np.random.default_rng(13)
    n_support = np.array([30000, 25000, 15000])
    sv = rng.normal(size=(int(n_support.sum()), 5))
    dual_coef = rng.normal(size=(2, sv.shape[0])) * 1e-3
    intercept = np.array([0.1, -0.2, 0.3])
    X = rng.normal(size=(3, 5))
    sv_c, sq, centre = svm.support_vector_params(sv, "rbf")
    coef_t, bounds, outputs = svm.svc_coefficients(dual_coef, n_support)
    out = np.empty((3, 3))
    svm.svm_decision(X, *_affine(5), sv_c, sq, centre, coef_t, bounds, outputs, intercept, svm.KERNEL_CODES["rbf"], 0.2, 0.0, 3, out)
    K = np.exp(-0.2 * ((X[:, None, :] - sv[None]) ** 2).sum(axis=2))
    start = np.concatenate([[0], np.cumsum(n_support)])
    want = np.empty((3, 3))
    p = 0
    for i in range(3):
        for j in range(i + 1, 3):
            ci, cj = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
            want[:, p] = K[:, ci] @ dual_coef[j - 1, ci] + K[:, cj] @ dual_coef[i, cj] + intercept[p]
            p += 1
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-13)


# --- parity with scikit-learn ---------------------------------------------------------------------


@pytest.mark.parametrize("kernel_name", KERNELS)
@pytest.mark.parametrize("n_classes", [2, 3, 4])
def test_svc_decision_and_predict(kernel_name: str, n_classes: int) -> None:
    X, y = _classification(n_classes, seed=n_classes)
    model = _fit(SVC(kernel=kernel_name, decision_function_shape="ovo", C=2.0), X, y)
    p = _params(model)
    for n_rows, dtype in [(1, np.float64), (7, np.float32), (1001, np.float64), (333, np.float32)]:
        Xt = _readonly(_test_rows(X, n_rows, seed=n_rows).astype(dtype))
        ours = _decision(Xt, p)
        ref = model.decision_function(Xt).reshape(n_rows, -1)
        tol = _assert_scores_close(ours, ref, _condition(model, Xt))
        labels = _svc_outputs(ours, n_classes)
        _assert_labels(model.classes_[labels], model.predict(Xt), _vote_near_tie(ref, tol))


@pytest.mark.parametrize("n_classes", [3, 4])
@pytest.mark.parametrize("kernel_name", ["rbf", "poly"])
def test_svc_ovr_shape_and_break_ties(n_classes: int, kernel_name: str) -> None:
    X, y = _classification(n_classes, n_rows=300, seed=10 + n_classes)
    model = _fit(SVC(kernel=kernel_name, decision_function_shape="ovr", break_ties=True), X, y)
    Xt = _test_rows(X, 2000, seed=1)
    ovo = _decision(Xt, _params(model))
    ovr = np.empty((len(Xt), n_classes))
    svm.svc_ovr_decision(ovo, n_classes, ovr)
    ref = model.decision_function(Xt)
    # ovr = votes + s / (3 (|s| + 1)): the transform scales errors of s down, so the ovo tolerance carries over.
    as_ovo = copy.deepcopy(model)
    as_ovo.decision_function_shape = "ovo"
    ovo_ref = as_ovo.decision_function(Xt)
    tol = _assert_scores_close(ovo, ovo_ref, _condition(model, Xt))
    vote_flip = _vote_near_tie(ovo_ref, tol)
    np.testing.assert_allclose(ovr[~vote_flip], ref[~vote_flip], rtol=1e-9, atol=1e-12)
    labels = np.empty(len(Xt), dtype=np.int64)
    svm.svc_predict_break_ties(ovo, n_classes, labels)
    top2 = np.sort(ref, axis=1)[:, -2:]
    near = vote_flip | (top2[:, 1] - top2[:, 0] <= 1e-9)
    _assert_labels(model.classes_[labels], model.predict(Xt), near)


@pytest.mark.parametrize("n_classes", [2, 3, 4])
def test_svc_predict_proba(n_classes: int) -> None:
    X, y = _classification(n_classes, n_rows=150, seed=20 + n_classes)
    model = _fit(SVC(kernel="rbf", probability=True, random_state=0), X, y)
    prob_a, prob_b = _prob_ab(model)
    for dtype in (np.float64, np.float32):
        Xt = _readonly(_test_rows(X, 500, seed=3).astype(dtype))
        ovo = _decision(Xt, _params(model))
        proba = np.empty((len(Xt), n_classes))
        svm.svc_predict_proba(ovo, prob_a, prob_b, n_classes, proba)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = model.predict_proba(Xt)
        # The coupling is a smooth map of the decision values: their 1e-12-level differences stay that size.
        np.testing.assert_allclose(proba, ref, rtol=1e-9, atol=1e-11)


def test_nusvc_binary_and_multiclass_probability() -> None:
    for n_classes in (2, 3):
        X, y = _classification(n_classes, n_rows=200, seed=30 + n_classes)
        model = _fit(NuSVC(kernel="poly", nu=0.3, probability=True, random_state=1, decision_function_shape="ovo"), X, y)
        Xt = _test_rows(X, 400, seed=4)
        ovo = _decision(Xt, _params(model))
        ref = model.decision_function(Xt).reshape(len(Xt), -1)
        tol = _assert_scores_close(ovo, ref, _condition(model, Xt))
        _assert_labels(model.classes_[_svc_outputs(ovo, n_classes)], model.predict(Xt), _vote_near_tie(ref, tol))
        proba = np.empty((len(Xt), n_classes))
        svm.svc_predict_proba(ovo, *_prob_ab(model), n_classes, proba)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            np.testing.assert_allclose(proba, model.predict_proba(Xt), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_linear_kernel_folded_to_weights(n_classes: int) -> None:
    X, y = _classification(n_classes, seed=40 + n_classes)
    model = _fit(SVC(kernel="linear", decision_function_shape="ovo"), X, y)
    p = _params(model)
    n_out = p["intercept"].shape[0]
    sv, sq, centre, coef_t, bounds, outputs = svm.linear_kernel_weights(
        model.support_vectors_, p["coef_t"], p["block_bounds"], p["block_outputs"], n_out)
    assert sv.shape == (n_out, X.shape[1])
    folded = {**p, "sv": sv, "sv_sq_norms": sq, "centre": centre, "coef_t": coef_t, "block_bounds": bounds, "block_outputs": outputs}
    Xt = _readonly(_test_rows(X, 900, seed=41).astype(np.float32))
    ours = _decision(Xt, folded)
    ref = model.decision_function(Xt).reshape(len(Xt), -1)
    # Folding reassociates sum_s a_s sum_j x_j sv_sj: rounding of the size sum_s |a_s| sum_j |x_j sv_sj|, as libsvm's own dots have.
    size = np.abs(Xt.astype(np.float64)) @ np.abs(model.support_vectors_).T @ np.abs(_pair_coefficients(model)) + np.abs(model.intercept_)
    tol = _assert_scores_close(ours, ref, size)
    _assert_labels(model.classes_[_svc_outputs(ours, n_classes)], model.predict(Xt), _vote_near_tie(ref, tol))


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_regressors_and_one_class(kernel_name: str) -> None:
    X, y = make_regression(300, 6, noise=5.0, random_state=2)
    y = y / np.abs(y).max()
    Xt = _readonly(_test_rows(X, 777, seed=5))
    for model in (_fit(SVR(kernel=kernel_name, C=3.0), X, y), _fit(NuSVR(kernel=kernel_name, nu=0.4), X, y),
                  _fit(OneClassSVM(kernel=kernel_name, nu=0.2), X)):
        ours = _decision(Xt, _params(model))
        if isinstance(model, OneClassSVM):
            ref = model.decision_function(Xt)
            tol = _assert_scores_close(ours[:, 0], ref, _condition(model, Xt)[:, 0])
            labels = np.empty(len(Xt), dtype=np.int64)
            svm.one_class_predict(ours, labels)
            _assert_labels(labels, model.predict(Xt), np.abs(ref) <= tol)
        else:
            _assert_scores_close(ours[:, 0], model.predict(Xt), _condition(model, Xt)[:, 0])


def test_duplicated_rows_score_identically() -> None:
    X, y = _classification(3, seed=7)
    model = _fit(SVC(kernel="rbf", decision_function_shape="ovo"), X, y)
    base = np.concatenate([model.support_vectors_[:5], X[:5]])
    Xt = np.repeat(base, 13, axis=0)
    ours = _decision(Xt, _params(model))
    cond = _condition(model, Xt)
    _assert_scores_close(ours, model.decision_function(Xt), cond)
    # Copies agree to rounding (BLAS may sum a lone trailing row in another order, so not always to the bit).
    spread = np.abs(ours.reshape(len(base), 13, -1) - ours[::13][:, None, :])
    assert np.all(spread <= COND_TOL * cond.reshape(len(base), 13, -1))


@pytest.mark.parametrize("scaler", ["standard", "minmax"])
def test_fused_scaler_extreme_feature_scales(scaler: str) -> None:
    X, y = _classification(3, n_rows=300, n_features=6, seed=8)
    scales = np.array([1e-6, 1e-3, 1.0, 1e3, 1e6, 1e9])
    offsets = np.array([0.0, 5e3, -1.0, 1e6, 0.0, -3e12])  # means that dwarf the spread
    X_raw = X * scales + offsets
    fitted = _fit(StandardScaler() if scaler == "standard" else MinMaxScaler(), X_raw)
    model = _fit(SVC(kernel="rbf", decision_function_shape="ovo", gamma=0.3), fitted.transform(X_raw), y)
    if scaler == "standard":
        p = _params(model, shift=fitted.mean_, scale=1.0 / fitted.scale_)
    else:
        p = _params(model, scale=fitted.scale_, offset=fitted.min_)
    Xt_raw = _readonly((_test_rows(X, 900, seed=9) * scales + offsets).astype(np.float64))
    Xt_scaled = fitted.transform(Xt_raw)
    ours = _decision(Xt_raw, p)
    ref = model.decision_function(Xt_scaled)
    tol = _assert_scores_close(ours, ref, _condition(model, Xt_scaled))
    _assert_labels(model.classes_[_svc_outputs(ours, 3)], model.predict(Xt_scaled), _vote_near_tie(ref, tol))


def test_parallel_variant_matches_serial_and_readonly_parameters() -> None:
    X, y = _classification(4, seed=11)
    model = _fit(SVC(kernel="rbf", decision_function_shape="ovo"), X, y)
    p = {k: (_readonly(v) if isinstance(v, np.ndarray) else v) for k, v in _params(model).items()}
    Xt = _readonly(_test_rows(X, 1500, seed=12).astype(np.float32))
    np.testing.assert_array_equal(_decision(Xt, p, parallel=True), _decision(Xt, p))


def test_kernels_are_dispatchers_with_the_config_options() -> None:
    from numba.core.registry import CPUDispatcher

    from tensorwire.kernels import config

    dispatchers = {name: f for name, f in vars(svm).items() if isinstance(f, CPUDispatcher)}
    assert {"svm_decision", "svm_decision_parallel", "svc_predict", "svc_ovr_decision", "svc_predict_break_ties",
            "svc_predict_proba", "one_class_predict"} <= set(dispatchers)
    for name, dispatcher in dispatchers.items():
        assert dispatcher.targetoptions.get("nogil") is config.NOGIL, name
        assert dispatcher.targetoptions.get("fastmath", False) is config.FASTMATH, name
        assert dispatcher.targetoptions.get("parallel", False) is name.endswith("_parallel"), name
        assert type(dispatcher._cache).__name__ != "NullCache", f"{name} is not cached"
