"""Prometheus metrics for the whole server, rendered at scrape time from every worker's statistics.

Workers keep plain counters and histograms (server/inference/statistics.py) on the request
path; a scrape asks every worker for a snapshot (through the supervisor when
there are several) and sums them here. A worker that died keeps contributing
its last snapshot, so totals never go backwards. The endpoint listens on
--metrics-host, in plain HTTP or, with --metrics-use-ssl, in HTTPS with the gRPC
port's certificate (and its client-certificate check under mutual TLS).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import numpy as np
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tensorwire.server.config import ServerConfig, TlsFiles
from tensorwire.server.inference.statistics import BATCH_BUCKETS, LATENCY_BUCKETS_NS
from tensorwire.server.modeling.reference_profile import population_stability_index

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_SECONDS = 10.0

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
        yield from drift_families(snapshots)


def drift_families(snapshots: list[Snapshot]) -> Iterator[Metric]:
    """Input drift per model version, the workers' live counts summed (server/inference/drift.py).

    Series per model version: 1 + 3 per feature (PSI, missing, below and above the reference range), and, for
    `tensorwire drift`, the share of rows in each bin, reference and live: at most 2 x 11 more per feature. Where the
    profile has the main output: its PSI, its rows in the window, and the share of each class or score bin, reference
    and live (bin "other" or "missing" only where live rows fell there).
    """
    labels = ["model", "version"]
    psi = GaugeMetricFamily("tensorwire_feature_psi", "Population stability index of each input feature over the drift window, live vs reference", labels=[*labels, "feature"])
    window = GaugeMetricFamily("tensorwire_drift_window_rows", "Rows in the drift window, summed over workers", labels=labels)
    rows = CounterMetricFamily("tensorwire_drift_rows", "Rows counted into the drift profile since load", labels=labels)
    missing = CounterMetricFamily("tensorwire_feature_missing", "Values missing (NaN) per input feature since load", labels=[*labels, "feature"])
    out_of_range = CounterMetricFamily(
        "tensorwire_feature_out_of_range", "Values beyond the reference range per input feature since load (side: below or above)", labels=[*labels, "feature", "side"]
    )
    fractions = GaugeMetricFamily(
        "tensorwire_feature_bin_fraction",
        "Share of rows in each reference bin of an input feature (bin 0..n-1 or missing; population: reference or live window)",
        labels=[*labels, "feature", "bin", "population"],
    )
    output_psi = GaugeMetricFamily("tensorwire_output_psi", "Population stability index of the main output over the drift window, live vs reference", labels=labels)
    output_window = GaugeMetricFamily("tensorwire_output_window_rows", "Rows whose main output is in the drift window, summed over workers", labels=labels)
    output_fractions = GaugeMetricFamily(
        "tensorwire_output_bin_fraction",
        "Share of rows in each class (or score bin) of the main output (population: reference or live window)",
        labels=[*labels, "output", "bin", "population"],
    )
    for (model, version), live in _summed_drift(snapshots).items():
        key = [model, version]
        output = live.get("output")
        if output is not None:
            _add_output(key, output, output_psi, output_window, output_fractions)
        window.add_metric(key, live["window_rows"])
        rows.add_metric(key, live["rows"])
        reference, counts, totals = (np.asarray(live[name], dtype=np.float64) for name in ("reference", "window", "totals"))
        shares = counts / max(1, live["window_rows"])
        for j, feature in enumerate(live["features"]):
            bins = [*range(live["n_bins"][j]), reference.shape[1] - 1]  # the feature's value bins, then missing
            missing.add_metric([*key, feature], totals[j, 0])
            out_of_range.add_metric([*key, feature, "below"], totals[j, 1])
            out_of_range.add_metric([*key, feature, "above"], totals[j, 2])
            names = [*(str(b) for b in bins[:-1]), "missing"]
            for name, b in zip(names, bins):
                fractions.add_metric([*key, feature, name, "reference"], reference[j, b])
                if live["window_rows"]:
                    fractions.add_metric([*key, feature, name, "live"], shares[j, b])
            if live["window_rows"]:
                psi.add_metric([*key, feature], population_stability_index(reference[j, bins], shares[j, bins]))
    yield from (psi, window, rows, missing, out_of_range, fractions, output_psi, output_window, output_fractions)


def _add_output(key: list[str], output: dict[str, Any], psi: GaugeMetricFamily, window: GaugeMetricFamily, fractions: GaugeMetricFamily) -> None:
    """The main output's series: its PSI once rows are counted, and its bin shares (the last bin, other labels or
    missing scores, only where rows fell there)."""
    reference, counts, rows = np.asarray(output["reference"]), np.asarray(output["window"], dtype=np.float64), output["window_rows"]
    window.add_metric(key, rows)
    shares = counts / max(1, rows)
    for b, name in enumerate(output["bins"]):
        if b == len(output["bins"]) - 1 and not (reference[b] or counts[b]):
            continue
        fractions.add_metric([*key, output["name"], name, "reference"], reference[b])
        if rows:
            fractions.add_metric([*key, output["name"], name, "live"], shares[b])
    if rows:
        psi.add_metric(key, population_stability_index(reference, shares))


def _summed_drift(snapshots: list[Snapshot]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each model version's drift counts summed over the workers whose profile matches (a file reloaded on one
    worker before another may briefly differ: its counts wait for the next scrape)."""
    summed: dict[tuple[str, str], dict[str, Any]] = {}
    for snapshot in snapshots:
        for part in snapshot.get("drift", []):
            key = (part["model"], part["version"])
            total = summed.get(key)
            output = part.get("output")
            if total is None:
                summed[key] = {
                    **part, "window": np.asarray(part["window"], dtype=np.int64), "totals": np.asarray(part["totals"], dtype=np.int64),
                    "output": None if output is None else {**output, "window": np.asarray(output["window"], dtype=np.int64)},
                }
            elif (total["features"], total["n_bins"], total["reference"], _output_bins(total["output"])) == (
                part["features"], part["n_bins"], part["reference"], _output_bins(output)
            ):
                total["window"] = total["window"] + np.asarray(part["window"], dtype=np.int64)
                total["totals"] = total["totals"] + np.asarray(part["totals"], dtype=np.int64)
                total["window_rows"] += part["window_rows"]
                total["rows"] += part["rows"]
                if output is not None:
                    total["output"]["window"] = total["output"]["window"] + np.asarray(output["window"], dtype=np.int64)
                    total["output"]["window_rows"] += output["window_rows"]
                    total["output"]["rows"] += output["rows"]
    return summed


def _output_bins(output: dict[str, Any] | None) -> Any:
    """What two workers' output counts must share to be summed: the output, its bins and their reference shares."""
    return None if output is None else (output["name"], output["bins"], output["reference"])


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


def serve_metrics(config: ServerConfig, collector: ServerCollector) -> MetricsServer:
    """Expose the collector on http(s)://metrics_host:metrics_port/metrics from daemon threads."""
    host = config.metrics_host or config.host
    tls = config.tls() if config.metrics_tls else None
    if tls is None and config.tls() is not None and not _is_loopback(host):
        log.warning("the gRPC port uses TLS but the metrics are plain HTTP on %s; see --metrics-use-ssl and --metrics-host", host)
    registry = CollectorRegistry()
    registry.register(collector)
    server = start_metrics_server(host, config.metrics_port, registry, tls)
    log.info("metrics on %s://%s:%d/metrics", "https" if tls else "http", host, server.server_port)
    return server


class _ScrapeHandler(WSGIRequestHandler):
    """One scrape, in its own thread, with a deadline; never logged."""

    timeout = SCRAPE_TIMEOUT_SECONDS  # a client that connects and says nothing must not hold a thread for ever

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer(ThreadingMixIn, WSGIServer):
    """The metrics' HTTP(S) server; TLS handshakes run in the connection's thread, not the accepting one."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family
        super().__init__(address, _ScrapeHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics request from %s failed: %s", client_address[0], sys.exc_info()[1])  # e.g. plain HTTP on the HTTPS port


def start_metrics_server(host: str, port: int, registry: CollectorRegistry, tls: TlsFiles | None = None) -> MetricsServer:
    """Serve the registry on host:port (HTTPS when given TLS files) from a daemon thread."""
    context = _tls_context(tls) if tls is not None else None
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    try:
        server = MetricsServer((str(address[0]), port), family)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror} (--metrics-port picks another port; 0 turns the metrics off)") from None
    server.set_app(make_wsgi_app(registry))
    if context is not None:
        # prometheus_client's own TLS handshakes in the accepting thread: one silent client would stall every scrape
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


def _tls_context(tls: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    if tls.mutual and tls.root:
        context.load_verify_locations(tls.root)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
