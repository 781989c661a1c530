"""Linear kernels against plain-NumPy / scikit-learn oracles, hand-computed cases, and the JIT-config rule."""

from __future__ import annotations

import ast
import pathlib
from typing import Any

import numba
import numpy as np
import pytest
from numba.core.registry import CPUDispatcher
from scipy.special import expit as scipy_expit
from sklearn.utils.extmath import softmax as sklearn_softmax

from tensorwire.kernels import config
from tensorwire.kernels import linear as L

SHAPES = [(1, 3), (7, 3), (33, 17), (10_000, 17)]
FloatType = type[np.floating[Any]]
# DESIGN.md: (rtol, atol) for fp32 and fp64 models
TOLERANCE: dict[FloatType, tuple[float, float]] = {np.float32: (1e-5, 1e-6), np.float64: (1e-9, 1e-12)}


def assert_close(actual: np.ndarray, expected: np.ndarray, dtype: FloatType) -> None:
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def readonly(array: np.ndarray) -> np.ndarray:
    """A read-only view over bytes, as a request tensor arrives (np.frombuffer)."""
    array = np.ascontiguousarray(array)
    return np.frombuffer(array.tobytes(), dtype=array.dtype).reshape(array.shape)


def decision_oracle(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    return X.astype(np.float64) @ coef.T + intercept


def proba_lr_oracle(d: np.ndarray, zero_rows_uniform: bool) -> np.ndarray:
    """sklearn's _predict_proba_lr (uniform) or OneVsRestClassifier.predict_proba (zero rows kept)."""
    p = scipy_expit(d)
    return _normalise_oracle(p, zero_rows_uniform)


def modified_huber_oracle(d: np.ndarray, zero_rows_uniform: bool) -> np.ndarray:
    """SGDClassifier.predict_proba for loss='modified_huber', as its source computes it."""
    p = (np.clip(d, -1, 1) + 1.0) / 2.0
    if d.shape[1] == 1:
        return np.hstack([1 - p, p])
    return _normalise_oracle(p, zero_rows_uniform)


def _normalise_oracle(p: np.ndarray, zero_rows_uniform: bool) -> np.ndarray:
    p = p.copy()
    total = p.sum(axis=1)
    zero = total == 0
    if zero_rows_uniform:
        p[zero] = 1.0
        total[zero] = p.shape[1]
    np.divide(p, total[:, None], out=p, where=~zero[:, None] | zero_rows_uniform)
    return p


def random_parameters(rng: np.random.Generator, k: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    return readonly(rng.normal(size=(k, n_features))), readonly(rng.normal(size=k))


def decisions(rng: np.random.Generator, n: int, k: int, scale: float = 2.0) -> np.ndarray:
    return readonly(rng.normal(scale=scale, size=(n, k)))


# --- JIT configuration ------------------------------------------------------------


def test_no_kernel_module_calls_numba_jit_directly() -> None:
    kernels_dir = pathlib.Path(L.__file__).parent
    offenders = [
        path.name
        for path in kernels_dir.glob("*.py")
        if path.name != "config.py" and ("njit" in path.read_text() or "numba.jit" in path.read_text())
    ]
    assert offenders == []


def test_every_function_in_linear_is_a_dispatcher_with_the_config_options() -> None:
    tree = ast.parse(pathlib.Path(L.__file__).read_text())
    names = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert len(names) >= 10
    holding_the_gil = {"linear_classifier_response", "linear_regressor_response"}  # config.request_kernel
    for name in names:
        dispatcher = getattr(L, name)
        assert isinstance(dispatcher, CPUDispatcher), name
        assert dispatcher.targetoptions.get("nogil") is (False if name in holding_the_gil else config.NOGIL), name
        assert dispatcher.targetoptions.get("fastmath", False) is config.FASTMATH, name
        assert type(dispatcher._cache).__name__ != "NullCache", f"{name} is not cached"  # type: ignore[attr-defined]


# --- scalar and row kernels -------------------------------------------------------


def test_expit_matches_scipy_without_overflow() -> None:
    xs = [-1000.0, -745.0, -710.0, -709.0, -700.0, -50.0, -1.0, -1e-300, 0.0, 1e-300, 1.0, 36.0, 50.0, 745.0, 1000.0]
    got = np.array([L.expit(x) for x in xs])
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(got, scipy_expit(np.array(xs)), rtol=1e-15, atol=0.0)
    assert np.isfinite(got).all() and got[0] == 0.0 and got[-1] == 1.0


def test_argmax_row_first_maximum_wins() -> None:
    assert L.argmax_row(np.array([1.0, 3.0, 3.0, 2.0])) == 1
    assert L.argmax_row(np.array([5.0, 5.0])) == 0
    assert L.argmax_row(np.array([-1.0])) == 0


# --- array kernels ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "n_features"), SHAPES)
def test_linear_decision_matches_numpy(dtype: FloatType, n: int, n_features: int) -> None:
    rng = np.random.default_rng(n * 31 + n_features)
    X = readonly(rng.normal(size=(n, n_features)).astype(dtype))
    coef, intercept = random_parameters(rng, 4, n_features)
    out = np.empty((n, 4), dtype=dtype)
    L.linear_decision(X, coef, intercept, out)
    assert_close(out, decision_oracle(X, coef, intercept), dtype)


@pytest.mark.parametrize("n", [1, 3, 4, 5, 9, 64])
def test_linear_decision_adds_each_sum_in_feature_order_whatever_the_row_blocking(n: int) -> None:
    """Rows are scored four at a time, but every sum is still 0 + x0*c0 + x1*c1 + ... + b, in float64:
    the result is bit for bit what adding one row at a time gives."""
    rng = np.random.default_rng(n)
    X = readonly(rng.normal(size=(n, 7)).astype(np.float32) * 1e3)
    coef, intercept = random_parameters(rng, 3, 7)
    out = np.empty((n, 3))
    L.linear_decision(X, coef, intercept, out)
    for i in range(n):
        for k in range(3):
            acc = 0.0
            for j in range(7):
                acc += float(X[i, j]) * float(coef[k, j])
            assert out[i, k] == acc + float(intercept[k]), (i, k)


def test_linear_decision_hand_computed() -> None:
    X = readonly(np.array([[1.0, 2.0], [3.0, -1.0]]))
    coef, intercept = readonly(np.array([[0.5, -1.0], [2.0, 0.0]])), readonly(np.array([0.25, -1.0]))
    out = np.empty((2, 2))
    L.linear_decision(X, coef, intercept, out)
    np.testing.assert_array_equal(out, [[-1.25, 1.0], [2.75, 5.0]])


def test_kernels_accept_unaligned_read_only_input() -> None:
    data = np.arange(12, dtype=np.float64)
    X = np.frombuffer(b"\0" + data.tobytes(), dtype=np.float64, offset=1).reshape(4, 3)
    assert not X.flags.aligned and not X.flags.writeable
    out = np.empty((4, 1))
    L.linear_decision(X, readonly(np.ones((1, 3))), readonly(np.zeros(1)), out)
    np.testing.assert_array_equal(out[:, 0], data.reshape(4, 3).sum(axis=1))


def test_labels_by_threshold_is_strictly_positive() -> None:
    out = np.empty(5, dtype=np.int64)
    L.labels_by_threshold(readonly(np.array([[-1.0], [0.0], [-0.0], [1e-300], [2.0]])), out)
    np.testing.assert_array_equal(out, [0, 0, 0, 1, 1])


def test_labels_by_argmax_matches_numpy_with_ties() -> None:
    rng = np.random.default_rng(1)
    d = rng.integers(0, 3, size=(200, 5)).astype(np.float64)  # many exact ties
    out = np.empty(200, dtype=np.int64)
    L.labels_by_argmax(readonly(d), out)
    np.testing.assert_array_equal(out, np.argmax(d, axis=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_binary_proba(dtype: FloatType) -> None:
    d = decisions(np.random.default_rng(2), 33, 1, scale=10.0)
    out = np.empty((33, 2), dtype=dtype)
    L.sigmoid_binary_proba(d, out)
    p = scipy_expit(d[:, 0])
    assert_close(out, np.column_stack([1 - p, p]), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_proba_matches_sklearn_and_is_stable(dtype: FloatType) -> None:
    d = np.vstack([decisions(np.random.default_rng(3), 32, 5), [[1000.0, 999.0, -1000.0, 0.0, 1000.0]]])
    out = np.empty(d.shape, dtype=dtype)
    L.softmax_proba(readonly(d), out)
    assert_close(out, sklearn_softmax(d), dtype)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("zero_rows_uniform", [True, False])
@pytest.mark.parametrize("k", [3, 5])
def test_ovr_sigmoid_proba(k: int, zero_rows_uniform: bool) -> None:
    d = np.vstack([decisions(np.random.default_rng(k), 32, k, scale=5.0), np.full((1, k), -1000.0)])
    out = np.empty(d.shape)
    L.ovr_sigmoid_proba(readonly(d), out, zero_rows_uniform)
    assert_close(out, proba_lr_oracle(d, zero_rows_uniform), np.float64)
    np.testing.assert_array_equal(out[-1], np.full(k, 1.0 / k) if zero_rows_uniform else np.zeros(k))


@pytest.mark.parametrize("zero_rows_uniform", [True, False])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_modified_huber_proba(k: int, zero_rows_uniform: bool) -> None:
    d = np.vstack([decisions(np.random.default_rng(10 + k), 64, k), np.full((1, k), -3.0), np.full((1, k), 1.0)])
    out = np.empty((d.shape[0], max(k, 2)))
    L.modified_huber_proba(readonly(d), out, zero_rows_uniform)
    expected = modified_huber_oracle(d, zero_rows_uniform)
    assert_close(out, expected, np.float64)
    if k == 1:
        np.testing.assert_array_equal(out[-2:], [[1.0, 0.0], [0.0, 1.0]])


def test_modified_huber_hand_computed() -> None:
    out = np.empty((1, 3))
    L.modified_huber_proba(readonly(np.array([[0.5, -0.5, 3.0]])), out, True)
    np.testing.assert_allclose(out, [[0.75 / 2.0, 0.25 / 2.0, 1.0 / 2.0]], rtol=1e-15)


# --- fused entry points -----------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "n_features"), SHAPES)
def test_score_linear_regressor(dtype: FloatType, n: int, n_features: int) -> None:
    rng = np.random.default_rng(n + n_features)
    X = readonly(rng.normal(size=(n, n_features)).astype(dtype))
    coef, intercept = random_parameters(rng, 2, n_features)
    out = np.empty((n, 2), dtype=dtype)
    L.score_linear_regressor(X, coef, intercept, out)
    assert_close(out, decision_oracle(X, coef, intercept), dtype)


LINK_ORACLES = {
    L.LINK_LOGISTIC: lambda d: proba_lr_oracle(d, True),
    L.LINK_SOFTMAX: sklearn_softmax,
    L.LINK_OVR_LOGISTIC: lambda d: proba_lr_oracle(d, True),
    L.LINK_MODIFIED_HUBER: lambda d: modified_huber_oracle(d, True),
    L.LINK_ONEVSREST_LOGISTIC: lambda d: proba_lr_oracle(d, False),
    L.LINK_ONEVSREST_MODIFIED_HUBER: lambda d: modified_huber_oracle(d, False),
}
BINARY_LINKS = [L.LINK_NONE, L.LINK_LOGISTIC, L.LINK_MODIFIED_HUBER]
MULTICLASS_LINKS = sorted(set(L.LINKS.values()) - {L.LINK_LOGISTIC})


def proba_oracle(link: int, d: np.ndarray) -> np.ndarray:
    if link == L.LINK_LOGISTIC:
        p = scipy_expit(d[:, 0])
        return np.column_stack([1 - p, p])
    return LINK_ORACLES[link](d)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("k", "link"), [(1, link) for link in BINARY_LINKS] + [(k, link) for k in (3, 5) for link in MULTICLASS_LINKS]
)
def test_score_linear_classifier_matches_oracles(dtype: FloatType, k: int, link: int) -> None:
    rng = np.random.default_rng(k * 7 + link)
    n, n_features = 33, 17
    X = readonly((rng.normal(size=(n, n_features)) * 0.5).astype(dtype))
    coef, intercept = random_parameters(rng, k, n_features)
    n_classes = 2 if k == 1 else k
    decision = np.empty((n, k), dtype=dtype)
    proba = np.empty((n, n_classes if link != L.LINK_NONE else 0), dtype=dtype)
    index = np.empty(n, dtype=np.int64)
    L.score_linear_classifier(X, coef, intercept, link, decision, proba, index)
    d = decision_oracle(X, coef, intercept)
    assert_close(decision, d, dtype)
    np.testing.assert_array_equal(index, (d[:, 0] > 0).astype(np.int64) if k == 1 else np.argmax(d, axis=1))
    if link != L.LINK_NONE:
        assert_close(proba, proba_oracle(link, d), dtype)


def test_score_linear_classifier_hand_computed_binary_logistic() -> None:
    X = readonly(np.array([[1.0, 1.0], [0.0, 0.0], [2.0, -1.0]]))
    decision, proba, index = np.empty((3, 1)), np.empty((3, 2)), np.empty(3, dtype=np.int64)
    coef, intercept = readonly(np.array([[1.0, -2.0]])), readonly(np.array([0.5]))
    L.score_linear_classifier(X, coef, intercept, L.LINK_LOGISTIC, decision, proba, index)
    np.testing.assert_array_equal(decision[:, 0], [-0.5, 0.5, 4.5])
    np.testing.assert_array_equal(index, [0, 1, 1])
    p = 1.0 / (1.0 + np.exp(-np.array([-0.5, 0.5, 4.5])))
    np.testing.assert_allclose(proba, np.column_stack([1 - p, p]), rtol=1e-15)


def test_fused_kernel_equals_composed_kernels() -> None:
    rng = np.random.default_rng(5)
    X = readonly(rng.normal(size=(50, 6)))
    coef, intercept = random_parameters(rng, 4, 6)
    decision, proba, index = np.empty((50, 4)), np.empty((50, 4)), np.empty(50, dtype=np.int64)
    L.score_linear_classifier(X, coef, intercept, L.LINK_SOFTMAX, decision, proba, index)
    d2, p2, i2 = np.empty((50, 4)), np.empty((50, 4)), np.empty(50, dtype=np.int64)
    L.linear_decision(X, coef, intercept, d2)
    L.softmax_proba(d2, p2)
    L.labels_by_argmax(d2, i2)
    np.testing.assert_array_equal(decision, d2)
    np.testing.assert_array_equal(proba, p2)
    np.testing.assert_array_equal(index, i2)


def test_links_table_is_complete() -> None:
    assert set(L.LINKS.values()) == {L.LINK_NONE} | set(LINK_ORACLES)
    assert numba.typeof(L.LINKS["softmax"]) == numba.int64


def test_probabilities_are_normalised_before_rounding_to_float32() -> None:
    """expit(-200) is 0 in float32; normalising first keeps the row's true proportions."""
    d = np.array([[-200.0, -201.0, -300.0]])
    expected = proba_lr_oracle(d, False)
    assert expected[0, 0] > 0.7
    out = np.empty((1, 3), dtype=np.float32)
    L.ovr_sigmoid_proba(readonly(d), out, False)
    assert_close(out, expected, np.float32)
    X, coef, intercept = readonly(np.zeros((1, 2), dtype=np.float32)), readonly(np.zeros((3, 2))), readonly(d[0])
    decision, index = np.empty((1, 3), dtype=np.float32), np.empty(1, dtype=np.int64)
    L.score_linear_classifier(X, coef, intercept, L.LINK_ONEVSREST_LOGISTIC, decision, out, index)
    assert_close(out, expected, np.float32)
