"""A model version's live profile: the rows it scores counted into its reference bins, over a sliding window, and,
where the reference profile has one, the main output they got counted into its classes or score bins.

The request path makes one kernel call per request for the inputs, and one for the output (kernels/drift.py); an
output of string labels is first mapped to its class indexes (one dictionary lookup per row, in C). The output is
counted for the requests that get it (every request that names no outputs does). The window is kept in chunks of about
window_rows / CHUNKS rows (a chunk closes at the first request that fills it): the one filling, and as many full ones
as fit in the rest of the window, oldest dropped first; so it spans the last window_rows rows, give or take a
tenth of them and one request. Missing and out-of-range counts are also kept since load, for Prometheus counters. The metrics
endpoint reads `snapshot()`, plain data summed over workers and turned into PSI by server/process/metrics.py.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tensorwire.kernels.drift import count_bins, count_classes, count_scores, counts_start, table_width
from tensorwire.server.modeling.reference_profile import MAX_BINS, OutputProfile, ReferenceProfile

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
        self.output = None if profile.output is None else OutputCounter(profile.output)
        self.current_output = np.zeros(0) if self.output is None else self.output.empty()
        self.full_outputs: deque[np.ndarray] = deque()  # beside `full`, chunk for chunk
        self.retired_output_rows = 0
        self.lock = threading.Lock()  # taken to start a chunk and to read, never around the count
        self._warm_up(input_dtype)

    def output_index(self, names: Sequence[str]) -> int:
        """Where the main output is among a request's outputs, -1 where it is not or is not counted."""
        output = self.output
        if output is None:
            return -1
        try:
            return list(names).index(output.name)
        except ValueError:
            return -1

    def output_of(self, names: Sequence[str], results: Sequence[np.ndarray]) -> np.ndarray | None:
        """The main output among a request's results, None where the request did not ask for it (or it is not counted)."""
        output = self.output
        if output is None or output.name not in names:
            return None
        return results[list(names).index(output.name)]

    def count(self, X: np.ndarray, y: np.ndarray | None = None) -> None:
        """Count the rows of a scored request (the model's width), and the main output they got (`output_of`), if given."""
        count_bins(X, self.current)
        if y is not None and self.output is not None:
            self.output.count(y, self.current_output)
        self.current_rows += X.shape[0]
        if self.current_rows >= self.chunk_rows:
            self._next_chunk()

    def _next_chunk(self) -> None:
        with self.lock:
            if self.current_rows < self.chunk_rows:  # another thread started one meanwhile
                return
            full, self.current, self.current_rows = self.current, self.empty_table.copy(), 0
            self.full.append(full)
            self.full_outputs.append(self.current_output)
            self.current_output = np.zeros_like(self.current_output)
            self.full_rows += rows_of(full)
            while self.full_rows > self.window_rows - self.chunk_rows:
                oldest = self.full.popleft()
                self.full_rows -= rows_of(oldest)
                self.retired_rows += rows_of(oldest)
                self.retired += oldest[:, TOTALS]
                self.retired_output_rows += int(self.full_outputs.popleft().sum())

    def snapshot(self) -> dict[str, Any]:
        """Plain data for the metrics endpoint: the window's counts, the totals since load and the reference."""
        with self.lock:
            window = np.sum([table[:, COUNTS] for table in [*self.full, self.current]], axis=0)
            totals = self.retired + window[:, MAX_BINS:]
            window_rows = int(window[0, : MAX_BINS + 1].sum())  # every row counts once per feature: in a bin or missing
            rows = self.retired_rows + window_rows
            outputs = np.sum([*self.full_outputs, self.current_output], axis=0)
            output_rows = self.retired_output_rows + int(outputs.sum())
        profile = self.profile
        return {
            "features": list(profile.feature_names),
            "n_bins": profile.n_bins.tolist(),
            "reference": profile.fractions.tolist(),
            "window": window[:, : MAX_BINS + 1].astype(np.int64).tolist(),  # value bins, then missing
            "window_rows": window_rows,
            "totals": totals.astype(np.int64).tolist(),  # missing, below, above since load
            "rows": rows,
            "output": None if self.output is None else self.output.snapshot(outputs, output_rows),
        }

    def _warm_up(self, dtype: np.dtype) -> None:  # type: ignore[type-arg]
        """Compile the kernel for the arrays requests bring (read-only views, or arrays of typed contents), into scratch."""
        scratch = self.empty_table.copy()
        row = np.frombuffer(np.zeros(self.profile.n_features, dtype=dtype).tobytes(), dtype=dtype).reshape(1, -1)
        count_bins(row, scratch)
        count_bins(np.zeros((1, self.profile.n_features), dtype=dtype), scratch)
        if self.output is not None:
            self.output.warm_up()


OUTPUT_DTYPES: dict[str, np.dtype] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "INT64": np.dtype("<i8"), "BOOL": np.dtype("?")}  # type: ignore[type-arg]


class LabelIndex(dict[bytes, float]):
    """A string label (utf-8 bytes, as scorers return them) -> its class index; any other label -> the last bin."""

    def __init__(self, labels: Sequence[str]) -> None:
        super().__init__((str(label).encode("utf-8"), float(b)) for b, label in enumerate(labels))
        self.other = float(len(labels))

    def __missing__(self, key: bytes) -> float:
        return self.other


class OutputCounter:
    """The main output's counts, per chunk an array of its bins and one more: other labels (classes) or NaN (scores)."""

    def __init__(self, profile: OutputProfile) -> None:
        self.profile = profile
        self.name = profile.name
        self.n_bins = profile.n_bins
        self.labels: LabelIndex | None = None
        self.kernel: Callable[[np.ndarray, np.ndarray, np.ndarray], None]
        if profile.labels is None:
            self.kernel, self.keys = count_scores, np.ascontiguousarray(profile.edges[1 : profile.n_bins])  # the cuts
        elif profile.datatype == "BYTES":
            self.labels = LabelIndex([str(label) for label in profile.labels])
            self.kernel, self.keys = count_classes, np.arange(profile.n_bins, dtype=np.float64)
        else:
            self.kernel, self.keys = count_classes, profile.edges
        self.extra = "missing" if profile.labels is None else "other"
        self.reference = [*profile.reference.tolist(), float(profile.fractions[MAX_BINS]) if profile.labels is None else 0.0]

    def empty(self) -> np.ndarray:
        return np.zeros(self.n_bins + 1)

    def count(self, y: np.ndarray, counts: np.ndarray) -> None:
        if self.labels is not None:
            y = np.fromiter(map(self.labels.__getitem__, y), dtype=np.float64, count=len(y))
        self.kernel(y, self.keys, counts)

    def snapshot(self, counts: np.ndarray, rows: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "bins": [*self.profile.bin_names, self.extra],
            "reference": self.reference,
            "window": counts.astype(np.int64).tolist(),
            "window_rows": int(counts.sum()),
            "rows": rows,
        }

    def warm_up(self) -> None:
        """Compile the kernel for the arrays scorers return and the views the request plans read, into scratch."""
        scratch = self.empty()
        dtype = OUTPUT_DTYPES.get(self.profile.datatype)
        if dtype is None:  # BYTES: counted as class indexes
            self.count(np.array([b"?"], dtype=object), scratch)
            return
        self.kernel(np.zeros(1, dtype=dtype), self.keys, scratch)
        self.kernel(np.frombuffer(bytes(dtype.itemsize), dtype=dtype), self.keys, scratch)


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
