"""Kernel SVM scoring (SVC, NuSVC, SVR, NuSVR, OneClassSVM), reproducing scikit-learn's libsvm.

`svm_decision` works on a tile of rows at a time and, within it, on one class's
support vectors at a time: one GEMM for the dot products, then the kernel's
elementwise map (a vectorised exp for rbf), then one small GEMM that adds the
block's kernel values into every one-vs-one pair that class takes part in, so
each K(x, sv) is computed once and shared by all pairs. The finishing kernels turn
the one-vs-one values into labels, the ovr shape, or libsvm's Platt-scaled,
pairwise-coupled probabilities.

Small helpers are `inlined` and the parallel variant calls the serial kernel on row
slices: each separately compiled helper or wrapper costs a cold-cache compile, and its
machine code is optimised and generated again inside every kernel that calls it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core.extending import intrinsic

from tensorwire.kernels.config import inlined, kernel, parallel_kernel
from tensorwire.kernels.decomposition import (
    PARALLEL_TILE_ROWS,
    TILE_DOUBLES,
    affine_rows,
    fma,
    ieee_div,
    is_identity,
    tile_rows,
)

LINEAR, POLY, RBF, SIGMOID = 0, 1, 2, 3
KERNEL_CODES: dict[str, int] = {"linear": LINEAR, "poly": POLY, "rbf": RBF, "sigmoid": SIGMOID}

MIN_PROB = 1e-7  # libsvm clips each pairwise probability to [1e-7, 1 - 1e-7]

_LOG2E = 1.4426950408889634
_ROUND_SHIFT = 6755399441055744.0  # 1.5 * 2**52: adding it rounds to an integer held in the low mantissa bits
_LN2_HI = 6.93147180369123816490e-01  # fdlibm's split of ln 2: k * _LN2_HI is exact for |k| < 2**20
_LN2_LO = 1.90821492927058770002e-10


def _bits_to_float_intrinsic(typingctx, bits):  # type: ignore[no-untyped-def]
    """The float64 whose IEEE-754 bit pattern is the int64 `bits`."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


_bits_to_float: Any = intrinsic(_bits_to_float_intrinsic)


@inlined
def exp_nonpositive(x: float) -> float:
    """exp(x) for x <= 0 within 1 ulp: 2**k * P13(r), x = k ln2 + r, |r| <= ln2/2; inlines and vectorises, unlike libm's exp."""
    # Below -708 the result would be subnormal; 2**-1021 instead of ~0 changes no sum of kernel values.
    x = max(x, -708.0)
    t = fma(x, _LOG2E, _ROUND_SHIFT)
    k = t - _ROUND_SHIFT
    r = fma(-k, _LN2_LO, fma(-k, _LN2_HI, x))
    p = 1.0 / 6227020800.0  # Taylor to r**13: truncation below 4e-18 on |r| <= ln2/2
    p = fma(p, r, 1.0 / 479001600.0)
    p = fma(p, r, 1.0 / 39916800.0)
    p = fma(p, r, 1.0 / 3628800.0)
    p = fma(p, r, 1.0 / 362880.0)
    p = fma(p, r, 1.0 / 40320.0)
    p = fma(p, r, 1.0 / 5040.0)
    p = fma(p, r, 1.0 / 720.0)
    p = fma(p, r, 1.0 / 120.0)
    p = fma(p, r, 1.0 / 24.0)
    p = fma(p, r, 1.0 / 6.0)
    p = fma(p, r, 0.5)
    p = fma(p, r, 1.0)
    p = fma(p, r, 1.0)
    return p * _bits_to_float((np.int64(k) + 1023) << 52)


@inlined
def _tanh(z: float) -> float:
    """tanh(z) = sign(z) (1 - e) / (1 + e), e = exp(-2|z|): absolute error ~2 ulp, which is what a sum of kernel values sees."""
    e = exp_nonpositive(-2.0 * abs(z))
    return math.copysign(ieee_div(1.0 - e, 1.0 + e), z)


# A compiled helper, not `inlined`: inlined into svm_decision's IR its loops ran 1.2-1.5x slower at 64 and 4096 rows.
@kernel
def _kernel_map(
    kb: np.ndarray, m: int, xx: np.ndarray, sq_norms: np.ndarray, kernel_code: int, gamma: float, coef0: float, degree: int, ret: np.ndarray
) -> None:
    """kb[q, s] <- K from the dot products g = x_q . sv_s: linear g; poly (gamma g + coef0)**degree; rbf exp(-gamma max(|x|^2 + |sv|^2 - 2g, 0)); sigmoid tanh(gamma g + coef0)."""
    n_sv = kb.shape[1]
    if kernel_code == RBF:
        for q in range(m):
            xq = xx[q]
            for s in range(n_sv):
                d = fma(-2.0, kb[q, s], xq + sq_norms[s])
                kb[q, s] = exp_nonpositive(-gamma * max(d, 0.0))
    elif kernel_code == POLY and 1 <= degree <= 4:
        # libsvm's powi (square and multiply) spelled out for the usual degrees: the same products in the same order,
        # so values are bit-identical for the same base, in one vectorised pass.
        for q in range(m):
            for s in range(n_sv):
                b = gamma * kb[q, s] + coef0
                if degree == 1:
                    kb[q, s] = b
                elif degree == 2:
                    kb[q, s] = b * b
                elif degree == 3:
                    kb[q, s] = b * (b * b)
                else:
                    b2 = b * b
                    kb[q, s] = b2 * b2
    elif kernel_code == POLY:
        for q in range(m):
            # The general powi with the loop over exponent bits outside, so each pass vectorises.
            for s in range(n_sv):
                kb[q, s] = gamma * kb[q, s] + coef0
                ret[s] = 1.0
            t = degree
            while t > 0:
                if t % 2 == 1:
                    for s in range(n_sv):
                        ret[s] *= kb[q, s]
                for s in range(n_sv):
                    kb[q, s] = kb[q, s] * kb[q, s]
                t //= 2
            for s in range(n_sv):
                kb[q, s] = ret[s]
    elif kernel_code == SIGMOID:
        for q in range(m):
            for s in range(n_sv):
                kb[q, s] = _tanh(gamma * kb[q, s] + coef0)


@kernel
def svm_decision(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    sv: np.ndarray, sv_sq_norms: np.ndarray, centre: np.ndarray, coef_t: np.ndarray, block_bounds: np.ndarray, block_outputs: np.ndarray,
    intercept: np.ndarray, kernel_code: int, gamma: float, coef0: float, degree: int, out: np.ndarray,
) -> None:
    """out[r, c] = intercept[c] + sum_b sum_{k: block_outputs[b, k] = c} sum_{s in block b} coef_t[s, k] K(x'_r - centre, sv_s), x' = (x - shift) scale + offset.

    One tile of rows (and its kernel values, one class block at a time) at a time.
    """
    n_rows, n_features = X.shape
    n_coef = coef_t.shape[1]
    n_out = intercept.shape[0]
    n_blocks = block_bounds.shape[0] - 1
    widest = 1
    for b in range(n_blocks):
        widest = max(widest, block_bounds[b + 1] - block_bounds[b])
    rows = tile_rows(max(widest, n_features))
    step = max(1, TILE_DOUBLES // rows)
    xb = np.empty((rows, n_features))
    identity = is_identity(shift, scale, offset)
    xx = np.zeros(rows)
    part = np.empty((rows, n_coef))
    # Flat views: with one column (n_coef == 1) they are part[:, 0] and coef_t[:, 0], for gemv.
    column = part.reshape(part.size)
    coef_column = coef_t.reshape(coef_t.size)
    ret = np.empty(min(widest, step))
    for a in range(0, n_rows, rows):
        m = min(rows, n_rows - a)
        affine_rows(X, a, m, shift, scale, offset, identity, xb)
        if kernel_code == RBF:
            for q in range(m):
                acc = 0.0
                for j in range(n_features):
                    # After the scaler, not folded into its offset: x' itself is rounded exactly as scikit-learn rounds it.
                    xb[q, j] -= centre[j]
                    acc = fma(xb[q, j], xb[q, j], acc)
                xx[q] = acc
        for q in range(m):
            for c in range(n_out):
                out[a + q, c] = intercept[c]
        for b in range(n_blocks):
            # A block is one class's support vectors: its kernel values are computed once and feed every pair of that
            # class. A class wider than the tile budget goes in slices, so no tile outgrows TILE_DOUBLES.
            for lo in range(block_bounds[b], block_bounds[b + 1], step):
                hi = min(block_bounds[b + 1], lo + step)
                kb = np.empty((m, hi - lo))
                np.dot(xb[:m], sv[lo:hi].T, kb)
                _kernel_map(kb, m, xx, sv_sq_norms[lo:hi], kernel_code, gamma, coef0, degree, ret)
                if n_coef == 1:
                    np.dot(kb, coef_column[lo:hi], column[:m])  # gemv: BLAS's gemm is slow for one column
                else:
                    np.dot(kb, coef_t[lo:hi], part[:m])
                for q in range(m):
                    for k in range(n_coef):
                        c = block_outputs[b, k]
                        if c >= 0:
                            out[a + q, c] += part[q, k]


@parallel_kernel
def svm_decision_parallel(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    sv: np.ndarray, sv_sq_norms: np.ndarray, centre: np.ndarray, coef_t: np.ndarray, block_bounds: np.ndarray, block_outputs: np.ndarray,
    intercept: np.ndarray, kernel_code: int, gamma: float, coef0: float, degree: int, out: np.ndarray,
) -> None:
    """`svm_decision` with row tiles spread over numba's threads (batches of config.PARALLEL_MIN_ROWS or more)."""
    n = X.shape[0]
    for t in prange((n + PARALLEL_TILE_ROWS - 1) // PARALLEL_TILE_ROWS):
        r0 = t * PARALLEL_TILE_ROWS
        r1 = min(n, r0 + PARALLEL_TILE_ROWS)
        # Row slices of C arrays stay C: the same compiled svm_decision serves both variants.
        svm_decision(X[r0:r1], shift, scale, offset, sv, sv_sq_norms, centre, coef_t, block_bounds, block_outputs,
                     intercept, kernel_code, gamma, coef0, degree, out[r0:r1])


@kernel
def svc_predict(decision: np.ndarray, n_classes: int, out: np.ndarray) -> None:
    """out[r] = index of the class with most one-vs-one votes (libsvm: pair (i, j) votes i when its libsvm value > 0, first maximum wins)."""
    n = decision.shape[0]
    votes = np.zeros(n_classes, dtype=np.int64)
    for r in range(n):
        if n_classes == 2:
            # scikit-learn's binary decision is libsvm's negated, so libsvm's "> 0 votes class 0" reads "< 0".
            out[r] = 0 if decision[r, 0] < 0.0 else 1
            continue
        for i in range(n_classes):
            votes[i] = 0
        p = 0
        for i in range(n_classes):
            for j in range(i + 1, n_classes):
                if decision[r, p] > 0.0:
                    votes[i] += 1
                else:
                    votes[j] += 1
                p += 1
        best = 0
        for i in range(1, n_classes):
            if votes[i] > votes[best]:
                best = i
        out[r] = best


@inlined
def _ovr_row(decision: np.ndarray, r: int, n_classes: int, conf: np.ndarray, dst: np.ndarray) -> None:
    """dst[c] = votes_c + s_c / (3 (|s_c| + 1)) for row r, s_c the summed one-vs-one confidences."""
    for c in range(n_classes):
        dst[c] = 0.0
        conf[c] = 0.0
    p = 0
    for i in range(n_classes):
        for j in range(i + 1, n_classes):
            d = decision[r, p]
            conf[i] += d
            conf[j] -= d
            if d < 0.0:
                dst[j] += 1.0
            else:
                dst[i] += 1.0
            p += 1
    for c in range(n_classes):
        dst[c] += conf[c] / (3.0 * (abs(conf[c]) + 1.0))


@kernel
def svc_ovr_decision(decision: np.ndarray, n_classes: int, out: np.ndarray) -> None:
    """out[r, c] = votes_c + s_c / (3 (|s_c| + 1)): scikit-learn's ovr shape from one-vs-one values (n_classes > 2)."""
    conf = np.empty(n_classes)
    for r in range(decision.shape[0]):
        _ovr_row(decision, r, n_classes, conf, out[r])


@kernel
def svc_predict_break_ties(decision: np.ndarray, n_classes: int, out: np.ndarray) -> None:
    """out[r] = argmax_c of the ovr decision (scikit-learn's predict with break_ties=True, n_classes > 2)."""
    conf = np.empty(n_classes)
    ovr = np.empty(n_classes)
    for r in range(decision.shape[0]):
        _ovr_row(decision, r, n_classes, conf, ovr)
        best = 0
        for c in range(1, n_classes):
            if ovr[c] > ovr[best]:
                best = c
        out[r] = best


@inlined
def _sigmoid_predict(decision_value: float, a: float, b: float) -> float:
    """libsvm's Platt sigmoid 1 / (1 + exp(f)), f = decision A + B, written to avoid cancellation on either side."""
    f = decision_value * a + b
    if f >= 0:
        return math.exp(-f) / (1.0 + math.exp(-f))
    return 1.0 / (1 + math.exp(f))


@inlined
def _couple_pairwise(k: int, r: np.ndarray, q: np.ndarray, qp: np.ndarray, p: np.ndarray) -> None:
    """p = libsvm's multiclass_probability: Wu, Lin and Weng's method 2, iterated until max |Qp - pQp| < 0.005 / k."""
    max_iter = max(100, k)
    eps = 0.005 / k
    for t in range(k):
        p[t] = 1.0 / k
        q[t, t] = 0.0
        for j in range(t):
            q[t, t] += r[j, t] * r[j, t]
            q[t, j] = q[j, t]
        for j in range(t + 1, k):
            q[t, t] += r[j, t] * r[j, t]
            q[t, j] = -r[j, t] * r[t, j]
    for _ in range(max_iter):
        pqp = 0.0
        for t in range(k):
            qp[t] = 0.0
            for j in range(k):
                qp[t] += q[t, j] * p[j]
            pqp += p[t] * qp[t]
        max_error = 0.0
        for t in range(k):
            max_error = max(max_error, abs(qp[t] - pqp))
        if max_error < eps:
            break
        for t in range(k):
            diff = (-qp[t] + pqp) / q[t, t]
            p[t] += diff
            pqp = (pqp + diff * (diff * q[t, t] + 2 * qp[t])) / (1 + diff) / (1 + diff)
            for j in range(k):
                qp[j] = (qp[j] + diff * q[t, j]) / (1 + diff)
                p[j] /= 1 + diff


@kernel
def svc_predict_proba(decision: np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray, n_classes: int, out: np.ndarray) -> None:
    """out[r] = libsvm's predict_probability: clipped Platt sigmoids per pair, coupled by multiclass_probability (binary too)."""
    n = decision.shape[0]
    k = n_classes
    pairwise = np.empty((k, k))
    q = np.empty((k, k))
    qp = np.empty(k)
    p = np.empty(k)
    sign = -1.0 if k == 2 else 1.0  # back to libsvm's orientation: scikit-learn negates the binary decision
    for row in range(n):
        pair = 0
        for i in range(k):
            for j in range(i + 1, k):
                prob = _sigmoid_predict(sign * decision[row, pair], prob_a[pair], prob_b[pair])
                prob = min(max(prob, MIN_PROB), 1 - MIN_PROB)
                pairwise[i, j] = prob
                pairwise[j, i] = 1 - prob
                pair += 1
        _couple_pairwise(k, pairwise, q, qp, p)
        for c in range(k):
            out[row, c] = p[c]


@kernel
def one_class_predict(decision: np.ndarray, out: np.ndarray) -> None:
    """out[r] = +1 where decision[r, 0] > 0 else -1 (OneClassSVM.predict)."""
    for r in range(decision.shape[0]):
        out[r] = 1 if decision[r, 0] > 0.0 else -1


def support_vector_params(support_vectors: np.ndarray, kernel_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sv, sv_sq_norms, centre) for `svm_decision`: for rbf the support vectors minus their mean, their squared norms and the mean; else as given, 0, 0."""
    sv = np.asarray(support_vectors, dtype=np.float64)
    centre = np.zeros(sv.shape[1])
    if kernel_name == "rbf":
        # |x - sv| is shift-invariant; centring keeps |x|^2 + |sv|^2 - 2 x.sv free of cancellation for data far from 0.
        centre = sv.mean(axis=0)
        sv = sv - centre
    sv_sq_norms = np.einsum("ij,ij->i", sv, sv) if kernel_name == "rbf" else np.zeros(sv.shape[0])
    return np.ascontiguousarray(sv), sv_sq_norms, centre


def svc_coefficients(dual_coef: np.ndarray, n_support: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coef_t, block_bounds, block_outputs) for SVC/NuSVC: class c's support vectors feed pair (c, o) through dual_coef_[o - 1 if o > c else o]."""
    coef_t = np.ascontiguousarray(np.asarray(dual_coef, dtype=np.float64).T)
    n_support = np.asarray(n_support, dtype=np.int64)
    k = len(n_support)
    if k == 2:
        # Both classes feed the single pair through the single row of dual_coef_: one block, one GEMM.
        return coef_t, np.array([0, int(n_support.sum())], dtype=np.int64), np.zeros((1, 1), dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(n_support)]).astype(np.int64)
    pair_index = -np.ones((k, k), dtype=np.int64)
    p = 0
    for i in range(k):
        for j in range(i + 1, k):
            pair_index[i, j] = pair_index[j, i] = p
            p += 1
    outputs = np.empty((k, k - 1), dtype=np.int64)
    for c in range(k):
        for row in range(k - 1):
            other = row if row < c else row + 1
            outputs[c, row] = pair_index[c, other]
    return coef_t, bounds, outputs


def single_output_coefficients(dual_coef: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coef_t, block_bounds, block_outputs) for SVR, NuSVR and OneClassSVM: one output from dual_coef_[0]."""
    coef = np.asarray(dual_coef, dtype=np.float64).reshape(1, -1)
    return np.ascontiguousarray(coef.T), np.array([0, coef.shape[1]], dtype=np.int64), np.zeros((1, 1), dtype=np.int64)


def linear_kernel_weights(
    support_vectors: np.ndarray, coef_t: np.ndarray, block_bounds: np.ndarray, block_outputs: np.ndarray, n_outputs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sv, sv_sq_norms, centre, coef_t, block_bounds, block_outputs) folding kernel='linear': sum_s a_s (x . sv_s) = x . w, w = sum_s a_s sv_s."""
    # One weight row per output replaces all support vectors: O(n_features) per output instead of O(n_features n_sv).
    sv = np.asarray(support_vectors, dtype=np.float64)
    weights = np.zeros((n_outputs, sv.shape[1]))
    for b in range(len(block_bounds) - 1):
        lo, hi = int(block_bounds[b]), int(block_bounds[b + 1])
        for k in range(block_outputs.shape[1]):
            c = int(block_outputs[b, k])
            if c >= 0:
                weights[c] += coef_t[lo:hi, k] @ sv[lo:hi]
    n_features = sv.shape[1]
    return (weights, np.zeros(n_outputs), np.zeros(n_features), np.eye(n_outputs),
            np.array([0, n_outputs], dtype=np.int64), np.arange(n_outputs, dtype=np.int64).reshape(1, -1))
