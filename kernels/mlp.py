"""Multi-layer perceptron scoring (MLPClassifier, MLPRegressor): dense layers, hidden activation, output activation.

The layers' weights lie in one flat float64 array (layer l: coef [sizes[l], sizes[l + 1]] row-major, then its
intercept), so one call scores every layer with two ping-pong buffers of [tile rows, widest layer] allocated
once per call: small batches never allocate per layer, large ones go through BLAS one tile at a time.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from tensorwire.kernels.config import inlined, kernel, parallel_kernel
from tensorwire.kernels.decomposition import PARALLEL_TILE_ROWS, affine_rows, is_identity

IDENTITY, LOGISTIC, TANH, RELU, SOFTMAX = 0, 1, 2, 3, 4
ACTIVATIONS = {"identity": IDENTITY, "logistic": LOGISTIC, "tanh": TANH, "relu": RELU, "softmax": SOFTMAX}
_TILE = 256


def mlp_params(coefs: list[np.ndarray], intercepts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(weights, sizes): every layer's coef then intercept in one flat float64 array, and the layer widths."""
    sizes = [coefs[0].shape[0]] + [c.shape[1] for c in coefs]
    parts = []
    for c, b in zip(coefs, intercepts):
        parts.append(np.asarray(c, dtype=np.float64).reshape(-1))
        parts.append(np.asarray(b, dtype=np.float64).reshape(-1))
    return np.concatenate(parts), np.array(sizes, dtype=np.int64)


@inlined
def _activate(h: np.ndarray, m: int, width: int, code: int) -> None:
    """Apply an activation in place to h[:m, :width] (scikit-learn's ACTIVATIONS)."""
    if code == LOGISTIC:
        for q in range(m):
            for j in range(width):
                v = h[q, j]
                # scipy.special.expit, stable for large |v|.
                if v >= 0.0:
                    h[q, j] = 1.0 / (1.0 + math.exp(-v))
                else:
                    e = math.exp(v)
                    h[q, j] = e / (1.0 + e)
    elif code == TANH:
        for q in range(m):
            for j in range(width):
                h[q, j] = math.tanh(h[q, j])
    elif code == RELU:
        for q in range(m):
            for j in range(width):
                if not h[q, j] > 0.0:
                    h[q, j] = 0.0
    elif code == SOFTMAX:
        for q in range(m):
            mx = h[q, 0]
            for j in range(1, width):
                if h[q, j] > mx:
                    mx = h[q, j]
            s = 0.0
            for j in range(width):
                e = math.exp(h[q, j] - mx)
                h[q, j] = e
                s += e
            for j in range(width):
                h[q, j] /= s


@kernel
def _mlp_rows(
    X: np.ndarray, r0: int, r1: int, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    weights: np.ndarray, sizes: np.ndarray, hidden: int, output: int, out: np.ndarray,
) -> None:
    """out[r] = the network's output for rows r0 <= r < r1 of x' = (x - shift) scale + offset."""
    n_layers = sizes.shape[0] - 1
    widest = 0
    for s in sizes:
        widest = max(widest, s)
    rows = min(_TILE, max(r1 - r0, 1))
    a = np.empty((rows, widest))
    b = np.empty((rows, widest))
    identity = is_identity(shift, scale, offset)
    n_in = sizes[0]
    n_out = sizes[n_layers]
    for t in range(r0, r1, rows):
        m = min(rows, r1 - t)
        xb = a[:, :n_in]
        affine_rows(X, t, m, shift, scale, offset, identity, xb)
        src, dst = a, b
        pos = 0
        for layer in range(n_layers):
            fan_in, fan_out = sizes[layer], sizes[layer + 1]
            coef = weights[pos:pos + fan_in * fan_out].reshape((fan_in, fan_out))
            pos += fan_in * fan_out
            intercept = weights[pos:pos + fan_out]
            pos += fan_out
            h = dst[:m, :fan_out]
            if m >= 16:
                h[:, :] = np.dot(np.ascontiguousarray(src[:m, :fan_in]), coef)
                for q in range(m):
                    for j in range(fan_out):
                        h[q, j] += intercept[j]
            else:
                for q in range(m):
                    for j in range(fan_out):
                        h[q, j] = 0.0
                    for i in range(fan_in):
                        v = src[q, i]
                        for j in range(fan_out):
                            h[q, j] += v * coef[i, j]
                    for j in range(fan_out):
                        h[q, j] += intercept[j]
            _activate(h, m, fan_out, hidden if layer < n_layers - 1 else output)
            src, dst = dst, src
        for q in range(m):
            for j in range(n_out):
                out[t + q, j] = src[q, j]


@kernel
def mlp_forward(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    weights: np.ndarray, sizes: np.ndarray, hidden: int, output: int, out: np.ndarray,
) -> None:
    """out [n_rows, n_outputs] = the network's output activations for every row."""
    _mlp_rows(X, 0, X.shape[0], shift, scale, offset, weights, sizes, hidden, output, out)


@parallel_kernel
def mlp_forward_parallel(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    weights: np.ndarray, sizes: np.ndarray, hidden: int, output: int, out: np.ndarray,
) -> None:
    """`mlp_forward` with row tiles spread over numba's threads."""
    n = X.shape[0]
    for t in prange((n + PARALLEL_TILE_ROWS - 1) // PARALLEL_TILE_ROWS):
        r0 = t * PARALLEL_TILE_ROWS
        _mlp_rows(X, r0, min(n, r0 + PARALLEL_TILE_ROWS), shift, scale, offset, weights, sizes, hidden, output, out)


BLAS_MIN_ROWS = 512


def mlp_forward_blas(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    weights: np.ndarray, sizes: np.ndarray, hidden: int, output: int, out: np.ndarray,
) -> None:
    """`mlp_forward` for large batches: one BLAS matmul per layer over every row (float64, as scikit-learn)."""
    h = (X.astype(np.float64) - shift) * scale + offset
    pos = 0
    n_layers = sizes.shape[0] - 1
    for layer in range(n_layers):
        fan_in, fan_out = int(sizes[layer]), int(sizes[layer + 1])
        coef = weights[pos:pos + fan_in * fan_out].reshape(fan_in, fan_out)
        pos += fan_in * fan_out
        h = h @ coef
        h += weights[pos:pos + fan_out]
        pos += fan_out
        code = hidden if layer < n_layers - 1 else output
        if code == RELU:
            np.maximum(h, 0.0, out=h)
        elif code == TANH:
            np.tanh(h, out=h)
        elif code != IDENTITY:
            _activate(h, h.shape[0], fan_out, code)
    out[:] = h
