"""Prometheus metrics for the whole server, rendered at scrape time from every worker's statistics.

Workers keep plain counters and histograms (server/statistics.py) on the request
path; a scrape asks every worker for a snapshot (through the supervisor when
there are several) and sums them here. A worker that died keeps contributing
its last snapshot, so totals never go backwards.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tensorwire.server.statistics import BATCH_BUCKETS, LATENCY_BUCKETS_NS

Snapshot = dict[str, Any]  # one worker's: see InferenceHandler.metrics_snapshot


class ServerCollector(Collector):
    def __init__(self, gather: Callable[[], list[Snapshot]], restarts: Callable[[], int] = lambda: 0) -> None:
        self._gather = gather
        self._restarts = restarts

    def collect(self) -> Iterator[Metric]:
        snapshots = self._gather()
        requests = CounterMetricFamily("tensorwire_requests", "Inference requests by model, version, outcome and worker", labels=["model", "version", "outcome", "worker"])
        rows = CounterMetricFamily("tensorwire_rows", "Rows scored by model and version", labels=["model", "version"])
        loaded = GaugeMetricFamily("tensorwire_models_loaded", "Model versions ready to serve, per worker", labels=["worker"])
        failures = CounterMetricFamily("tensorwire_model_load_failures", "Model versions that failed to load, per worker", labels=["model", "version", "worker"])
        histograms: dict[str, dict[tuple[str, str], list[Any]]] = {"request_ns": {}, "compute_ns": {}, "batch_rows": {}}
        row_totals: dict[tuple[str, str], int] = defaultdict(int)
        for snapshot in snapshots:
            worker = str(snapshot["worker"])
            loaded.add_metric([worker], snapshot["models_loaded"])
            for failure in snapshot["load_failures"]:
                failures.add_metric([failure["model"], failure["version"], worker], failure["count"])
            for stats in snapshot["versions"]:
                key = (stats["model"], stats["version"])
                for outcome, count in stats["outcomes"].items():
                    requests.add_metric([*key, outcome, worker], count)
                row_totals[key] += stats["rows"]
                for name, merged in histograms.items():
                    _add_histogram(merged.setdefault(key, [None, 0]), stats[name])
        for key, count in row_totals.items():
            rows.add_metric(list(key), count)
        yield from (requests, rows, loaded, failures)
        yield _histogram_family("tensorwire_request_duration_seconds", "Time to decode, score and encode one request", histograms["request_ns"], LATENCY_BUCKETS_NS, 1e-9)
        yield _histogram_family("tensorwire_compute_duration_seconds", "Time in the model's kernels per request", histograms["compute_ns"], LATENCY_BUCKETS_NS, 1e-9)
        yield _histogram_family("tensorwire_batch_size", "Rows per scored batch", histograms["batch_rows"], BATCH_BUCKETS, 1)
        restarts = CounterMetricFamily("tensorwire_worker_restarts", "Worker processes restarted by the supervisor")
        restarts.add_metric([], self._restarts())
        yield restarts


def _add_histogram(merged: list[Any], part: dict[str, Any]) -> None:
    counts, total = merged
    merged[0] = list(part["counts"]) if counts is None else [a + b for a, b in zip(counts, part["counts"])]
    merged[1] = total + part["sum"]


def _histogram_family(name: str, documentation: str, series: dict[tuple[str, str], list[Any]], bounds: Iterable[int], unit: float) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["model", "version"])
    edges = [f"{b * unit:g}" for b in bounds] + ["+Inf"]
    for key, (counts, total) in series.items():
        cumulative, buckets = 0, []
        for edge, count in zip(edges, counts):
            cumulative += count
            buckets.append((edge, cumulative))
        family.add_metric(list(key), buckets, total * unit)
    return family


def serve_metrics(host: str, port: int, collector: ServerCollector) -> None:
    """Expose the collector on http://host:port/metrics from a daemon thread."""
    registry = CollectorRegistry()
    registry.register(collector)
    start_http_server(port, addr=host, registry=registry)
