"""Drift counting: each row's features counted into their reference bins, in one pass over a request, and its main
output into its classes or score bins (count_classes, count_scores).

A counting table holds, for each feature j, its bin definition and its counts, so that a request costs one
call with two arguments (a numba call pays for each array it is given). Row j of a table for n bins:

    columns 0 .. n-2          the cuts between bins, ascending (+inf where the feature has fewer bins)
    column  n-1, n            the reference minimum and maximum
    columns n+1 .. 2n         the rows counted in each bin: bin b holds values in (cut[b-1], cut[b]]
    column  2n+1, 2n+2, 2n+3  the rows where the feature is missing (NaN), below the minimum, above the maximum

Counts are float64, exact up to 2**53 rows.
"""

from __future__ import annotations

import numpy as np

from tensorwire.kernels.config import request_kernel


def table_width(n_bins: int) -> int:
    """Columns of a counting table for n_bins bins."""
    return 2 * n_bins + 4


def counts_start(n_bins: int) -> int:
    """The first count column of a counting table for n_bins bins (bin 0; then missing, below, above follow the bins)."""
    return n_bins + 1


@request_kernel  # keeps the GIL: the table is updated whole, with no lock, by whichever thread scores
def count_bins(X: np.ndarray, table: np.ndarray) -> None:
    """Add the rows of X into the counting table (see the module docstring)."""
    n_bins = (table.shape[1] - 4) // 2
    n_cuts = n_bins - 1
    start = n_bins + 1
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            v = np.float64(X[i, j])
            if np.isnan(v):
                table[j, start + n_bins] += 1.0
                continue
            b = 0
            while b < n_cuts and v > table[j, b]:
                b += 1
            table[j, start + b] += 1.0
            if v < table[j, n_cuts]:
                table[j, start + n_bins + 1] += 1.0
            elif v > table[j, n_cuts + 1]:
                table[j, start + n_bins + 2] += 1.0


@request_kernel
def count_classes(y: np.ndarray, classes: np.ndarray, counts: np.ndarray) -> None:
    """counts[b] += 1 for each value of y equal to classes[b] (ascending, found by bisection); counts[len(classes)]
    for any other value."""
    k = classes.shape[0]
    for i in range(y.shape[0]):
        v = np.float64(y[i])
        lo, hi = 0, k
        while lo < hi:
            mid = (lo + hi) // 2
            if classes[mid] < v:
                lo = mid + 1
            else:
                hi = mid
        if lo < k and classes[lo] == v:
            counts[lo] += 1.0
        else:
            counts[k] += 1.0


@request_kernel
def count_scores(y: np.ndarray, cuts: np.ndarray, counts: np.ndarray) -> None:
    """counts[b] += 1 for each value of y in bin b, (cuts[b - 1], cuts[b]] (bin 0 up to cuts[0], the last above the
    last cut); counts[len(cuts) + 1] for NaN."""
    n_cuts = cuts.shape[0]
    for i in range(y.shape[0]):
        v = np.float64(y[i])
        if np.isnan(v):
            counts[n_cuts + 1] += 1.0
            continue
        b = 0
        while b < n_cuts and v > cuts[b]:
            b += 1
        counts[b] += 1.0
