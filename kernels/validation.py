"""Input checks that must run at kernel speed on every request."""

from __future__ import annotations

import numpy as np

from tensorwire.kernels.config import kernel


@kernel
def first_nonfinite_row(X: np.ndarray) -> int:
    """Index of the first row of a 2-D array holding NaN or ±inf, or -1 when all are finite."""
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            if not np.isfinite(X[i, j]):
                return i
    return -1


FLOAT32_OVERFLOW = 2.0**128 - 2.0**103  # the smallest float64 magnitude that rounds to infinity as float32


@kernel
def first_refused_row(X: np.ndarray, allow_nan: bool, allow_inf: bool, float32_range: bool) -> int:
    """Index of the first row of a 2-D array holding a value a model refuses, or -1: NaN unless allow_nan, ±inf unless
    allow_inf, and with float32_range a finite value that rounds to infinity as float32."""
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            v = X[i, j]
            if np.isnan(v):
                if not allow_nan:
                    return i
            elif np.isinf(v):
                if not allow_inf:
                    return i
            elif float32_range and abs(v) >= FLOAT32_OVERFLOW:
                return i
    return -1
