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
