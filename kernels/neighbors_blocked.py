"""Exact euclidean k nearest neighbours for batches: a BLAS product of blocks screens, exact differences decide.

Returns exactly what `neighbors.kneighbors` returns for metric 0 (euclidean; scikit-learn's minkowski p=2
is exported as euclidean): the same neighbours, the same order of exact ties, bit-identical distances.

How: query rows go in blocks of QUERY_BLOCK, the training set streams past each block in blocks of
TRAIN_BLOCK rows, and G = X_block @ train_block.T runs in BLAS (in train's precision: float64, or
float32 for a float32 training set). Every query row keeps scikit-learn's max-heap and visits the
training rows in index order, as the exact kernel does; a row whose guaranteed lower bound

    L = (1 - 2κ)·|x~|² - 2·3.03·ε_x·ρ - 2a  +  (1 - 2κ - 2·1.01·ε_x/ρ)·|y|²  -  2g     (ρ = |x~|, or 1 if x~ = 0)

on its exact reduced distance r (the float the exact kernel computes) is already >= the heap's root is
skipped: the heap would have refused it unchanged (it refuses val >= root, and its root only falls).
Every other row gets its exact, difference-based distance and the heap push, so the heap goes through
the same states as in the exact kernel, and ends identical. Where scikit-learn's ArgKmin merges one heap
per range of training rows (`neighbors.argkmin_ranges`), each range is screened into its own heap the same
way and merged as the exact kernel merges it.

Why L <= r (u = unit roundoff of float64, u_p of the product's precision, γ_m = m·u/(1 - m·u), n features):
1. the exact kernel sums n squares of rounded differences, all >= 0, left to right in float64:
   r >= (1 - γ_{n+3})·D² - n·2^-1075, D = |x - y| in reals.
2. the product runs on x~ = x rounded to u_p (x~ = x in float64), with |x - x~| <= ε_x = u_p·|x| + √n·η_p
   (η_p: half the smallest subnormal of that precision). D >= D~ - ε_x (triangle inequality, D~ = |x~ - y|), so
   D² >= D~² - 2ε_x·D~ >= D~² - 2ε_x(|x~| + |y|); with 2ε_x|y| <= ε_x(ρ + |y|²/ρ) (AM-GM) and |x~| <= 1.01ρ:
   D² >= D~² - 3.03·ε_x·ρ - 1.01·(ε_x/ρ)·|y|².
3. BLAS in any summation order, with or without FMA: |g - x~·y| <= γ_n^(p)·|x~||y| + n·η_p, and
   |x~||y| <= (|x~|² + |y|²)/2; the stored norms |x~|², |y|² (float64 sums) are within γ_n of the real ones.
4. evaluating L in float64 costs at most 6 roundings of values below 2.1·(|x~|² + |y|²).
Summed, with S = |x~|² + |y|²: r >= |x~|² + |y|² - 2g - κS - a - (step-2 terms) (g: the product's entry), where
κ = 1.01γ_n + 1.01γ_n^(p) + 2.2γ_{n+3} + 32u and a = 8n·2^-1074 + 4n·η_p; the kernel subtracts twice
every term (a margin for miscounting, which costs only a few extra exact rows).
Overflow is kept out: norms above NORM_LIMIT (float32: 2^60, float64: 2^1000) make L NaN or -inf, and
those rows are always compared exactly; NaN anywhere (input, training set) also falls to the exact path.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from tensorwire.kernels.config import kernel, parallel_kernel
from tensorwire.kernels.decomposition import affine_rows, is_identity
from tensorwire.kernels.neighbors import DBL_MAX, heap_push, merge_heap, simultaneous_sort

QUERY_BLOCK = 128  # query rows per product: G is QUERY_BLOCK x TRAIN_BLOCK, kept in L2 while it is screened
TRAIN_BLOCK = 1024  # training rows per product
# The blocked kernel costs ~3 µs per call more than the exact one (buffers, BLAS calls) and then far less per
# pair of rows: it is as fast from query rows x training rows x (features + 8) = 4,000 on (measured on the 2-core
# machine, 1 thread: 1 x 200 x 4 features is a draw, 1 x 200 x 32 is 1.5x and 1 x 10,000 x 32 3x faster blocked).
BLOCKED_MIN_WORK = 4_000
# Squared norms above these are not trusted to the bound (products could overflow): such rows go exact.
PARALLEL_TILE_ROWS = 2 * QUERY_BLOCK  # query rows per prange task in the parallel variant
NORM_LIMIT_FLOAT32 = 2.0**60
NORM_LIMIT_FLOAT64 = 2.0**1000


def prefers_blocked(n_query: int, n_train: int, n_features: int) -> bool:
    """Whether `kneighbors_blocked` beats the exact per-row kernel for this many query rows, training rows and features."""
    return n_query * n_train * (n_features + 8) >= BLOCKED_MIN_WORK


@kernel
def _gamma(m: int, u: float) -> float:
    """γ_m = m·u / (1 - m·u), the classic bound on m accumulated roundings."""
    return m * u / (1.0 - m * u)


@kernel
def _is_single(train: np.ndarray) -> bool:
    """Whether train is float32 (the product then runs in float32)."""
    return np.finfo(train.dtype).eps > 1e-10


@kernel
def train_squared_norms(train: np.ndarray) -> np.ndarray:
    """|y|² of every training row in float64, NaN for a row whose norm passes the precision's NORM_LIMIT."""
    limit = NORM_LIMIT_FLOAT32 if _is_single(train) else NORM_LIMIT_FLOAT64
    norms = np.empty(train.shape[0])
    for i in range(train.shape[0]):
        acc = 0.0
        for j in range(train.shape[1]):
            v = np.float64(train[i, j])
            acc += v * v
        norms[i] = acc if acc <= limit else np.nan
    return norms


@kernel
def squared_distance(x: np.ndarray, train: np.ndarray, i: int) -> float:
    """sum_j (x_j - train[i, j])² in float64, left to right: the exact kernel's reduced euclidean distance, bit for bit."""
    acc = 0.0
    for j in range(x.shape[0]):
        d = x[j] - train[i, j]
        acc += d * d
    return acc


@kernel
def screen_block(
    g: np.ndarray, xb: np.ndarray, train: np.ndarray, norms: np.ndarray, t0: int,
    base: np.ndarray, slope: np.ndarray, best_d: np.ndarray, best_i: np.ndarray,
) -> None:
    """Push into each query row's heap, in index order, the rows t0.. of this block whose lower bound L is below its root."""
    tw = g.shape[1]
    for q in range(g.shape[0]):
        a = base[q]
        w = slope[q]
        root = best_d[q, 0]
        # A branch-free count first (it vectorises); the ordered pass runs only where some row may enter.
        maybe = 0
        for i in range(tw):
            low = a + (w * norms[t0 + i] - 2.0 * np.float64(g[q, i]))
            maybe += 0 if low >= root else 1
        if maybe == 0:
            continue
        heap_d = best_d[q]
        heap_i = best_i[q]
        x = xb[q]
        for i in range(tw):
            low = a + (w * norms[t0 + i] - 2.0 * np.float64(g[q, i]))
            if not low >= heap_d[0]:
                heap_push(heap_d, heap_i, squared_distance(x, train, t0 + i), t0 + i)


@kernel
def prepare_query_block(
    X: np.ndarray, q0: int, m: int, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray, identity: bool,
    xb: np.ndarray, xg: np.ndarray, base: np.ndarray, slope: np.ndarray, best_d: np.ndarray, best_i: np.ndarray,
) -> None:
    """For query rows q0..q0+m: xb (float64, preprocessed), xg (xb in the product's precision), the bound's
    per-row base and slope (see the module's docstring), and empty heaps."""
    n = X.shape[1]
    info = np.finfo(xg.dtype)
    u_p = info.eps / 2.0
    eta_p = info.tiny * u_p  # half the smallest subnormal: the most an underflowing operation loses
    u = 2.0**-53
    rounds_query = u_p > u
    limit = NORM_LIMIT_FLOAT32 if rounds_query else NORM_LIMIT_FLOAT64
    kappa = 2.0 * (1.01 * _gamma(n, u) + 1.01 * _gamma(n, u_p) + 2.2 * _gamma(n + 3, u) + 32.0 * u)  # 2κ
    absolute = 2.0 * (8.0 * n * 2.0**-1074 + 4.0 * n * eta_p)  # 2a
    affine_rows(X, q0, m, shift, scale, offset, identity, xb)
    for q in range(m):
        exact_sq = 0.0
        rounded_sq = 0.0
        for j in range(n):
            v = xb[q, j]
            xg[q, j] = v
            w = np.float64(xg[q, j])
            exact_sq += v * v
            rounded_sq += w * w
        best_d[q, :] = DBL_MAX
        best_i[q, :] = 0
        if not rounded_sq <= limit:  # too large (or NaN): every training row is compared exactly
            base[q] = -np.inf
            slope[q] = 1.0
            continue
        eps_x = 0.0
        if rounds_query:
            eps_x = 1.01 * (u_p * np.sqrt(exact_sq) * 1.01 + np.sqrt(n) * eta_p)
        rho = np.sqrt(rounded_sq) if rounded_sq > 0.0 else 1.0
        base[q] = (1.0 - kappa) * rounded_sq - absolute - 2.0 * 3.03 * eps_x * rho
        slope[q] = 1.0 - kappa - 2.0 * 1.01 * eps_x / rho


@kernel
def finish_rows(best_d: np.ndarray, best_i: np.ndarray, m: int, q0: int, distances: np.ndarray, indices: np.ndarray) -> None:
    """Sort each heap as scikit-learn does and write rows q0..q0+m: distances (square roots) and indices."""
    for q in range(m):
        simultaneous_sort(best_d[q], best_i[q])
        for c in range(best_d.shape[1]):
            distances[q0 + q, c] = np.sqrt(best_d[q, c])
            indices[q0 + q, c] = best_i[q, c]


@kernel
def _screen_range(
    xb: np.ndarray, xg: np.ndarray, m: int, train: np.ndarray, norms: np.ndarray, a: int, b: int, block: int,
    g_buffer: np.ndarray, base: np.ndarray, slope: np.ndarray, heap_d: np.ndarray, heap_i: np.ndarray,
) -> None:
    """Push training rows a..b into the heaps of the m prepared query rows, one BLAS product per block of `block` rows."""
    for t0 in range(a, b, block):
        width = min(block, b - t0)
        g = g_buffer[: m * width].reshape(m, width)
        np.dot(xg[:m], train[t0 : t0 + width].T, g)
        screen_block(g, xb, train, norms, t0, base, slope, heap_d, heap_i)


@kernel
def _blocked_rows(
    X: np.ndarray, r0: int, r1: int, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, norms: np.ndarray, ranges: np.ndarray, distances: np.ndarray, indices: np.ndarray,
) -> None:
    """distances/indices[r] for r0 <= r < r1 (see `kneighbors_blocked`)."""
    n = X.shape[1]
    n_train, k = train.shape[0], indices.shape[1]
    identity = is_identity(shift, scale, offset)
    rows = min(QUERY_BLOCK, r1 - r0)
    # Fewer query rows, longer training blocks: G keeps about QUERY_BLOCK x TRAIN_BLOCK entries
    # and a single row makes few BLAS calls (blocks of 131,072 training rows).
    block = max(1, min(n_train, TRAIN_BLOCK * (QUERY_BLOCK // rows)))
    xb = np.empty((rows, n))
    xg = np.empty((rows, n), dtype=train.dtype)
    g_buffer = np.empty(rows * block, dtype=train.dtype)
    base, slope = np.empty(rows), np.empty(rows)
    best_d, best_i = np.empty((rows, k)), np.empty((rows, k), dtype=np.int64)
    part_d, part_i = np.empty((rows, k)), np.empty((rows, k), dtype=np.int64)
    for q0 in range(r0, r1, rows):
        m = min(rows, r1 - q0)
        prepare_query_block(X, q0, m, shift, scale, offset, identity, xb, xg, base, slope, best_d, best_i)
        if ranges.shape[0] == 0:
            _screen_range(xb, xg, m, train, norms, 0, n_train, block, g_buffer, base, slope, best_d, best_i)
        else:
            for t in range(ranges.shape[0] - 1):
                part_d[:m] = DBL_MAX
                part_i[:m] = -1
                _screen_range(xb, xg, m, train, norms, ranges[t], ranges[t + 1], block, g_buffer, base, slope, part_d, part_i)
                for q in range(m):
                    merge_heap(best_d[q], best_i[q], part_d[q], part_i[q])
        finish_rows(best_d, best_i, m, q0, distances, indices)


@parallel_kernel
def _blocked_tiles(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, norms: np.ndarray, ranges: np.ndarray, distances: np.ndarray, indices: np.ndarray,
) -> None:
    """`_blocked_rows` over tiles of PARALLEL_TILE_ROWS query rows spread over numba's threads."""
    n = X.shape[0]
    for t in prange((n + PARALLEL_TILE_ROWS - 1) // PARALLEL_TILE_ROWS):
        r0 = t * PARALLEL_TILE_ROWS
        _blocked_rows(X, r0, min(n, r0 + PARALLEL_TILE_ROWS), shift, scale, offset, train, norms, ranges, distances, indices)


def kneighbors_blocked(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, train_sq_norms: np.ndarray, distances: np.ndarray, indices: np.ndarray,
    parallel: bool = False, ranges: np.ndarray | None = None,
) -> None:
    """The k = indices.shape[1] nearest training rows (euclidean) of every row of (X - shift) * scale + offset.

    train: [n_train, n] float64 or float32, C-contiguous (its precision is the product's precision);
    train_sq_norms: train_squared_norms(train), computed once per model; distances [rows, k] float64 and
    indices [rows, k] int64 are written as `neighbors.argkmin(X, shift, scale, offset, train, 0, 2.0, ranges, ...)`
    writes them (ranges: `neighbors.argkmin_ranges`; None: one heap per row, as `neighbors.kneighbors`). parallel: query tiles over numba's threads (BLAS should then run 1 thread per caller thread).
    One numba call, which releases the GIL; the products run in the BLAS numba binds (SciPy's OpenBLAS).
    """
    n_query, n = X.shape
    n_train = train.shape[0]
    if train.dtype not in (np.float32, np.float64) or train.shape[1] != n or train_sq_norms.shape != (n_train,):
        raise ValueError(f"train must be float32 or float64 [n_train, {n}] with train_sq_norms [n_train], "
                         f"not {train.dtype} {train.shape} and {train_sq_norms.shape}")
    if n_query == 0 or n_train == 0:
        return
    bounds = np.empty(0, dtype=np.int64) if ranges is None else ranges
    if parallel:
        _blocked_tiles(X, shift, scale, offset, train, train_sq_norms, bounds, distances, indices)
    else:
        _blocked_rows(X, 0, n_query, shift, scale, offset, train, train_sq_norms, bounds, distances, indices)
