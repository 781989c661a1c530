"""Multi-layer perceptron scoring (MLPClassifier, MLPRegressor): dense layers, hidden activation, output activation.

The layers' weights lie in one flat array (layer l: coef [sizes[l], sizes[l + 1]] row-major, then its intercept),
float64, or float32 for a network scikit-learn itself runs in float32 (`compute_dtype`). One call scores every
layer tile by tile with two ping-pong buffers allocated once per call: a tile of BLAS_MIN_ROWS rows or more goes
through BLAS (one gemm per layer, written into the buffer), a smaller one through a fused loop; each layer's
intercept and activation are applied while its tile is still in cache.

There is no numba-parallel variant: large batches take their threads from BLAS (the server caps BLAS at the
kernel thread budget), and a prange around BLAS calls would run two thread pools on the same cores.
"""

from __future__ import annotations

import math

import numpy as np

from tensorwire.kernels.config import inlined, kernel
from tensorwire.kernels.decomposition import affine_rows, ieee_div, is_identity
from tensorwire.kernels.svm import exp_nonpositive

IDENTITY, LOGISTIC, TANH, RELU, SOFTMAX = 0, 1, 2, 3, 4
ACTIVATIONS = {"identity": IDENTITY, "logistic": LOGISTIC, "tanh": TANH, "relu": RELU, "softmax": SOFTMAX}
BLAS_MIN_ROWS = 8  # from 8 rows one gemm per layer beats the fused loop (fp32 and fp64, 2-core Zen 3)
# rows per tile: 192 beat 256-1024 by 15-25% in fp64 and fp32 (32-64-64-3 network at 4096 rows, 2-core Sapphire
# Rapids, OpenBLAS SkylakeX kernels); 64-192 were alike. OpenBLAS packs the gemm's rows in blocks of about that size, and
# a tile's activations stay in L1/L2 between layers.
TILE_ROWS = 192


def mlp_params(coefs: list[np.ndarray], intercepts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(weights, sizes): every layer's coef then intercept in one flat float64 array, and the layer widths."""
    sizes = [coefs[0].shape[0]] + [c.shape[1] for c in coefs]
    parts = []
    for c, b in zip(coefs, intercepts):
        parts.append(np.asarray(c, dtype=np.float64).reshape(-1))
        parts.append(np.asarray(b, dtype=np.float64).reshape(-1))
    return np.concatenate(parts), np.array(sizes, dtype=np.int64)


def compute_dtype(input_dtype: type[np.floating], coef_dtype: type[np.floating]) -> type[np.floating]:
    """The precision scikit-learn's forward pass runs in: numpy's promotion of X's dtype and coefs_'s dtype
    (float32 only when both are float32, i.e. a network trained on float32 data scoring float32 rows)."""
    return np.float32 if np.dtype(input_dtype) == np.float32 and np.dtype(coef_dtype) == np.float32 else np.float64


@inlined
def _finish_layer(h: np.ndarray, intercept: np.ndarray, code: int) -> None:
    """h += intercept, then the activation in place (scikit-learn's ACTIVATIONS): one branch per tile, so that each
    loop is straight-line code LLVM can vectorise, and exp_nonpositive (within 1 ulp) instead of calls to libm's
    exp and tanh, which it cannot."""
    m, width = h.shape
    if code == IDENTITY:
        for q in range(m):
            for j in range(width):
                h[q, j] += intercept[j]
    elif code == RELU:
        for q in range(m):
            for j in range(width):
                v = h[q, j] + intercept[j]
                h[q, j] = v if not v < 0.0 else 0.0  # np.maximum(v, 0): NaN stays NaN
    elif code == LOGISTIC:
        for q in range(m):
            for j in range(width):
                v = np.float64(h[q, j] + intercept[j])
                # scipy.special.expit, stable for large |v|: e = exp(-|v|) never overflows.
                e = exp_nonpositive(-abs(v))
                h[q, j] = ieee_div(1.0 if v >= 0.0 else e, 1.0 + e)
    elif code == TANH:
        for q in range(m):
            for j in range(width):
                v = np.float64(h[q, j] + intercept[j])
                e = exp_nonpositive(-2.0 * abs(v))
                h[q, j] = math.copysign(ieee_div(1.0 - e, 1.0 + e), v)
    else:  # SOFTMAX
        for q in range(m):
            mx = -np.inf
            for j in range(width):
                h[q, j] += intercept[j]
                mx = max(mx, h[q, j])
            for j in range(width):
                h[q, j] -= mx
        # exp over the tile as one flat run, so that it vectorises across rows however few the classes
        flat = h.reshape(m * width)
        for i in range(m * width):
            flat[i] = exp_nonpositive(np.float64(flat[i]))
        for q in range(m):
            s = 0.0
            for j in range(width):
                s += h[q, j]
            for j in range(width):
                h[q, j] = ieee_div(np.float64(h[q, j]), s)


@kernel
def dense_layer(src: np.ndarray, coef: np.ndarray, intercept: np.ndarray, code: int, dst: np.ndarray) -> None:
    """dst [m, fan_out] = activation(src [m, fan_in] @ coef + intercept); src and dst C-contiguous."""
    m, fan_out = dst.shape
    fan_in = src.shape[1]
    if m >= BLAS_MIN_ROWS:
        np.dot(src, coef, dst)
    else:
        for q in range(m):
            for j in range(fan_out):
                dst[q, j] = 0.0
            for i in range(fan_in):
                v = src[q, i]
                for j in range(fan_out):
                    dst[q, j] += v * coef[i, j]
    _finish_layer(dst, intercept, code)


@kernel
def _layers(
    src: np.ndarray, t: int, weights: np.ndarray, sizes: np.ndarray, hidden: int, output: int,
    a: np.ndarray, b: np.ndarray, out: np.ndarray,
) -> None:
    """out[t : t + m] = every layer applied to the tile src [m, sizes[0]], through the flat buffers a and b."""
    m = src.shape[0]
    n_layers = sizes.shape[0] - 1
    pos = 0
    for layer in range(n_layers):
        fan_in, fan_out = sizes[layer], sizes[layer + 1]
        coef = weights[pos:pos + fan_in * fan_out].reshape((fan_in, fan_out))
        pos += fan_in * fan_out
        intercept = weights[pos:pos + fan_out]
        pos += fan_out
        if layer == n_layers - 1:
            dense_layer(src, coef, intercept, output, out[t:t + m])
        else:
            # hidden layers alternate between b and a; `a` may hold the input tile, which layer 0 reads
            dst = (b if layer % 2 == 0 else a)[: m * fan_out].reshape((m, fan_out))
            dense_layer(src, coef, intercept, hidden, dst)
            src = dst


@kernel
def _tile_buffers(n: int, sizes: np.ndarray, weights: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(rows per tile, two flat buffers of rows x the widest layer), allocated once per call."""
    widest = 0
    for s in sizes:
        widest = max(widest, s)
    rows = min(TILE_ROWS, max(n, 1))
    return rows, np.empty(rows * widest, dtype=weights.dtype), np.empty(rows * widest, dtype=weights.dtype)


@kernel
def mlp_forward(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    weights: np.ndarray, sizes: np.ndarray, hidden: int, output: int, out: np.ndarray,
) -> None:
    """out [n_rows, n_outputs] = the network's output activations for x' = (x - shift) scale + offset, in the
    precision of `weights` (`out` has the same dtype)."""
    n = X.shape[0]
    rows, a, b = _tile_buffers(n, sizes, weights)
    identity = is_identity(shift, scale, offset)
    n_in = sizes[0]
    for t in range(0, n, rows):
        m = min(rows, n - t)
        src = a[: m * n_in].reshape((m, n_in))
        affine_rows(X, t, m, shift, scale, offset, identity, src)
        _layers(src, t, weights, sizes, hidden, output, a, b, out)


@kernel
def mlp_forward_direct(X: np.ndarray, weights: np.ndarray, sizes: np.ndarray, hidden: int, output: int, out: np.ndarray) -> None:
    """`mlp_forward` without pre-scaling, reading X's rows in place: X C-contiguous and of the dtype of `weights`."""
    n = X.shape[0]
    rows, a, b = _tile_buffers(n, sizes, weights)
    for t in range(0, n, rows):
        _layers(X[t:min(n, t + rows)], t, weights, sizes, hidden, output, a, b, out)
