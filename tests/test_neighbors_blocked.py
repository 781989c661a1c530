"""The blocked euclidean search (kernels/neighbors_blocked.py) against the exact per-row kernel and scikit-learn.

Against the exact kernel the answer must be identical: indices, tie order and distances bit for bit, on
random data, exact duplicates, near-ties the product cannot resolve, data far from the origin (where the
norm expansion cancels), and rows too large for the bound. Against scikit-learn: indices identical,
distances within DESIGN.md's tolerances (brute on ties, kd_tree where there are none).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
from threadpoolctl import threadpool_limits

from tensorwire.kernels import neighbors
from tensorwire.kernels.neighbors_blocked import (
    NORM_LIMIT_FLOAT32,
    PARALLEL_TILE_ROWS,
    QUERY_BLOCK,
    TRAIN_BLOCK,
    kneighbors_blocked,
    train_squared_norms,
)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)


def _affine(n: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if rng is None:
        return np.zeros(n), np.ones(n), np.zeros(n)
    return rng.normal(size=n), rng.uniform(0.5, 2.0, size=n), rng.normal(size=n)


def _exact(Q, train, k, affine, ranges=None):
    d = np.empty((Q.shape[0], k))
    i = np.empty((Q.shape[0], k), dtype=np.int64)
    if ranges is None:
        neighbors.kneighbors(_readonly(Q), *affine, _readonly(train), 0, 2.0, d, i)
    else:
        neighbors.argkmin(_readonly(Q), *affine, _readonly(train), 0, 2.0, ranges, d, i)
    return d, i


def _blocked(Q, train, k, affine, parallel=False, ranges=None):
    d = np.empty((Q.shape[0], k))
    i = np.empty((Q.shape[0], k), dtype=np.int64)
    train = _readonly(train)
    kneighbors_blocked(_readonly(Q), *affine, train, train_squared_norms(train), d, i, parallel, ranges)
    return d, i


def _assert_identical(Q, train, k, affine=None, parallel=False, ranges=None):
    affine = affine or _affine(Q.shape[1])
    ref_d, ref_i = _exact(Q, train, k, affine, ranges)
    got_d, got_i = _blocked(Q, train, k, affine, parallel, ranges)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_array_equal(got_d, ref_d)  # bit for bit: the same float64 sums decide
    return got_d, got_i


@pytest.mark.parametrize("train_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("query_dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "n_train,n_features,n_query,k",
    [(1, 3, 1, 1), (9, 1, 5, 9), (300, 5, 7, 4), (TRAIN_BLOCK + 37, 32, QUERY_BLOCK + 3, 5), (2500, 17, 40, 15)],
)
def test_random_data_identical_to_exact_kernel(train_dtype, query_dtype, n_train, n_features, n_query, k):
    rng = np.random.default_rng(n_train + n_features)
    train = rng.normal(size=(n_train, n_features)).astype(train_dtype)
    Q = rng.normal(size=(n_query, n_features)).astype(query_dtype)
    _assert_identical(Q, train, k)
    _assert_identical(Q, train, k, _affine(n_features, rng))  # folded preprocessing (StandardScaler and the like)


@pytest.mark.parametrize("train_dtype", [np.float64, np.float32])
def test_duplicates_keep_the_exact_kernels_tie_order(train_dtype):
    """Many copies of each point, across training blocks: the heap, not the index, orders them; the blocked kernel must too."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, 3, size=(40, 3)).astype(np.float64)
    train = np.concatenate([base] * 30 + [base[::-1]] * 5).astype(train_dtype)  # 1,400 rows: two training blocks
    Q = np.concatenate([base, rng.integers(0, 3, size=(60, 3)) + 0.5, base[:4] + 1e-9])
    _, got_i = _assert_identical(Q, train, 7)
    assert any(list(row) != sorted(row) for row in got_i)  # guards the test: index order would not pass it


@pytest.mark.parametrize("train_dtype", [np.float64, np.float32])
def test_near_ties_below_the_products_resolution(train_dtype):
    """Training rows a few ulps apart around each query, and data far from the origin (|x|² ~ 1e12, spread 1e-3):
    the expansion cannot tell them apart, so the bound must send them all to the exact comparison."""
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(30, 8)).astype(train_dtype)
    ulps = rng.integers(-3, 4, size=(30, 40, 8)) * np.spacing(np.abs(centres))[:, None, :]
    train = (centres[:, None, :] + ulps).reshape(-1, 8).astype(train_dtype)
    _assert_identical(centres, train, 6)
    far = (1e5 + 1e-3 * rng.normal(size=(1500, 8))).astype(train_dtype)
    _assert_identical(1e5 + 1e-3 * rng.normal(size=(50, 8)), far, 5)


def test_huge_nan_and_infinite_rows_fall_to_the_exact_comparison():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(500, 4))
    train[10] = 1e200  # |y|² overflows float64
    train[11, 0] = np.inf
    train[12, 1] = np.nan
    Q = np.concatenate([rng.normal(size=(20, 4)), np.full((1, 4), 1e200), np.full((1, 4), 1e170), [[np.nan, 0, 0, 0]]])
    _assert_identical(Q, train, 5)
    assert np.isnan(train_squared_norms(_readonly(train))[[10, 11, 12]]).all()
    small = rng.normal(size=(300, 4)).astype(np.float32)
    small[7] = 2e15  # float32: beyond NORM_LIMIT_FLOAT32, where float32 products could overflow
    assert 4 * 2e15**2 > NORM_LIMIT_FLOAT32
    _assert_identical(np.concatenate([rng.normal(size=(9, 4)), np.full((1, 4), 2e15), np.full((1, 4), 1e39)]), small, 3)


def test_many_query_blocks_parallel_tiles_and_empty_batches():
    rng = np.random.default_rng(4)
    train = np.concatenate([rng.normal(size=(1500, 6))] * 2)
    Q = rng.normal(size=(2 * PARALLEL_TILE_ROWS + 5, 6))
    _assert_identical(Q, train, 5)
    _assert_identical(Q, train, 5, parallel=True)
    _assert_identical(np.empty((0, 6)), train, 5)


def test_mismatched_norms_are_refused():
    train = np.ones((10, 3))
    out = np.empty((1, 2)), np.empty((1, 2), dtype=np.int64)
    with pytest.raises(ValueError, match="train_sq_norms"):
        kneighbors_blocked(np.ones((1, 3)), *_affine(3), train, np.ones(9), *out)


@pytest.mark.parametrize("query_dtype", [np.float64, np.float32])
def test_matches_sklearn_brute_and_kd_tree(query_dtype):
    rng = np.random.default_rng(5)
    train = rng.normal(size=(3000, 32))
    Q = rng.normal(size=(200, 32)).astype(query_dtype)
    distances, indices = _blocked(Q, train, 5, _affine(32))
    rtol, atol = (1e-9, 1e-12) if query_dtype == np.float64 else (1e-5, 1e-6)
    for algorithm in ("brute", "kd_tree"):
        ref_d, ref_i = NearestNeighbors(n_neighbors=5, algorithm=algorithm).fit(train).kneighbors(Q.astype(np.float64))
        np.testing.assert_array_equal(indices, ref_i)
        np.testing.assert_allclose(distances, ref_d, rtol=rtol, atol=atol)


def test_duplicates_match_sklearn_brute():
    """scikit-learn's order of exact ties is its heap's when it splits the work over query rows (parallel_on_X, its
    choice for a batch over 4 x 256 rows per thread); for smaller batches it merges per-thread heaps and reorders ties."""
    rng = np.random.default_rng(6)
    base = rng.integers(0, 3, size=(20, 3)).astype(np.float64)
    train = np.concatenate([base, base[::-1], base[:5]] * 12)
    Q = np.concatenate([base, rng.integers(0, 3, size=(1100, 3)) + 0.5])
    distances, indices = _blocked(Q, train, 6, _affine(3))
    with threadpool_limits(1):
        ref_d, ref_i = NearestNeighbors(n_neighbors=6, algorithm="brute").fit(train).kneighbors(Q)
    np.testing.assert_array_equal(indices, ref_i)
    np.testing.assert_allclose(distances, ref_d, rtol=1e-9, atol=1e-12)
    assert any(list(row) != sorted(row) for row in indices)  # guards the test: index order would not pass it


@pytest.mark.parametrize("train_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [7, 16, 31, 64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_merged_range_heaps_identical_to_exact_kernel(train_dtype, k, threads):
    """Small batches: one heap per thread's range of training rows, merged (ArgKmin's parallel_on_Y), across training blocks."""
    rng = np.random.default_rng(k + threads)
    base = rng.integers(0, 3, size=(40, 3)).astype(np.float64)
    train = np.concatenate([base] * 30 + [base[::-1]] * 5).astype(train_dtype)  # 1,400 rows: 6 chunks, 2 training blocks
    for n_query in (1, 5, QUERY_BLOCK + 3):
        Q = np.concatenate([base, rng.integers(0, 3, size=(QUERY_BLOCK, 3)) + 0.5])[:n_query]
        ranges = neighbors.argkmin_ranges(n_query, train.shape[0], threads)
        assert ranges.shape[0] == min(threads, 6) + 1
        _assert_identical(Q, train, k, ranges=ranges)
    _assert_identical(Q, train, k, parallel=True, ranges=ranges)


@pytest.mark.parametrize("k", [5, 16, 20, 31])
@pytest.mark.parametrize("threads", [1, 2])
def test_small_batches_match_sklearn_brute_tie_order(k, threads):
    """Duplicates at batch 1 and 7 (scikit-learn merges per-thread heaps there): the same indices as its kneighbors."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 3, size=(20, 3)).astype(np.float64)
    train = np.concatenate([base, base[::-1], base[:5]] * 24)  # 1,080 rows: 5 chunks of 256
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(train)
    for Q in (base[:1], np.concatenate([base[:4], rng.integers(0, 3, size=(3, 3)) + 0.5])):
        with threadpool_limits(threads, user_api="openmp"):
            ref_d, ref_i = nn.kneighbors(Q)
            effective = _openmp_effective_n_threads()
        distances, indices = _blocked(Q, train, k, _affine(3), ranges=neighbors.argkmin_ranges(Q.shape[0], train.shape[0], effective))
        np.testing.assert_array_equal(indices, ref_i)
        np.testing.assert_allclose(distances, ref_d, rtol=1e-9, atol=1e-12)
