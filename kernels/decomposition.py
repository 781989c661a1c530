"""Linear projections of rows: the fused affine pre-scaling, PCA and TruncatedSVD.

`affine_rows` is the pre-scaling every family applies while it copies a tile of
the request into float64, so a scaler in front of a model costs no extra pass.
The helpers are `inlined` into the kernels of every family that calls them (no compile
of their own on a cold cache); numba keys its on-disk cache on each module's own file,
so after editing this one, clear the other modules' cached entries too (an install
rewrites every file and so does it by itself).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core.extending import intrinsic

from tensorwire.kernels.config import inlined, kernel, parallel_kernel

TILE_DOUBLES = 65536  # a row tile and its products stay within 512 KiB (half of a 1 MiB L2)
MAX_TILE_ROWS = 256
PARALLEL_TILE_ROWS = 256  # rows per prange task in the parallel variants


def _fma_intrinsic(typingctx, a, b, c):  # type: ignore[no-untyped-def]
    """a * b + c with one rounding (llvm.fma): exact IEEE, so no fastmath is needed for the fused instruction."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        double = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [double], ir.FunctionType(double, [double] * 3))
        return builder.call(fn, args)

    return sig, codegen


def _ieee_div_intrinsic(typingctx, a, b):  # type: ignore[no-untyped-def]
    """a / b as IEEE division: numba's `/` checks for a zero divisor, a branch that keeps loops from vectorising."""
    sig = types.float64(types.float64, types.float64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.fdiv(args[0], args[1])

    return sig, codegen


# LLVM intrinsics callable from kernels (typed Any for mypy: numba supplies typingctx).
fma: Any = intrinsic(_fma_intrinsic)
ieee_div: Any = intrinsic(_ieee_div_intrinsic)


@inlined
def tile_rows(width: int) -> int:
    """Rows per tile so that a tile of `width` float64 columns fits TILE_DOUBLES."""
    return max(1, min(MAX_TILE_ROWS, TILE_DOUBLES // max(1, width)))


@inlined
def is_identity(shift: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> bool:
    """True when (shift, scale, offset) = (0, 1, 0): the pre-scaling can be skipped."""
    for j in range(shift.shape[0]):
        if shift[j] != 0.0 or scale[j] != 1.0 or offset[j] != 0.0:
            return False
    return True


@inlined
def affine_rows(
    X: np.ndarray, r0: int, m: int, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray, identity: bool, xb: np.ndarray
) -> None:
    """xb[q, j] = (X[r0 + q, j] - shift[j]) * scale[j] + offset[j] in float64, for q < m (a plain copy when `identity`)."""
    # Subtracting before scaling keeps StandardScaler exact for features whose mean dwarfs their spread;
    # MinMaxScaler (shift 0) is then bit-identical to scikit-learn's x * scale_ + min_.
    n_features = X.shape[1]
    if identity:
        for q in range(m):
            for j in range(n_features):
                xb[q, j] = np.float64(X[r0 + q, j])
        return
    for q in range(m):
        for j in range(n_features):
            xb[q, j] = (np.float64(X[r0 + q, j]) - shift[j]) * scale[j] + offset[j]


@kernel
def project(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    components_t: np.ndarray, bias: np.ndarray, divisor: np.ndarray, out: np.ndarray,
) -> None:
    """out = (((X - shift) * scale + offset) @ components_t - bias) / divisor: PCA (whitened or not), TruncatedSVD."""
    n_rows, n_features = X.shape
    n_out = components_t.shape[1]
    rows = tile_rows(max(n_features, n_out))
    xb = np.empty((rows, n_features))
    identity = is_identity(shift, scale, offset)
    plain = True
    for c in range(n_out):
        plain = plain and bias[c] == 0.0 and divisor[c] == 1.0
    for a in range(0, n_rows, rows):
        m = min(rows, n_rows - a)
        affine_rows(X, a, m, shift, scale, offset, identity, xb)
        np.dot(xb[:m], components_t, out[a:a + m])
        if plain:
            continue
        for q in range(a, a + m):
            for c in range(n_out):
                # scikit-learn's order: project, subtract the projected mean, then divide.
                out[q, c] = ieee_div(out[q, c] - bias[c], divisor[c])


@parallel_kernel
def project_parallel(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    components_t: np.ndarray, bias: np.ndarray, divisor: np.ndarray, out: np.ndarray,
) -> None:
    """`project` with row tiles spread over numba's threads (batches of config.PARALLEL_MIN_ROWS or more)."""
    n = X.shape[0]
    for t in prange((n + PARALLEL_TILE_ROWS - 1) // PARALLEL_TILE_ROWS):
        r0 = t * PARALLEL_TILE_ROWS
        r1 = min(n, r0 + PARALLEL_TILE_ROWS)
        # Row slices of C arrays stay C: the same compiled `project` serves both variants.
        project(X[r0:r1], shift, scale, offset, components_t, bias, divisor, out[r0:r1])


def identity_affine(n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shift, scale, offset) = (0, 1, 0): the pre-scaling that leaves rows unchanged."""
    return np.zeros(n_features), np.ones(n_features), np.zeros(n_features)


def pca_params(
    components: np.ndarray, mean: np.ndarray, explained_variance: np.ndarray, whiten: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(components_t, bias, divisor) for `project` from PCA: components_.T, mean_ @ components_.T, sqrt(explained_variance_) or 1."""
    components = np.asarray(components)
    bias = (np.asarray(mean) @ components.T).astype(np.float64)
    if whiten:
        variance = np.asarray(explained_variance)
        eps = float(np.finfo(variance.dtype).eps)  # scikit-learn clips tiny variances so rank-deficient fits stay finite
        divisor = np.sqrt(variance).astype(np.float64)
        divisor[divisor < eps] = eps
    else:
        divisor = np.ones(components.shape[0])
    return np.ascontiguousarray(components.T, dtype=np.float64), bias, divisor


def truncated_svd_params(components: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(components_t, bias, divisor) for `project` from TruncatedSVD: components_.T, 0, 1."""
    n_components = np.asarray(components).shape[0]
    return np.ascontiguousarray(np.asarray(components).T, dtype=np.float64), np.zeros(n_components), np.ones(n_components)
