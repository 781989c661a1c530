"""Per model-version inference statistics, in the shape of Triton's ModelStatistics, mirrored to Prometheus."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from tensorwire.protos import inference_pb2 as pb
from tensorwire.server.metrics import ModelMetrics


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
class VersionStatistics:
    last_inference_ms: int = 0
    inference_count: int = 0  # rows scored
    execution_count: int = 0  # kernel calls
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    metrics: ModelMetrics | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_success(self, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        if self.metrics is not None:
            self.metrics.record_success(rows, (input_ns + infer_ns + output_ns) * 1e-9, infer_ns * 1e-9)
        with self.lock:
            self.last_inference_ms = time.time_ns() // 1_000_000
            self.inference_count += rows
            self.execution_count += 1
            self.success.add(input_ns + infer_ns + output_ns)
            self.compute_input.add(input_ns)
            self.compute_infer.add(infer_ns)
            self.compute_output.add(output_ns)

    def record_failure(self, ns: int, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.record_failure(outcome)
        with self.lock:
            self.last_inference_ms = time.time_ns() // 1_000_000
            self.fail.add(ns)

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
                    queue=pb.StatisticDuration(),
                    compute_input=self.compute_input.to_proto(),
                    compute_infer=self.compute_infer.to_proto(),
                    compute_output=self.compute_output.to_proto(),
                ),
            )


class StatisticsBook:
    """Statistics for every (model, version) that has been asked for."""

    def __init__(self) -> None:
        self._by_version: dict[tuple[str, str], VersionStatistics] = {}
        self._lock = threading.Lock()

    def of(self, name: str, version: str) -> VersionStatistics:
        stats = self._by_version.get((name, version))
        if stats is None:
            with self._lock:
                stats = self._by_version.get((name, version))
                if stats is None:
                    stats = VersionStatistics(metrics=ModelMetrics.bind(name, version))
                    self._by_version[(name, version)] = stats
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
            for field in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
                into, add = getattr(total.inference_stats, field), getattr(stats.inference_stats, field)
                into.count += add.count
                into.ns += add.ns
    return pb.ModelStatisticsResponse(model_stats=[merged[k] for k in sorted(merged)])
