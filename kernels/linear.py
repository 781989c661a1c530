"""Kernels for linear models: decision values, class labels and probability links.

Inputs may be read-only, X float32 or float64, parameters float64; every sum
is accumulated in float64 and rounded once, when stored into the caller's `out`.
Row kernels (`*_row`) are the building blocks and write float64 rows (a float32
row would round expit(-200) to 0 before normalisation); the `score_*` kernels
fuse a whole request into one dispatch.

Helpers are `inlined` (into their callers' numba IR): a separately compiled helper
costs a compile of its own on a cold cache, and its machine code is optimised and
generated again inside every kernel that calls it. Rows are copied by explicit
loops (see `_store_row`), except in `score_linear_classifier`, the served path, where the
slice assignment measured 4-6x faster per row with softmax.
"""

from __future__ import annotations

import math

import numpy as np

from tensorwire.kernels.config import inlined, kernel, request_kernel
from tensorwire.kernels.validation import first_nonfinite_row

# Probability links: how a classifier turns decision values into predict_proba.
LINK_NONE = 0  # no predict_proba (LinearSVC, RidgeClassifier, hinge SGD, ...)
LINK_LOGISTIC = 1  # binary: [1 - p, p], p = expit(d)
LINK_SOFTMAX = 2  # multinomial LogisticRegression
LINK_OVR_LOGISTIC = 3  # expit per class, rows normalised, zero-sum rows uniform (SGDClassifier log_loss)
LINK_MODIFIED_HUBER = 4  # SGDClassifier modified_huber, binary or multiclass, zero-sum rows uniform
LINK_ONEVSREST_LOGISTIC = 5  # OneVsRestClassifier of logistic models: zero-sum rows stay zero
LINK_ONEVSREST_MODIFIED_HUBER = 6  # OneVsRestClassifier of modified_huber SGD: zero-sum rows stay zero

LINKS: dict[str, int] = {
    "none": LINK_NONE,
    "logistic": LINK_LOGISTIC,
    "softmax": LINK_SOFTMAX,
    "ovr_logistic": LINK_OVR_LOGISTIC,
    "modified_huber": LINK_MODIFIED_HUBER,
    "onevsrest_logistic": LINK_ONEVSREST_LOGISTIC,
    "onevsrest_modified_huber": LINK_ONEVSREST_MODIFIED_HUBER,
}


@inlined
def expit(x: float) -> float:
    """Logistic sigmoid, 1 / (1 + exp(-x)); exp(-x) = inf gives 0, never NaN."""
    # scipy.special.expit's own formula: below x ~ -709.8 it is exactly 0, as in
    # scikit-learn (z / (1 + z) would give subnormals there, and a zero-sum OvR row
    # would then normalise to a one-hot instead of staying zero).
    return 1.0 / (1.0 + math.exp(-x))


@inlined
def argmax_row(d: np.ndarray) -> int:
    """argmax_k d[k], the first maximum winning (as numpy.argmax)."""
    best = 0
    for k in range(1, d.shape[0]):
        if d[k] > d[best]:
            best = k
    return best


@inlined
def normalise_row(out: np.ndarray, total: float, zero_rows_uniform: bool) -> None:
    """out[k] /= total; a zero total makes the row 1/K when zero_rows_uniform, else leaves it 0."""
    if total == 0.0:
        if zero_rows_uniform:
            for k in range(out.shape[0]):
                out[k] = 1.0 / out.shape[0]
        return
    for k in range(out.shape[0]):
        out[k] = out[k] / total


@inlined
def sigmoid_binary_row(d: np.ndarray, out: np.ndarray) -> None:
    """out = [1 - p, p] with p = expit(d[0])."""
    p = expit(np.float64(d[0]))
    out[0] = 1.0 - p
    out[1] = p


@inlined
def softmax_row(d: np.ndarray, out: np.ndarray) -> None:
    """out[k] = exp(d[k] - max d) / sum_k exp(d[k] - max d)."""
    top = np.float64(d[argmax_row(d)])
    total = 0.0
    for k in range(d.shape[0]):
        e = math.exp(np.float64(d[k]) - top)
        out[k] = e
        total += e
    normalise_row(out, total, True)


@inlined
def ovr_sigmoid_row(d: np.ndarray, out: np.ndarray, zero_rows_uniform: bool) -> None:
    """out[k] = expit(d[k]) / sum_k expit(d[k])."""
    total = 0.0
    for k in range(d.shape[0]):
        p = expit(np.float64(d[k]))
        out[k] = p
        total += p
    normalise_row(out, total, zero_rows_uniform)


@inlined
def modified_huber_row(d: np.ndarray, out: np.ndarray, zero_rows_uniform: bool) -> None:
    """h_k = (clip(d[k], -1, 1) + 1) / 2; binary (one d): out = [1 - h, h], else out[k] = h_k / sum h."""
    if d.shape[0] == 1:
        h = (min(max(np.float64(d[0]), -1.0), 1.0) + 1.0) / 2.0
        out[0] = 1.0 - h
        out[1] = h
        return
    total = 0.0
    for k in range(d.shape[0]):
        h = (min(max(np.float64(d[k]), -1.0), 1.0) + 1.0) / 2.0
        out[k] = h
        total += h
    normalise_row(out, total, zero_rows_uniform)


@inlined
def proba_row(link_code: int, d: np.ndarray, out: np.ndarray) -> None:
    """out = the link's probabilities for one row of decision values d (LINK_NONE writes nothing)."""
    if link_code == LINK_LOGISTIC:
        sigmoid_binary_row(d, out)
    elif link_code == LINK_SOFTMAX:
        softmax_row(d, out)
    # One call per row function, its flag a runtime bool: a literal True or False would compile it twice.
    elif link_code == LINK_OVR_LOGISTIC or link_code == LINK_ONEVSREST_LOGISTIC:
        ovr_sigmoid_row(d, out, link_code == LINK_OVR_LOGISTIC)
    elif link_code == LINK_MODIFIED_HUBER or link_code == LINK_ONEVSREST_MODIFIED_HUBER:
        modified_huber_row(d, out, link_code == LINK_MODIFIED_HUBER)


@inlined
def _store_row(row: np.ndarray, out: np.ndarray, i: int) -> None:
    """out[i, k] = row[k], rounded to out's dtype."""
    # A loop, not `out[i, :] = row`: numba's broadcasting assignment compiles its shape-mismatch error message
    # (str() of ints, string concatenation: seconds of numba internals on a cold cache) for every kernel using it.
    for k in range(row.shape[0]):
        out[i, k] = row[k]


@inlined
def linear_decision(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray, out: np.ndarray) -> None:
    """out[i, k] = sum_j X[i, j] * coef[k, j] + intercept[k], each sum added in order of j.

    Four rows at a time: one sum's additions wait on each other, four rows' sums
    do not, so the CPU overlaps them (a row at a time, a batch runs ~4x slower).
    """
    n_rows, n_features = X.shape
    blocked = n_rows - n_rows % 4
    for k in range(coef.shape[0]):
        c = coef[k]
        b = intercept[k]
        for i in range(0, blocked, 4):
            a0 = a1 = a2 = a3 = 0.0
            for j in range(n_features):
                cj = c[j]
                a0 += np.float64(X[i, j]) * cj
                a1 += np.float64(X[i + 1, j]) * cj
                a2 += np.float64(X[i + 2, j]) * cj
                a3 += np.float64(X[i + 3, j]) * cj
            out[i, k] = a0 + b
            out[i + 1, k] = a1 + b
            out[i + 2, k] = a2 + b
            out[i + 3, k] = a3 + b
        for i in range(blocked, n_rows):
            a = 0.0
            for j in range(n_features):
                a += np.float64(X[i, j]) * c[j]
            out[i, k] = a + b


@kernel
def labels_by_threshold(decision: np.ndarray, out: np.ndarray) -> None:
    """out[i] = 1 if decision[i, 0] > 0 else 0 (binary: a zero decision picks the first class)."""
    for i in range(decision.shape[0]):
        out[i] = 1 if decision[i, 0] > 0.0 else 0


@kernel
def labels_by_argmax(decision: np.ndarray, out: np.ndarray) -> None:
    """out[i] = argmax_k decision[i, k], the first maximum winning."""
    for i in range(decision.shape[0]):
        out[i] = argmax_row(decision[i])


@kernel
def sigmoid_binary_proba(decision: np.ndarray, out: np.ndarray) -> None:
    """out[i] = [1 - p, p] with p = expit(decision[i, 0])."""
    p = np.empty(out.shape[1], dtype=np.float64)
    for i in range(decision.shape[0]):
        sigmoid_binary_row(decision[i], p)
        _store_row(p, out, i)


@kernel
def softmax_proba(decision: np.ndarray, out: np.ndarray) -> None:
    """out[i, k] = exp(decision[i, k] - max_k decision[i]) / sum over k of the same."""
    p = np.empty(out.shape[1], dtype=np.float64)
    for i in range(decision.shape[0]):
        softmax_row(decision[i], p)
        _store_row(p, out, i)


@kernel
def ovr_sigmoid_proba(decision: np.ndarray, out: np.ndarray, zero_rows_uniform: bool) -> None:
    """out[i, k] = expit(decision[i, k]) / sum_k expit(decision[i, k]) (sklearn's _predict_proba_lr)."""
    p = np.empty(out.shape[1], dtype=np.float64)
    for i in range(decision.shape[0]):
        ovr_sigmoid_row(decision[i], p, zero_rows_uniform)
        _store_row(p, out, i)


@kernel
def modified_huber_proba(decision: np.ndarray, out: np.ndarray, zero_rows_uniform: bool) -> None:
    """out[i] = normalised (clip(decision[i], -1, 1) + 1) / 2 (SGDClassifier modified_huber predict_proba)."""
    p = np.empty(out.shape[1], dtype=np.float64)
    for i in range(decision.shape[0]):
        modified_huber_row(decision[i], p, zero_rows_uniform)
        _store_row(p, out, i)


@kernel
def score_linear_regressor(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray, out: np.ndarray) -> None:
    """out[i, k] = sum_j X[i, j] * coef[k, j] + intercept[k]: a linear regressor's predict."""
    linear_decision(X, coef, intercept, out)


@kernel
def score_linear_classifier(
    X: np.ndarray,
    coef: np.ndarray,
    intercept: np.ndarray,
    link_code: int,
    decision_out: np.ndarray,
    proba_out: np.ndarray,
    label_index_out: np.ndarray,
) -> None:
    """Decision values, class indices and (unless LINK_NONE) probabilities of a linear classifier.

    d = X @ coef.T + intercept; one column of d means binary (index = d > 0),
    several mean one per class (index = argmax d); probabilities come from the
    float64 d, before it is rounded into decision_out, and are rounded only once
    normalised.
    """
    decisions = np.empty((X.shape[0], coef.shape[0]), dtype=np.float64)
    linear_decision(X, coef, intercept, decisions)
    p = np.empty(proba_out.shape[1], dtype=np.float64)
    binary = coef.shape[0] == 1
    for i in range(X.shape[0]):
        d = decisions[i]
        # Slice assignments, not _store_row's loop: with the loop this kernel ran 4-6x slower per row (softmax,
        # 4 classes, numba 0.68), which outweighs the second or so the slice costs to compile on a cold cache.
        decision_out[i, :] = d
        label_index_out[i] = (1 if d[0] > 0.0 else 0) if binary else argmax_row(d)
        if link_code != LINK_NONE:
            proba_row(link_code, d, p)
            proba_out[i, :] = p


# What a planned response's layout row writes (see linear_classifier_response).
WRITE_LABELS, WRITE_DECISION, WRITE_PROBA = 0, 1, 2


@request_kernel
def linear_classifier_response(
    coef: np.ndarray,
    intercept: np.ndarray,
    link_code: int,
    labels: np.ndarray,
    template: np.ndarray,
    layout: np.ndarray,
    X: np.ndarray,
    out: np.ndarray,
) -> int:
    """A whole serialised response in one dispatch: score_linear_classifier's outputs, written as raw bytes.

    `out` (uint8, the template's size) gets the template (the response with its
    tensors' bytes left zero); then, for each layout row (what, offset), the
    labels (labels[class index], in labels' dtype), the decision values or the
    probabilities (in X's dtype, as score_linear_classifier rounds them) are
    written from that offset on: decision values and probabilities straight
    into `out`, through a view. Returns the first row of X holding NaN or
    infinity (nothing written), or -1.
    """
    bad_row = first_nonfinite_row(X)
    if bad_row >= 0:
        return bad_row
    n, k, n_classes = X.shape[0], coef.shape[0], labels.shape[0]
    labels_at, decision_at, proba_at = -1, -1, -1
    for w in range(layout.shape[0]):
        if layout[w, 0] == WRITE_LABELS:
            labels_at = layout[w, 1]
        elif layout[w, 0] == WRITE_DECISION:
            decision_at = layout[w, 1]
        else:
            proba_at = layout[w, 1]
    _copy_template(template, out)
    decision = _tensor_at(out, decision_at, n, k, X) if decision_at >= 0 else np.empty((n, k), dtype=X.dtype)
    proba = _tensor_at(out, proba_at, n, n_classes, X) if proba_at >= 0 else np.empty((n, 0), dtype=X.dtype)
    label_index = np.empty(n, dtype=np.int64)
    score_linear_classifier(X, coef, intercept, link_code if proba_at >= 0 else LINK_NONE, decision, proba, label_index)
    if labels_at >= 0:
        # reshape checks the size: a slice past the end is shorter, never written beyond
        written = out[labels_at : labels_at + n * labels.itemsize].view(labels.dtype).reshape(n)
        for i in range(n):
            written[i] = labels[label_index[i]]
    return -1


@request_kernel
def linear_regressor_response(coef: np.ndarray, intercept: np.ndarray, template: np.ndarray, predict_at: int, X: np.ndarray, out: np.ndarray) -> int:
    """linear_classifier_response for a regressor: its predict written at `predict_at`."""
    bad_row = first_nonfinite_row(X)
    if bad_row >= 0:
        return bad_row
    _copy_template(template, out)
    score_linear_regressor(X, coef, intercept, _tensor_at(out, predict_at, X.shape[0], coef.shape[0], X))
    return -1


@inlined
def _copy_template(template: np.ndarray, out: np.ndarray) -> None:
    if out.shape[0] != template.shape[0]:
        raise ValueError("the response buffer and its template differ in size")
    for b in range(template.shape[0]):  # an explicit loop: numba's slice assignment is several times slower here
        out[b] = template[b]


@inlined
def _tensor_at(out: np.ndarray, at: int, rows: int, columns: int, like: np.ndarray) -> np.ndarray:
    """A (rows, columns) array of like's dtype over out's bytes from `at` (a size mismatch raises)."""
    return out[at : at + rows * columns * like.itemsize].view(like.dtype).reshape(rows, columns)
