"""Exact brute-force nearest neighbours (KNeighbors*, NearestNeighbors): the k nearest stored rows per query row.

Distances are exact differences (not the norm expansion), so equal distances stay
equal; exact ties are kept and ordered as scikit-learn's ArgKmin does (its max-heap
push, then its sort, which is an insertion sort for k <= 15).
Metric codes: 0 euclidean, 1 manhattan, 2 chebyshev, 3 minkowski (power p).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from tensorwire.kernels.config import kernel, parallel_kernel
from tensorwire.kernels.decomposition import PARALLEL_TILE_ROWS, affine_rows, is_identity

METRICS = {"euclidean": 0, "manhattan": 1, "chebyshev": 2, "minkowski": 3}


@kernel
def _reduced(x: np.ndarray, train: np.ndarray, i: int, metric: int, p: float) -> float:
    """The metric's reduced distance (squared for euclidean, p-th power for minkowski) from x to train[i]."""
    acc = 0.0
    for j in range(x.shape[0]):
        d = abs(x[j] - train[i, j])
        if metric == 0:
            acc += d * d
        elif metric == 1:
            acc += d
        elif metric == 2:
            acc = max(acc, d)
        else:
            acc += d**p
    return acc


@kernel
def _heap_push(values: np.ndarray, indices: np.ndarray, val: float, idx: int) -> None:
    """scikit-learn's fixed-size max-heap push (utils/_heap.pyx), so exact ties keep the members and order it keeps."""
    size = values.shape[0]
    if val >= values[0]:
        return
    cur = 0
    while True:
        left = 2 * cur + 1
        right = left + 1
        if left >= size:
            break
        elif right >= size:
            if values[left] > val:
                swap = left
            else:
                break
        elif values[left] >= values[right]:
            if val < values[left]:
                swap = left
            else:
                break
        else:
            if val < values[right]:
                swap = right
            else:
                break
        values[cur] = values[swap]
        indices[cur] = indices[swap]
        cur = swap
    values[cur] = val
    indices[cur] = idx


@kernel
def _insertion_sort(values: np.ndarray, indices: np.ndarray) -> None:
    """scikit-learn's simultaneous_sort for up to 15 items (utils/_sorting.pyx: insertion sort, stable on the heap's order)."""
    for i in range(1, values.shape[0]):
        v = values[i]
        t = indices[i]
        j = i
        while j > 0 and values[j - 1] > v:
            values[j] = values[j - 1]
            indices[j] = indices[j - 1]
            j -= 1
        values[j] = v
        indices[j] = t


@kernel
def _kneighbors_rows(
    X: np.ndarray, r0: int, r1: int, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, metric: int, p: float, distances: np.ndarray, indices: np.ndarray,
) -> None:
    """distances/indices[r] = the k nearest rows of `train` to x'_r, nearest first, lower index first on ties."""
    k = indices.shape[1]
    n_train = train.shape[0]
    xb = np.empty((1, X.shape[1]))
    identity = is_identity(shift, scale, offset)
    best_d = np.empty(k)
    best_i = np.empty(k, dtype=np.int64)
    for r in range(r0, r1):
        affine_rows(X, r, 1, shift, scale, offset, identity, xb)
        x = xb[0]
        best_d[:] = np.inf
        best_i[:] = -1
        for i in range(n_train):
            _heap_push(best_d, best_i, _reduced(x, train, i, metric, p), i)
        _insertion_sort(best_d, best_i)
        for c in range(k):
            d = best_d[c]
            if metric == 0:
                d = np.sqrt(d)
            elif metric == 3:
                d = d ** (1.0 / p)
            distances[r, c] = d
            indices[r, c] = best_i[c]


@kernel
def kneighbors(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, metric: int, p: float, distances: np.ndarray, indices: np.ndarray,
) -> None:
    """The k = indices.shape[1] nearest training rows of every row of X (see `_kneighbors_rows`)."""
    _kneighbors_rows(X, 0, X.shape[0], shift, scale, offset, train, metric, p, distances, indices)


@parallel_kernel
def kneighbors_parallel(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, metric: int, p: float, distances: np.ndarray, indices: np.ndarray,
) -> None:
    """`kneighbors` with row tiles spread over numba's threads."""
    n = X.shape[0]
    for t in prange((n + PARALLEL_TILE_ROWS - 1) // PARALLEL_TILE_ROWS):
        r0 = t * PARALLEL_TILE_ROWS
        _kneighbors_rows(X, r0, min(n, r0 + PARALLEL_TILE_ROWS), shift, scale, offset, train, metric, p, distances, indices)
