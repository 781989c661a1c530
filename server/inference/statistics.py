"""Per model-version inference statistics: Triton's ModelStatistics and the Prometheus metrics both read them.

The request path only appends one tuple per request (a tenth of a
microsecond, no lock); the tuples are added up in bulk with numpy every
FOLD_EVERY requests and whenever someone reads. Turning the sums into
protobuf or Prometheus text happens when someone asks, in whichever process asks.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tensorwire.protos import inference_pb2 as pb

LATENCY_BUCKETS_NS = (50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 100_000_000, 1_000_000_000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
FOLD_EVERY = 256  # successes recorded before they are added up (also whenever the statistics are read)


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def add_all(self, ns: np.ndarray) -> None:
        self.count += len(ns)
        self.ns += int(ns.sum())

    def to_proto(self) -> pb.StatisticDuration:
        return pb.StatisticDuration(count=self.count, ns=self.ns)


@dataclass
class Histogram:
    """Counts per bucket (non-cumulative; the last one is +Inf) and the sum of what was observed."""

    bounds: tuple[int, ...]
    counts: list[int] = field(default_factory=list)
    total: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe_all(self, values: np.ndarray) -> None:
        """Count each value in the first bucket whose bound is >= it (Prometheus' `le`)."""
        added = np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self.counts))
        self.counts = [count + int(more) for count, more in zip(self.counts, added)]
        self.total += int(values.sum())

    def snapshot(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.total}


@dataclass
class VersionStatistics:
    last_inference_ms: int = 0
    inference_count: int = 0  # rows scored
    execution_count: int = 0  # kernel calls
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    failures: Counter[str] = field(default_factory=Counter)  # by gRPC status name
    request_ns: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_NS))
    compute_ns: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_NS))
    batch_rows: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    # successes not yet added up: (rows, input_ns, infer_ns, output_ns, queue_ns, executed)
    _pending: deque[tuple[int, int, int, int, int, bool]] = field(default_factory=deque, repr=False)
    _last_success_ns: int = 0

    def record_success(self, rows: int, input_ns: int, infer_ns: int, output_ns: int, queue_ns: int = 0, executed: bool = True) -> None:
        """Called by any thread, lock-free: deque.append is atomic."""
        self._last_success_ns = time.time_ns()
        pending = self._pending
        pending.append((rows, input_ns, infer_ns, output_ns, queue_ns, executed))
        if len(pending) >= FOLD_EVERY:
            self.fold()

    def fold(self) -> None:
        """Add the pending successes to the sums (records appended meanwhile wait for the next fold)."""
        with self.lock:
            pending = self._pending
            records = [pending.popleft() for _ in range(len(pending))]
            if not records:
                return
            rows, input_ns, infer_ns, output_ns, queue_ns, executed = np.array(records, dtype=np.int64).T
            total_ns = input_ns + infer_ns + output_ns + queue_ns
            self.last_inference_ms = max(self.last_inference_ms, self._last_success_ns // 1_000_000)
            self.inference_count += int(rows.sum())
            self.execution_count += int(executed.sum())
            self.success.add_all(total_ns)
            self.queue.add_all(queue_ns)
            self.compute_input.add_all(input_ns)
            self.compute_infer.add_all(infer_ns)
            self.compute_output.add_all(output_ns)
            self.request_ns.observe_all(total_ns)
            self.compute_ns.observe_all(infer_ns)
            self.batch_rows.observe_all(rows)

    def record_failure(self, ns: int, outcome: str) -> None:
        with self.lock:
            self.last_inference_ms = time.time_ns() // 1_000_000
            self.fail.add(ns)
            self.failures[outcome] += 1

    def to_proto(self, name: str, version: str) -> pb.ModelStatistics:
        with self.lock:
            self.fold()
            return pb.ModelStatistics(
                name=name,
                version=version,
                last_inference=self.last_inference_ms,
                inference_count=self.inference_count,
                execution_count=self.execution_count,
                inference_stats=pb.InferStatistics(
                    success=self.success.to_proto(),
                    fail=self.fail.to_proto(),
                    queue=self.queue.to_proto(),
                    compute_input=self.compute_input.to_proto(),
                    compute_infer=self.compute_infer.to_proto(),
                    compute_output=self.compute_output.to_proto(),
                ),
            )

    def metrics_snapshot(self) -> dict[str, Any]:
        """Plain data for the metrics endpoint (it crosses the process boundary)."""
        with self.lock:
            self.fold()
            return {
                "outcomes": {"success": self.success.count, **self.failures},
                "rows": self.inference_count,
                "request_ns": self.request_ns.snapshot(),
                "compute_ns": self.compute_ns.snapshot(),
                "batch_rows": self.batch_rows.snapshot(),
            }


class StatisticsBook:
    """Statistics for every (model, version) that has been asked for."""

    def __init__(self) -> None:
        self._by_version: dict[tuple[str, str], VersionStatistics] = {}
        self._lock = threading.Lock()

    def of(self, name: str, version: str) -> VersionStatistics:
        stats = self._by_version.get((name, version))
        if stats is None:
            with self._lock:
                stats = self._by_version.setdefault((name, version), VersionStatistics())
        return stats

    def snapshot(self) -> dict[tuple[str, str], VersionStatistics]:
        with self._lock:
            return dict(self._by_version)


def merge_statistics(parts: list[pb.ModelStatisticsResponse]) -> pb.ModelStatisticsResponse:
    """One response summing the per-worker responses, model version by model version."""
    merged: dict[tuple[str, str], pb.ModelStatistics] = {}
    for part in parts:
        for stats in part.model_stats:
            key = (stats.name, stats.version)
            if key not in merged:
                merged[key] = pb.ModelStatistics()
                merged[key].CopyFrom(stats)
                continue
            total = merged[key]
            total.last_inference = max(total.last_inference, stats.last_inference)
            total.inference_count += stats.inference_count
            total.execution_count += stats.execution_count
            for name in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
                into, add = getattr(total.inference_stats, name), getattr(stats.inference_stats, name)
                into.count += add.count
                into.ns += add.ns
    return pb.ModelStatisticsResponse(model_stats=[merged[k] for k in sorted(merged)])
