"""Per model-version inference statistics: Triton's ModelStatistics and the Prometheus metrics both read them.

The request path only adds integers under a per-version lock (about a
microsecond); turning them into protobuf or Prometheus text happens when
someone asks, in whichever process asks.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tensorwire.protos import inference_pb2 as pb

LATENCY_BUCKETS_NS = (50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 100_000_000, 1_000_000_000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

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

    def observe(self, value: int) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

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
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_success(self, rows: int, input_ns: int, infer_ns: int, output_ns: int, queue_ns: int = 0, executed: bool = True) -> None:
        total_ns = input_ns + infer_ns + output_ns + queue_ns
        with self.lock:
            self.last_inference_ms = time.time_ns() // 1_000_000
            self.inference_count += rows
            self.execution_count += executed
            self.success.add(total_ns)
            self.queue.add(queue_ns)
            self.compute_input.add(input_ns)
            self.compute_infer.add(infer_ns)
            self.compute_output.add(output_ns)
            self.request_ns.observe(total_ns)
            self.compute_ns.observe(infer_ns)
            self.batch_rows.observe(rows)

    def record_failure(self, ns: int, outcome: str) -> None:
        with self.lock:
            self.last_inference_ms = time.time_ns() // 1_000_000
            self.fail.add(ns)
            self.failures[outcome] += 1

    def to_proto(self, name: str, version: str) -> pb.ModelStatistics:
        with self.lock:
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
