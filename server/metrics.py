"""Prometheus metrics, summed over every worker process (prometheus_client's multiprocess mode).

Every serving process writes its samples under one directory
(PROMETHEUS_MULTIPROC_DIR, which `metrics_directory.use_metrics_directory` sets
before this module is first imported: prometheus_client picks its storage when
a metric is created); the process that owns --metrics-port reads them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server

LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)

WORKER = os.environ.get("TENSORWIRE_WORKER_INDEX", "0")  # which process served; set by the supervisor per worker
REQUESTS = Counter(
    "tensorwire_requests", "Inference requests by model, version, outcome and worker process", ["model", "version", "outcome", "worker"]
)
REQUEST_SECONDS = Histogram(
    "tensorwire_request_duration_seconds", "Time to decode, score and encode one request", ["model", "version"], buckets=LATENCY_BUCKETS
)
COMPUTE_SECONDS = Histogram(
    "tensorwire_compute_duration_seconds", "Time spent in the model's kernels per request", ["model", "version"], buckets=LATENCY_BUCKETS
)
BATCH_ROWS = Histogram("tensorwire_batch_size", "Rows per scored batch", ["model", "version"], buckets=BATCH_BUCKETS)
MODELS_LOADED = Gauge("tensorwire_models_loaded", "Model versions ready to serve", multiprocess_mode="livemax")
MODEL_LOAD_FAILURES = Counter("tensorwire_model_load_failures", "Model versions that failed to load", ["model", "version"])
WORKER_RESTARTS = Counter("tensorwire_worker_restarts", "Worker processes restarted by the supervisor")


@dataclass(frozen=True)
class ModelMetrics:
    """The metric children of one model version, bound once (label lookup is not free)."""

    success: Counter
    request_seconds: Histogram
    compute_seconds: Histogram
    batch_rows: Histogram
    model: str
    version: str

    @classmethod
    def bind(cls, model: str, version: str) -> ModelMetrics:
        return cls(
            success=REQUESTS.labels(model, version, "success", WORKER),
            request_seconds=REQUEST_SECONDS.labels(model, version),
            compute_seconds=COMPUTE_SECONDS.labels(model, version),
            batch_rows=BATCH_ROWS.labels(model, version),
            model=model,
            version=version,
        )

    def record_success(self, rows: int, request_seconds: float, compute_seconds: float) -> None:
        self.success.inc()
        self.request_seconds.observe(request_seconds)
        self.compute_seconds.observe(compute_seconds)
        self.batch_rows.observe(rows)

    def record_failure(self, outcome: str) -> None:
        REQUESTS.labels(self.model, self.version, outcome, WORKER).inc()


def serve_metrics(host: str, port: int) -> None:
    """Expose the samples of every process on http://host:port/metrics (a daemon thread)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters keep counting toward the totals)."""
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
