"""A model version's live input profile: the rows it scores counted into its reference bins, over a sliding window.

The request path makes one kernel call per request (kernels/drift.py). The window is kept in chunks of about
window_rows / CHUNKS rows (a chunk closes at the first request that fills it): the one filling, and as many full ones
as fit in the rest of the window, oldest dropped first; so it spans the last window_rows rows, give or take a
tenth of them and one request. Missing and out-of-range counts are also kept since load, for Prometheus counters. The metrics
endpoint reads `snapshot()`, plain data summed over workers and turned into PSI by server/process/metrics.py.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np

from tensorwire.kernels.drift import count_bins, counts_start, table_width
from tensorwire.server.modeling.reference_profile import MAX_BINS, ReferenceProfile

CHUNKS = 10
COUNTS = slice(counts_start(MAX_BINS), table_width(MAX_BINS))  # a counting table's counts: bins, missing, below, above
TOTALS = slice(counts_start(MAX_BINS) + MAX_BINS, table_width(MAX_BINS))  # missing, below, above


class DriftMonitor:
    def __init__(self, profile: ReferenceProfile, window_rows: int, input_dtype: np.dtype) -> None:  # type: ignore[type-arg]
        self.profile = profile
        self.window_rows = window_rows
        self.chunk_rows = max(1, window_rows // CHUNKS)
        self.empty_table = counting_table(profile)
        self.current = self.empty_table.copy()
        self.current_rows = 0  # decides when the chunk is full; the table's own counts are the exact figures
        self.full: deque[np.ndarray] = deque()
        self.full_rows = 0
        self.retired = np.zeros((profile.n_features, 3))  # missing, below, above of chunks out of the window
        self.retired_rows = 0
        self.lock = threading.Lock()  # taken to start a chunk and to read, never around the count
        self._warm_up(input_dtype)

    def count(self, X: np.ndarray) -> None:
        """Count the rows of a scored request (the model's width)."""
        count_bins(X, self.current)
        self.current_rows += X.shape[0]
        if self.current_rows >= self.chunk_rows:
            self._next_chunk()

    def _next_chunk(self) -> None:
        with self.lock:
            if self.current_rows < self.chunk_rows:  # another thread started one meanwhile
                return
            full, self.current, self.current_rows = self.current, self.empty_table.copy(), 0
            self.full.append(full)
            self.full_rows += rows_of(full)
            while self.full_rows > self.window_rows - self.chunk_rows:
                oldest = self.full.popleft()
                self.full_rows -= rows_of(oldest)
                self.retired_rows += rows_of(oldest)
                self.retired += oldest[:, TOTALS]

    def snapshot(self) -> dict[str, Any]:
        """Plain data for the metrics endpoint: the window's counts, the totals since load and the reference."""
        with self.lock:
            window = np.sum([table[:, COUNTS] for table in [*self.full, self.current]], axis=0)
            totals = self.retired + window[:, MAX_BINS:]
            window_rows = int(window[0, : MAX_BINS + 1].sum())  # every row counts once per feature: in a bin or missing
            rows = self.retired_rows + window_rows
        profile = self.profile
        return {
            "features": list(profile.feature_names),
            "n_bins": profile.n_bins.tolist(),
            "reference": profile.fractions.tolist(),
            "window": window[:, : MAX_BINS + 1].astype(np.int64).tolist(),  # value bins, then missing
            "window_rows": window_rows,
            "totals": totals.astype(np.int64).tolist(),  # missing, below, above since load
            "rows": rows,
        }

    def _warm_up(self, dtype: np.dtype) -> None:  # type: ignore[type-arg]
        """Compile the kernel for the arrays requests bring (read-only views, or arrays of typed contents), into scratch."""
        scratch = self.empty_table.copy()
        row = np.frombuffer(np.zeros(self.profile.n_features, dtype=dtype).tobytes(), dtype=dtype).reshape(1, -1)
        count_bins(row, scratch)
        count_bins(np.zeros((1, self.profile.n_features), dtype=dtype), scratch)


def counting_table(profile: ReferenceProfile) -> np.ndarray:
    """An empty counting table (kernels/drift.py) holding the profile's bins."""
    table = np.zeros((profile.n_features, table_width(MAX_BINS)))
    table[:, : MAX_BINS - 1] = np.inf
    for j, n in enumerate(profile.n_bins):
        table[j, : n - 1] = profile.edges[j, 1:n]
        table[j, MAX_BINS - 1] = profile.edges[j, 0]
        table[j, MAX_BINS] = profile.edges[j, n]
    return table


def rows_of(table: np.ndarray) -> int:
    """The rows a counting table holds: each is counted once per feature, in a bin or as missing."""
    return int(table[0, COUNTS][: MAX_BINS + 1].sum())
