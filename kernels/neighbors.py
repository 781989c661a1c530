"""Exact brute-force nearest neighbours (KNeighbors*, RadiusNeighbors*, NearestNeighbors, DBSCAN assignment).

Distances are exact differences (not the norm expansion), so equal distances stay
equal; exact ties are kept and ordered as scikit-learn's brute-force ArgKmin orders them
(metrics/_pairwise_distances_reduction/_argkmin.pyx.tp, _base.pyx.tp): its max-heap push
(utils/_heap.pyx), over the training rows in index order (strategy parallel_on_X) or over
one contiguous range of 256-row chunks per OpenMP thread whose heaps are then pushed into one
(parallel_on_Y, which it picks when the batch is smaller than the training set and than 1,024
rows per thread; `argkmin_ranges` says which), then its simultaneous_sort (utils/_sorting.pyx:
an introsort, quicksort with median-of-three pivots down to 15 items, insertion sort below,
heapsort past the depth limit; not stable, so for k > 15 ties come out in its own order).
Cosine is not one of ArgKmin's metrics: scikit-learn computes the whole distance
row (1 - the dot product of the l2-normalised rows, clipped to [0, 2]) and picks the
k smallest with numpy's argpartition then argsort; `cosine_kneighbors` does the same,
so its ties come out in scikit-learn's order.
Metric codes: 0 euclidean, 1 manhattan, 2 chebyshev, 3 minkowski (power p), 4 cosine.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from tensorwire.kernels.config import kernel, parallel_kernel
from tensorwire.kernels.decomposition import PARALLEL_TILE_ROWS, affine_rows, is_identity

METRICS = {"euclidean": 0, "manhattan": 1, "chebyshev": 2, "minkowski": 3, "cosine": 4}
COSINE = METRICS["cosine"]
# scikit-learn's other names for the served metrics (DistanceMetric's and scipy's spellings).
METRIC_ALIASES = {"l2": "euclidean", "l1": "manhattan", "cityblock": "manhattan", "infinity": "chebyshev", "p": "minkowski"}
# scikit-learn's _handle_zeros_in_scale: a row norm below this counts as zero and divides by 1 instead.
ZERO_NORM = 10 * float(np.finfo(np.float64).eps)
COSINE_CHUNK_DOUBLES = 1 << 22  # a block of cosine distance rows stays within 32 MiB
DBL_MAX = float(np.finfo(np.float64).max)  # ArgKmin's empty heap slot (not inf: an infinite distance never enters)
ARGKMIN_CHUNK = 256  # scikit-learn's pairwise_dist_chunk_size default: the training rows per chunk of ArgKmin
SORT_SMALL = 15  # simultaneous_sort insertion-sorts ranges of at most this many items


def argkmin_ranges(n_query: int, n_train: int, threads: int, chunk: int = ARGKMIN_CHUNK) -> np.ndarray:
    """Bounds of the training-row ranges whose heaps scikit-learn's ArgKmin merges for a batch of n_query rows.

    Empty when it fills one heap per query row in index order (parallel_on_X: n_train < n_query, or
    n_query > 4 * chunk * threads); otherwise (parallel_on_Y) the training set in chunks of `chunk` rows,
    split by OpenMP's static schedule (GNU libgomp's: the first chunks % t threads take one chunk more) over
    t = min(chunks, threads) threads, whose heaps are pushed into the row's heap in thread order.
    threads: scikit-learn's _openmp_effective_n_threads() where the reference runs.
    """
    if n_train < n_query or 4 * chunk * threads < n_query or n_train == 0:
        return np.empty(0, dtype=np.int64)
    size = min(n_train, chunk)
    n_chunks = -(-n_train // size)
    t = min(n_chunks, max(1, threads))
    q, r = divmod(n_chunks, t)
    return np.array([min(n_train, (i * q + min(i, r)) * size) for i in range(t + 1)], dtype=np.int64)


def served_metric(metric: str, p: float) -> str | None:
    """The METRICS name of scikit-learn's `metric` with minkowski power `p`, or None when it is not served."""
    name = METRIC_ALIASES.get(metric, metric)
    if name == "minkowski":
        if not (p >= 1 and np.isfinite(p)):
            return None
        name = {1.0: "manhattan", 2.0: "euclidean"}.get(p, "minkowski")
    return name if name in METRICS else None


def served_metric_or_refusal(metric: object, params: dict[str, object], p: float, where: str) -> tuple[str, float]:
    """(METRICS name, p) of a fitted estimator's metric, its params without p; ValueError naming what is not served."""
    served = sorted(METRICS)
    if params or not isinstance(metric, str):
        raise ValueError(f"tensorwire cannot export {where}: metric {metric!r} with metric_params {params} (serves {served}, without metric_params)")
    name = served_metric(metric, p)
    if name is None:
        problem = f"minkowski p={p}" if METRIC_ALIASES.get(metric, metric) == "minkowski" else f"metric {metric!r}"
        raise ValueError(f"tensorwire cannot export {where}: {problem} (serves {served}; minkowski with a finite p >= 1)")
    return name, p


def reduced_radius(metric: int, p: float, radius: float) -> float:
    """A radius in the kernels' reduced distance (squared for euclidean, p-th power for minkowski), as scikit-learn compares it."""
    if metric == 0:
        return radius * radius
    if metric == 3:
        return float(radius**p)
    return radius


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
def _distance(reduced: float, metric: int, p: float) -> float:
    """The distance from the metric's reduced distance."""
    if metric == 0:
        return np.sqrt(reduced)
    if metric == 3:
        return reduced ** (1.0 / p)
    return reduced


@kernel
def row_norms(rows: np.ndarray, out: np.ndarray) -> None:
    """out[i] = |rows[i]|_2, or 1 where that is below ZERO_NORM (the divisor scikit-learn's normalize uses)."""
    for i in range(rows.shape[0]):
        acc = 0.0
        for j in range(rows.shape[1]):
            acc += rows[i, j] * rows[i, j]
        norm = np.sqrt(acc)
        out[i] = 1.0 if norm < ZERO_NORM else norm


@kernel
def _normalize(x: np.ndarray) -> None:
    """x /= |x|_2 in place, as scikit-learn's normalize (a norm below ZERO_NORM leaves x as it is)."""
    acc = 0.0
    for j in range(x.shape[0]):
        acc += x[j] * x[j]
    norm = np.sqrt(acc)
    if norm >= ZERO_NORM:
        for j in range(x.shape[0]):
            x[j] /= norm


@kernel
def _cosine_distance(xn: np.ndarray, train: np.ndarray, norms: np.ndarray, i: int) -> float:
    """1 - <xn, train[i] / norms[i]> clipped to [0, 2], for a normalised xn (scikit-learn's cosine_distances)."""
    dot = 0.0
    for j in range(xn.shape[0]):
        dot += xn[j] * train[i, j]
    d = 1.0 - dot / norms[i]
    return min(max(d, 0.0), 2.0)


@kernel
def heap_push(values: np.ndarray, indices: np.ndarray, val: float, idx: int) -> None:
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
def merge_heap(values: np.ndarray, indices: np.ndarray, part_values: np.ndarray, part_indices: np.ndarray) -> None:
    """Push a range's heap into the row's heap, slot by slot, as ArgKmin's _parallel_on_Y_synchronize does."""
    for c in range(part_values.shape[0]):
        heap_push(values, indices, part_values[c], part_indices[c])


@kernel
def _swap(values: np.ndarray, indices: np.ndarray, i: int, j: int) -> None:
    """Exchange items i and j of values and indices."""
    v = values[i]
    values[i] = values[j]
    values[j] = v
    t = indices[i]
    indices[i] = indices[j]
    indices[j] = t


@kernel
def _insertion_sort(values: np.ndarray, indices: np.ndarray, a: int, n: int) -> None:
    """Insertion sort of items a..a+n (_sorting.pyx's insertion_sort: stable on the order it is given)."""
    for i in range(a + 1, a + n):
        v = values[i]
        t = indices[i]
        j = i
        while j > a and values[j - 1] > v:
            values[j] = values[j - 1]
            indices[j] = indices[j - 1]
            j -= 1
        values[j] = v
        indices[j] = t


@kernel
def _sift_down(values: np.ndarray, indices: np.ndarray, a: int, start: int, end: int) -> None:
    """_sorting.pyx's sift_down on items a..a+end: move the largest of start's subtree up to start."""
    root = start
    while True:
        child = root * 2 + 1
        largest = root
        if child < end and values[a + largest] < values[a + child]:
            largest = child
        if child + 1 < end and values[a + largest] < values[a + child + 1]:
            largest = child + 1
        if largest == root:
            break
        _swap(values, indices, a + root, a + largest)
        root = largest


@kernel
def _heapsort(values: np.ndarray, indices: np.ndarray, a: int, n: int) -> None:
    """_sorting.pyx's heapsort of items a..a+n (the introsort's fallback past its depth limit)."""
    start = (n - 2) // 2
    while True:
        _sift_down(values, indices, a, start, n)
        if start == 0:
            break
        start -= 1
    end = n - 1
    while end > 0:
        _swap(values, indices, a, a + end)
        _sift_down(values, indices, a, 0, end)
        end -= 1


@kernel
def _median3_pivot(values: np.ndarray, indices: np.ndarray, a: int, n: int) -> float:
    """_sorting.pyx's inplace_median3 on items a..a+n: smallest of first, middle, last to the front, median to the end."""
    mid = a + n // 2
    last = a + n - 1
    if values[a] > values[last]:
        _swap(values, indices, a, last)
    if values[last] > values[mid]:
        _swap(values, indices, last, mid)
        if values[a] > values[last]:
            _swap(values, indices, a, last)
    return values[last]


@kernel
def simultaneous_sort(values: np.ndarray, indices: np.ndarray) -> None:
    """scikit-learn's simultaneous_sort (utils/_sorting.pyx, 2-way introsort), item for item, so ties land where its do.

    Quicksort with median-of-three pivots on ranges over SORT_SMALL items, heapsort once 2 * floor(log2 n)
    levels are used up, insertion sort on small ranges. Its recursion on the left part becomes a stack
    here; the parts are disjoint, so the order they are sorted in changes nothing.
    """
    n = values.shape[0]
    if n <= SORT_SMALL:
        _insertion_sort(values, indices, 0, n)
        return
    depth = 2 * int(np.log2(n))
    # Each pending range has a smaller depth budget than the one below it: depth + 1 entries suffice.
    stack = np.empty((depth + 2, 3), dtype=np.int64)
    stack[0, 0], stack[0, 1], stack[0, 2] = 0, n, depth
    top = 1
    while top > 0:
        top -= 1
        a, m, d = stack[top, 0], stack[top, 1], stack[top, 2]
        heap_sorted = False
        while m > SORT_SMALL:
            if d <= 0:
                _heapsort(values, indices, a, m)
                heap_sorted = True
                break
            d -= 1
            pivot = _median3_pivot(values, indices, a, m)
            i = 1
            j = m - 2
            while True:
                while i <= j and values[a + i] < pivot:
                    i += 1
                while i <= j and values[a + j] > pivot:
                    j -= 1
                if i >= j:
                    break
                _swap(values, indices, a + i, a + j)
                i += 1
                j -= 1
            _swap(values, indices, a + i, a + m - 1)
            stack[top, 0], stack[top, 1], stack[top, 2] = a, i, d
            top += 1
            a += i + 1
            m -= i + 1
        if not heap_sorted:
            _insertion_sort(values, indices, a, m)


@kernel
def argkmin_row(
    x: np.ndarray, train: np.ndarray, metric: int, p: float, ranges: np.ndarray,
    best_d: np.ndarray, best_i: np.ndarray, part_d: np.ndarray, part_i: np.ndarray,
) -> None:
    """best_d/best_i = the k (= best_d.shape[0]) smallest reduced distances from x to train's rows and their rows, sorted,
    in ArgKmin's order (ranges: `argkmin_ranges`; part_d/part_i: scratch heaps of the same size)."""
    best_d[:] = DBL_MAX
    best_i[:] = 0
    if ranges.shape[0] == 0:
        for i in range(train.shape[0]):
            heap_push(best_d, best_i, _reduced(x, train, i, metric, p), i)
    else:
        for t in range(ranges.shape[0] - 1):
            part_d[:] = DBL_MAX
            part_i[:] = -1
            for i in range(ranges[t], ranges[t + 1]):
                heap_push(part_d, part_i, _reduced(x, train, i, metric, p), i)
            merge_heap(best_d, best_i, part_d, part_i)
    simultaneous_sort(best_d, best_i)


@kernel
def _kneighbors_rows(
    X: np.ndarray, r0: int, r1: int, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, metric: int, p: float, ranges: np.ndarray, distances: np.ndarray, indices: np.ndarray,
) -> None:
    """distances/indices[r] = the k nearest rows of `train` to x'_r, nearest first, ties in ArgKmin's order (metrics 0 to 3)."""
    k = indices.shape[1]
    xb = np.empty((1, X.shape[1]))
    identity = is_identity(shift, scale, offset)
    best_d = np.empty(k)
    best_i = np.empty(k, dtype=np.int64)
    part_d = np.empty(k)
    part_i = np.empty(k, dtype=np.int64)
    for r in range(r0, r1):
        affine_rows(X, r, 1, shift, scale, offset, identity, xb)
        argkmin_row(xb[0], train, metric, p, ranges, best_d, best_i, part_d, part_i)
        for c in range(k):
            distances[r, c] = _distance(best_d[c], metric, p)
            indices[r, c] = best_i[c]


@kernel
def argkmin(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, metric: int, p: float, ranges: np.ndarray, distances: np.ndarray, indices: np.ndarray,
) -> None:
    """The k = indices.shape[1] nearest training rows of every row of X, as ArgKmin over `ranges` (see `argkmin_ranges`)."""
    _kneighbors_rows(X, 0, X.shape[0], shift, scale, offset, train, metric, p, ranges, distances, indices)


@parallel_kernel
def argkmin_parallel(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, metric: int, p: float, ranges: np.ndarray, distances: np.ndarray, indices: np.ndarray,
) -> None:
    """`argkmin` with row tiles spread over numba's threads."""
    n = X.shape[0]
    for t in prange((n + PARALLEL_TILE_ROWS - 1) // PARALLEL_TILE_ROWS):
        r0 = t * PARALLEL_TILE_ROWS
        _kneighbors_rows(X, r0, min(n, r0 + PARALLEL_TILE_ROWS), shift, scale, offset, train, metric, p, ranges, distances, indices)


@kernel
def kneighbors(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, metric: int, p: float, distances: np.ndarray, indices: np.ndarray,
) -> None:
    """`argkmin` with one heap per row over the training rows in index order (ArgKmin's parallel_on_X order)."""
    _kneighbors_rows(X, 0, X.shape[0], shift, scale, offset, train, metric, p, np.empty(0, dtype=np.int64), distances, indices)


@parallel_kernel
def kneighbors_parallel(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, metric: int, p: float, distances: np.ndarray, indices: np.ndarray,
) -> None:
    """`kneighbors` with row tiles spread over numba's threads."""
    n = X.shape[0]
    ranges = np.empty(0, dtype=np.int64)
    for t in prange((n + PARALLEL_TILE_ROWS - 1) // PARALLEL_TILE_ROWS):
        r0 = t * PARALLEL_TILE_ROWS
        _kneighbors_rows(X, r0, min(n, r0 + PARALLEL_TILE_ROWS), shift, scale, offset, train, metric, p, ranges, distances, indices)


@kernel
def _cosine_rows(
    X: np.ndarray, r0: int, r1: int, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, norms: np.ndarray, out: np.ndarray,
) -> None:
    """out[r - r0, i] = the cosine distance from x'_r to train[i], for r0 <= r < r1 (norms: `row_norms` of train)."""
    xb = np.empty((1, X.shape[1]))
    identity = is_identity(shift, scale, offset)
    for r in range(r0, r1):
        affine_rows(X, r, 1, shift, scale, offset, identity, xb)
        x = xb[0]
        _normalize(x)
        for i in range(train.shape[0]):
            out[r - r0, i] = _cosine_distance(x, train, norms, i)


@kernel
def cosine_distances(
    X: np.ndarray, r0: int, r1: int, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, norms: np.ndarray, out: np.ndarray,
) -> None:
    """The cosine distance rows of X[r0:r1] to every training row (see `_cosine_rows`)."""
    _cosine_rows(X, r0, r1, shift, scale, offset, train, norms, out)


@parallel_kernel
def cosine_distances_parallel(
    X: np.ndarray, r0: int, r1: int, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, norms: np.ndarray, out: np.ndarray,
) -> None:
    """`cosine_distances` with row tiles spread over numba's threads."""
    n = r1 - r0
    for t in prange((n + PARALLEL_TILE_ROWS - 1) // PARALLEL_TILE_ROWS):
        a = r0 + t * PARALLEL_TILE_ROWS
        b = min(r1, a + PARALLEL_TILE_ROWS)
        _cosine_rows(X, a, b, shift, scale, offset, train, norms, out[a - r0 : b - r0])


def cosine_kneighbors(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, norms: np.ndarray, distances: np.ndarray, indices: np.ndarray, parallel: bool,
) -> None:
    """The k = indices.shape[1] nearest training rows by cosine distance, picked as scikit-learn's brute force picks them.

    scikit-learn's _kneighbors_reduce_func: argpartition of each distance row at k - 1, then a
    (default-kind) argsort of the k picked; the same numpy calls on the same distances give the same
    order of exact ties. Rows are taken in blocks of at most COSINE_CHUNK_DOUBLES distances.
    """
    n_train, k = train.shape[0], indices.shape[1]
    block = max(1, COSINE_CHUNK_DOUBLES // max(1, n_train))
    fill = cosine_distances_parallel if parallel else cosine_distances
    buffer = np.empty((min(block, X.shape[0]), n_train))
    for r0 in range(0, X.shape[0], block):
        r1 = min(X.shape[0], r0 + block)
        D = buffer[: r1 - r0]
        fill(X, r0, r1, shift, scale, offset, train, norms, D)
        rows = np.arange(r1 - r0)[:, None]
        picked = np.argpartition(D, k - 1, axis=1)[:, :k]
        picked = picked[rows, np.argsort(D[rows, picked])]
        indices[r0:r1] = picked
        distances[r0:r1] = D[rows, picked]


@kernel
def _radius_rows(
    X: np.ndarray, r0: int, r1: int, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, norms: np.ndarray, metric: int, p: float, radius: float, by_distance: bool,
    codes: np.ndarray, targets: np.ndarray, counts: np.ndarray, sums: np.ndarray, totals: np.ndarray,
) -> None:
    """Weighted sums over the training rows within `radius` (reduced, see `reduced_radius`; <=, as scikit-learn) of x'_r.

    counts[r]: how many; totals[r]: their summed weight; sums[r, c]: the weight of those of class
    code c (when `codes` is not empty), else the weighted sum of their `targets` rows. Weights are 1,
    or (by_distance) 1 / d, where the rows at distance 0, if any, weigh 1 each and the others 0.
    """
    m = sums.shape[1]
    classify = codes.shape[0] > 0
    xb = np.empty((1, X.shape[1]))
    identity = is_identity(shift, scale, offset)
    at_zero = np.empty(m)
    for r in range(r0, r1):
        affine_rows(X, r, 1, shift, scale, offset, identity, xb)
        x = xb[0]
        if metric == COSINE:
            _normalize(x)
        sums[r, :] = 0.0
        at_zero[:] = 0.0
        count = 0
        n_zero = 0
        total = 0.0
        for i in range(train.shape[0]):
            rd = _cosine_distance(x, train, norms, i) if metric == COSINE else _reduced(x, train, i, metric, p)
            if not rd <= radius:
                continue
            count += 1
            w = 1.0
            if by_distance:
                d = _distance(rd, metric, p)
                if d == 0.0:
                    n_zero += 1
                    if classify:
                        at_zero[codes[i]] += 1.0
                    else:
                        for c in range(m):
                            at_zero[c] += targets[i, c]
                    continue
                w = 1.0 / d
            total += w
            if classify:
                sums[r, codes[i]] += w
            else:
                for c in range(m):
                    sums[r, c] += w * targets[i, c]
        if n_zero > 0:
            sums[r, :] = at_zero
            total = float(n_zero)
        counts[r] = count
        totals[r] = total


@kernel
def radius_sums(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, norms: np.ndarray, metric: int, p: float, radius: float, by_distance: bool,
    codes: np.ndarray, targets: np.ndarray, counts: np.ndarray, sums: np.ndarray, totals: np.ndarray,
) -> None:
    """The radius neighbourhood's counts, weighted sums and total weights for every row of X (see `_radius_rows`)."""
    _radius_rows(X, 0, X.shape[0], shift, scale, offset, train, norms, metric, p, radius, by_distance, codes, targets, counts, sums, totals)


@parallel_kernel
def radius_sums_parallel(
    X: np.ndarray, shift: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    train: np.ndarray, norms: np.ndarray, metric: int, p: float, radius: float, by_distance: bool,
    codes: np.ndarray, targets: np.ndarray, counts: np.ndarray, sums: np.ndarray, totals: np.ndarray,
) -> None:
    """`radius_sums` with row tiles spread over numba's threads."""
    n = X.shape[0]
    for t in prange((n + PARALLEL_TILE_ROWS - 1) // PARALLEL_TILE_ROWS):
        r0 = t * PARALLEL_TILE_ROWS
        _radius_rows(
            X, r0, min(n, r0 + PARALLEL_TILE_ROWS), shift, scale, offset, train, norms, metric, p, radius, by_distance,
            codes, targets, counts, sums, totals,
        )
