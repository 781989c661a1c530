"""k-means scoring (KMeans, MiniBatchKMeans): nearest-centre labels and distances to every centre.

Both go through scikit-learn's expansion |x|^2 - 2 x.c + |c|^2 with precomputed
centre norms, one tile of rows at a time, so no n_rows x n_centres matrix exists.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from tensorwire.kernels.config import inlined, kernel, parallel_kernel
from tensorwire.kernels.decomposition import PARALLEL_TILE_ROWS, affine_rows, fma, is_identity, tile_rows


@inlined
def _kmeans_rows(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    centers_t: np.ndarray, center_sq_norms: np.ndarray, labels: np.ndarray, distances: np.ndarray, want_distances: bool,
) -> None:
    """labels[r] = argmin_c (|c|^2 - 2 x'.c), or distances[r, c] = sqrt(max(|x'|^2 - 2 x'.c + |c|^2, 0)), for every row r of X."""
    # Inlined (numba IR) into both kernels: a compiled helper would be compiled once per flag value, then optimised
    # again inside each kernel.
    n_rows, n_features = X.shape
    n_centers = centers_t.shape[1]
    rows = tile_rows(max(n_features, n_centers))
    xb = np.empty((rows, n_features))
    identity = is_identity(shift, scale, offset)
    g = np.empty((rows, n_centers))
    for a in range(0, n_rows, rows):
        m = min(rows, n_rows - a)
        affine_rows(X, a, m, shift, scale, offset, identity, xb)
        np.dot(xb[:m], centers_t, g[:m])
        if want_distances:
            for q in range(m):
                xx = 0.0
                for j in range(n_features):
                    xx = fma(xb[q, j], xb[q, j], xx)
                for c in range(n_centers):
                    # scikit-learn's euclidean_distances order: -2 x.c, then + |x|^2, then + |c|^2.
                    distances[a + q, c] = math.sqrt(max(-2.0 * g[q, c] + xx + center_sq_norms[c], 0.0))
        else:
            for q in range(m):
                # |x|^2 is the same for every centre, so the argmin skips it, as scikit-learn's predict does;
                # strict < keeps the first of equal distances, as scikit-learn does.
                best = 0
                best_d = fma(-2.0, g[q, 0], center_sq_norms[0])
                for c in range(1, n_centers):
                    d = fma(-2.0, g[q, c], center_sq_norms[c])
                    if d < best_d:
                        best_d = d
                        best = c
                labels[a + q] = best


@kernel
def kmeans_predict(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    centers_t: np.ndarray, center_sq_norms: np.ndarray, out: np.ndarray,
) -> None:
    """out[r] = argmin_c |x'_r - c|^2 (first centre on exact ties), x' = (x - shift) scale + offset."""
    _kmeans_rows(X, shift, scale, offset, centers_t, center_sq_norms, out, np.empty((0, 0)), False)


@parallel_kernel
def kmeans_predict_parallel(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    centers_t: np.ndarray, center_sq_norms: np.ndarray, out: np.ndarray,
) -> None:
    """`kmeans_predict` with row tiles spread over numba's threads (batches of config.PARALLEL_MIN_ROWS or more)."""
    n = X.shape[0]
    for t in prange((n + PARALLEL_TILE_ROWS - 1) // PARALLEL_TILE_ROWS):
        r0 = t * PARALLEL_TILE_ROWS
        r1 = min(n, r0 + PARALLEL_TILE_ROWS)
        kmeans_predict(X[r0:r1], shift, scale, offset, centers_t, center_sq_norms, out[r0:r1])


@kernel
def kmeans_transform(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    centers_t: np.ndarray, center_sq_norms: np.ndarray, out: np.ndarray,
) -> None:
    """out[r, c] = |x'_r - c| = sqrt(max(|x'|^2 - 2 x'.c + |c|^2, 0)), x' = (x - shift) scale + offset."""
    _kmeans_rows(X, shift, scale, offset, centers_t, center_sq_norms, np.empty(0, dtype=np.int64), out, True)


@parallel_kernel
def kmeans_transform_parallel(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    centers_t: np.ndarray, center_sq_norms: np.ndarray, out: np.ndarray,
) -> None:
    """`kmeans_transform` with row tiles spread over numba's threads (batches of config.PARALLEL_MIN_ROWS or more)."""
    n = X.shape[0]
    for t in prange((n + PARALLEL_TILE_ROWS - 1) // PARALLEL_TILE_ROWS):
        r0 = t * PARALLEL_TILE_ROWS
        r1 = min(n, r0 + PARALLEL_TILE_ROWS)
        kmeans_transform(X[r0:r1], shift, scale, offset, centers_t, center_sq_norms, out[r0:r1])


def kmeans_params(cluster_centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centers_t, center_sq_norms) for the k-means kernels from cluster_centers_: its transpose and its squared row norms."""
    centers = np.asarray(cluster_centers, dtype=np.float64)
    return np.ascontiguousarray(centers.T), np.einsum("ij,ij->i", centers, centers)
