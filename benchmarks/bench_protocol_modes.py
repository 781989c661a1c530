"""tensorwire's protocol modes side by side, measured in one run against one server.

One `tensorwire serve` (subprocess) serves three models exported into a
temporary repository from deterministic scikit-learn fits:

    logistic      multinomial LogisticRegression, 20 features, 4 classes (bench_skeleton.py's fit)
    heavy         an RBF SVC (20 features, 4 classes, ~1800 support vectors), or, where
                  tensorwire.export cannot export SVC, a LogisticRegression over 2000 features
    heavy_batched the same exported files plus a config.json that turns dynamic batching on

and three comparisons run against it, each pair back to back in every round
(the order alternating between rounds), with the same settings:

(a) unary vs streaming: `tensorwire bench` (subprocess, --json) on `logistic`,
    ModelInfer against ModelStreamInfer, at batch 1 and 64;
(b) dynamic batching off vs on: `tensorwire bench` on `heavy` and
    `heavy_batched`, batch 1, at concurrency 1 and a high concurrency;
(c) tensorwire's client vs tritonclient: a closed loop in this process, one
    client object per thread (InferenceClient vs
    tritonclient.grpc.InferenceServerClient, as it comes and with a connection
    of its own per object), each call building the request from a numpy array
    and decoding every output to numpy.

Beside requests/s and latency, every row gives the server's CPU time per
request (utime+stime of its process tree from /proc, read at the edges of the
measured window), the client's (for (c): this process's), and the busy cores of
everything else on the machine, so background load is visible next to each
figure.

    python benchmarks/bench_protocol_modes.py             # full run (about 8 minutes)
    python benchmarks/bench_protocol_modes.py --quick     # smoke test (about 1.5 minutes)
    python benchmarks/bench_protocol_modes.py --json      # one JSON document on stdout
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import pathlib
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_skeleton import box_busy_seconds, cpu_seconds  # the sibling script's /proc helpers

N_FEATURES, N_CLASSES, N_TRAIN = 20, 4, 2000
SVC_TRAIN_ROWS, SVC_FEATURES = 10000, 50  # the heavy SVC: about 8600 support vectors, ~100 µs of kernel per row alone
WIDE_FEATURES = 2000  # the fallback heavy model's width
START_TIMEOUT_S = 180.0  # a first start compiles kernels
BENCH_LEAD_S = 0.3  # client.bench.START_LEAD_S: with several client processes a point starts this long after it is announced
BATCHING = {"max_batch_size": 64, "max_queue_delay_microseconds": 200}
PROGRESS = re.compile(r"^batch (\d+), concurrency (\d+): ")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- /proc readings ------------------------------------------------------------------------------------


def load_average() -> list[float]:
    return [float(x) for x in pathlib.Path("/proc/loadavg").read_text().split()[:3]]


@dataclass
class CpuWindow:
    """CPU spent during one measured window by the server, the client and everything else."""

    seconds: float = 0.0
    server_s: float = 0.0
    client_s: float = 0.0
    box_s: float = 0.0

    def cores(self, cpu: float) -> float:
        return cpu / self.seconds if self.seconds > 0 else float("nan")

    @property
    def other_s(self) -> float:
        return max(0.0, self.box_s - self.server_s - self.client_s)


class WindowSampler:
    """Reads server, client and machine CPU at two wall-clock moments, in a thread."""

    def __init__(self, server_pid: int, client_cpu: Callable[[], float]) -> None:
        self.server_pid = server_pid
        self.client_cpu = client_cpu
        self.window = CpuWindow()
        self._thread: threading.Thread | None = None

    def _read(self) -> tuple[float, float, float, float]:
        return time.time(), cpu_seconds(self.server_pid), self.client_cpu(), box_busy_seconds()

    def _run(self, start: float, end: float) -> None:
        time.sleep(max(0.0, start - time.time()))
        t0, s0, c0, b0 = self._read()
        time.sleep(max(0.0, end - time.time()))
        t1, s1, c1, b1 = self._read()
        self.window = CpuWindow(t1 - t0, s1 - s0, c1 - c0, b1 - b0)

    def schedule(self, start: float, end: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(start, end), daemon=True)
        self._thread.start()

    def result(self) -> CpuWindow:
        if self._thread is not None:
            self._thread.join()
        return self.window


# ---- servers ------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: pathlib.Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _check_alive(server: Server, deadline: float) -> None:
    if server.process.poll() is not None or time.monotonic() > deadline:
        raise RuntimeError(f"{server.name} did not start:\n{server.log_tail()}")


def start_tensorwire(repository: pathlib.Path, workers: int, log_path: pathlib.Path, extra: Sequence[str] = ()) -> Server:
    """`tensorwire serve` on a free loopback port; returns once every worker serves and ServerReady answers."""
    command = [
        sys.executable, "-m", "tensorwire", "serve", str(repository), "--workers", str(workers),
        "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", *extra,
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = Server("tensorwire", process, "", log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        text = log_path.read_text(errors="replace")
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
        ready = len(re.findall(r"worker \d+ ready in", text)) >= workers if workers > 1 else "serving (pid" in text
        if match and ready:
            server.url = f"127.0.0.1:{match.group(1)}"
            break
        _check_alive(server, deadline)
        time.sleep(0.1)
    wait_ready(server, deadline)
    return server


def wait_ready(server: Server, deadline: float) -> None:
    from tensorwire.client import InferenceClient, InferenceServerError

    with InferenceClient(server.url, retry=None) as client:
        while True:
            with contextlib.suppress(InferenceServerError):
                if client.server_ready(timeout=1):
                    return
            _check_alive(server, deadline)
            time.sleep(0.1)


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def prewarm(url: str, models: Sequence[str], n_features: dict[str, int], batches: Sequence[int] = (1, 2, 8, 16, 32, 64)) -> None:
    """Send every batch size to every model over 8 connections, so each worker compiles and caches what the load will use."""
    from tensorwire.client import InferenceClient

    rng = np.random.default_rng(99)
    with InferenceClient(url, channels=8, retry=None) as client:
        for model in models:
            for _ in range(8):  # the client round-robins its channels
                for batch in batches:
                    client.infer(model, rng.standard_normal((batch, n_features[model])).astype(np.float32), timeout=120)


def inference_counts(url: str, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) of a model, summed over versions and workers: rows scored and kernel calls."""
    from tensorwire.client import InferenceClient

    with InferenceClient(url, retry=None) as client:
        stats = client.model_statistics(model, timeout=10)
    return sum(s.inference_count for s in stats.model_stats), sum(s.execution_count for s in stats.model_stats)


# ---- models --------------------------------------------------------------------------------------------


def synthetic_data(n_features: int = N_FEATURES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """bench_skeleton.py's classification data: 4 classes driven by the first 4 features, with noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_TRAIN, n_features))
    labels = np.argmax(X[:, :N_CLASSES] + 0.5 * rng.standard_normal((N_TRAIN, N_CLASSES)), axis=1)
    return X, labels


def fit_logistic() -> Any:
    from sklearn.linear_model import LogisticRegression

    X, y = synthetic_data()
    return LogisticRegression(max_iter=1000).fit(X, y)


def fit_svc(rows: int = SVC_TRAIN_ROWS, features: int = SVC_FEATURES) -> Any:
    """An RBF SVC whose noisy labels make most training rows support vectors: a kernel-heavy model."""
    from sklearn.svm import SVC

    rng = np.random.default_rng(1)
    X = rng.standard_normal((rows, features))
    y = np.argmax(X[:, :N_CLASSES] + 1.0 * rng.standard_normal((rows, N_CLASSES)), axis=1)
    return SVC(kernel="rbf", C=1.0).fit(X, y)


def fit_wide_logistic() -> Any:
    from sklearn.linear_model import LogisticRegression

    X, y = synthetic_data(WIDE_FEATURES, seed=2)
    return LogisticRegression(max_iter=300).fit(X, y)


def heavy_model(root: pathlib.Path, rows: int = SVC_TRAIN_ROWS, features: int = SVC_FEATURES) -> tuple[str, int]:
    """Export the heavy model to root/heavy/1: an RBF SVC if tensorwire can export one, else a wide logistic model.

    Returns a description and the model's input width.
    """
    import tensorwire

    svc = fit_svc(rows, features)
    try:
        tensorwire.export(svc, root / "heavy" / "1", dtype="float32")
        return f"SVC(kernel='rbf'), {features} features, {N_CLASSES} classes, {int(svc.n_support_.sum())} support vectors", features
    except Exception as exc:  # noqa: BLE001  (export refused: fall back, and say so)
        shutil.rmtree(root / "heavy", ignore_errors=True)
        progress(f"tensorwire.export(SVC) failed ({type(exc).__name__}: {exc}); using a wide LogisticRegression instead")
        tensorwire.export(fit_wide_logistic(), root / "heavy" / "1", dtype="float32")
        return f"LogisticRegression, {WIDE_FEATURES} features, {N_CLASSES} classes (SVC export unavailable)", WIDE_FEATURES


def build_repository(root: pathlib.Path, settings: Settings) -> dict[str, Any]:
    import tensorwire

    tensorwire.export(fit_logistic(), root / "logistic" / "1", dtype="float32")
    heavy, width = heavy_model(root, settings.svc_rows, settings.svc_features)
    shutil.copytree(root / "heavy", root / "heavy_batched")
    (root / "heavy_batched" / "config.json").write_text(json.dumps({"dynamic_batching": BATCHING}))
    return {"logistic": f"LogisticRegression, {N_FEATURES} features, {N_CLASSES} classes", "heavy": heavy, "width": width}


# ---- measurements --------------------------------------------------------------------------------------


@dataclass
class Row:
    section: str
    variant: str
    model: str
    batch: int
    concurrency: int
    round: int
    requests: int
    errors: int
    requests_per_s: float
    rows_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_us_per_request: float
    client_cpu_us_per_request: float
    server_cores: float
    client_cores: float
    other_cores: float
    rows_per_execution: float | None = None  # ModelStatistics inference_count / execution_count over the run
    first_error: str | None = None


def per_request_us(cpu_s: float, requests: int) -> float:
    return cpu_s / requests * 1e6 if requests else float("nan")


def bench_point(
    server: Server, *, model: str, batch: int, concurrency: int, stream: bool, settings: Settings, section: str, variant: str, rnd: int
) -> Row:
    """One point of `tensorwire bench --json`, with the server's, the bench's and the machine's CPU read around its window."""
    command = [
        sys.executable, "-m", "tensorwire", "bench", "--url", server.url, "--model", model,
        "--batch", str(batch), "--concurrency", str(concurrency), "--duration", f"{settings.duration}s",
        "--warmup", f"{settings.warmup}s", "--processes", str(settings.processes), "--json",
    ] + (["--stream"] if stream else [])  # fmt: skip
    counts_before = inference_counts(server.url, model)
    bench = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = WindowSampler(server.pid, lambda: cpu_seconds(bench.pid))
    stderr_lines: list[str] = []
    assert bench.stderr is not None and bench.stdout is not None
    for line in bench.stderr:  # the progress line is printed as the point starts
        stderr_lines.append(line)
        if PROGRESS.match(line):
            lead = BENCH_LEAD_S if settings.processes > 1 else 0.0
            start = time.time() + lead + settings.warmup
            sampler.schedule(start, start + settings.duration)
            break
    stdout, rest = bench.communicate(timeout=settings.duration + settings.warmup + 120)
    stderr_lines.append(rest)
    if bench.returncode not in (0, 1):  # 1: some requests failed, reported in the row
        raise RuntimeError(f"tensorwire bench failed ({bench.returncode}): {''.join(stderr_lines)[-2000:]}")
    window = sampler.result()
    counts_after = inference_counts(server.url, model)
    point = json.loads(stdout)["points"][0]
    requests = point["requests"]
    executions = counts_after[1] - counts_before[1]
    return Row(
        section, variant, model, batch, concurrency, rnd, requests, point["errors"], point["requests_per_s"], point["rows_per_s"],
        point["latency_ms"]["p50"], point["latency_ms"]["p99"],
        per_request_us(window.server_s, requests), per_request_us(window.client_s, requests),
        window.cores(window.server_s), window.cores(window.client_s), window.cores(window.other_s),
        (counts_after[0] - counts_before[0]) / executions if executions else None, point["first_error"],
    )  # fmt: skip


# -- (c) clients in this process --


def tensorwire_caller(url: str, model: str) -> tuple[Callable[[np.ndarray], list[np.ndarray]], Callable[[], None]]:
    """A call through tensorwire's InferenceClient (defaults: input checked against cached metadata, every output decoded)."""
    from tensorwire.client import InferenceClient

    client = InferenceClient(url)

    def call(X: np.ndarray) -> list[np.ndarray]:
        return list(client.infer(model, X, timeout=30).values())

    return call, client.close


def triton_caller(url: str, model: str, own_connection: bool = False) -> tuple[Callable[[np.ndarray], list[np.ndarray]], Callable[[], None]]:
    """The same call through tritonclient.grpc: InferInput from numpy, every output read back with as_numpy.

    By default tritonclient's channels use gRPC's global subchannel pool, so client objects with the same
    settings in one process share one TCP connection (and so one worker of a multi-process server).
    `own_connection` passes tritonclient's default channel arguments plus a local subchannel pool, which
    gives each client object its own connection, as tensorwire's client does.
    """
    import tritonclient.grpc as grpcclient

    channel_args = None
    if own_connection:
        keepalive = grpcclient.KeepAliveOptions()
        channel_args = [
            ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
            ("grpc.use_local_subchannel_pool", 1),
        ]
    client = grpcclient.InferenceServerClient(url, channel_args=channel_args)
    metadata = client.get_model_metadata(model)
    input_name, datatype = metadata.inputs[0].name, metadata.inputs[0].datatype
    output_names = [o.name for o in metadata.outputs]

    def call(X: np.ndarray) -> list[np.ndarray]:
        inp = grpcclient.InferInput(input_name, list(X.shape), datatype)
        inp.set_data_from_numpy(X)
        result = client.infer(model, [inp], client_timeout=30)
        return [result.as_numpy(name) for name in output_names]

    return call, client.close


CLIENTS: dict[str, Callable[[str, str], tuple[Callable[[np.ndarray], list[np.ndarray]], Callable[[], None]]]] = {
    "tritonclient.grpc": triton_caller,
    "tritonclient.grpc, own connection": functools.partial(triton_caller, own_connection=True),
    "tensorwire InferenceClient": tensorwire_caller,
}


def client_point(server: Server, *, client: str, model: str, threads: int, settings: Settings, rnd: int, width: int) -> Row:
    """`threads` threads, each with its own client object, calling back to back; only calls ending inside the window count."""
    make = CLIENTS[client]
    callers = [make(server.url, model) for _ in range(threads)]
    inputs = [np.random.default_rng(i).standard_normal((1, width)).astype(np.float32) for i in range(8)]
    expected = len(callers[0][0](inputs[0]))
    start = time.time() + 0.2 + settings.warmup
    end = start + settings.duration
    latencies: list[list[int]] = [[] for _ in range(threads)]
    errors = [0] * threads
    first_error: list[str | None] = [None]

    def loop(i: int) -> None:
        call = callers[i][0]
        lat = latencies[i]
        n = i
        while True:
            sent_wall = time.time()
            if sent_wall >= end:
                return
            t0 = time.perf_counter_ns()
            try:
                outputs = call(inputs[n % len(inputs)])
                ok = len(outputs) == expected
            except Exception as exc:  # noqa: BLE001  (counted, never raised out of the loop)
                ok = False
                first_error[0] = first_error[0] or f"{type(exc).__name__}: {exc}"
            t1 = time.perf_counter_ns()
            done_wall = time.time()
            if start <= done_wall <= end:
                if ok:
                    lat.append(t1 - t0)
                else:
                    errors[i] += 1
            n += 1

    sampler = WindowSampler(server.pid, time.process_time)  # process_time: every thread of this process
    sampler.schedule(start, end)
    workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    window = sampler.result()
    for _, close in callers:
        with contextlib.suppress(Exception):
            close()
    all_ns = np.array([x for lat in latencies for x in lat], dtype=np.int64)
    requests = int(all_ns.size)
    p50, p99 = (float(v) / 1e6 for v in np.percentile(all_ns, [50, 99])) if requests else (None, None)
    rps = requests / settings.duration
    return Row(
        "client", client, model, 1, threads, rnd, requests, sum(errors), round(rps, 2), round(rps, 2),
        None if p50 is None else round(p50, 4), None if p99 is None else round(p99, 4),
        per_request_us(window.server_s, requests), per_request_us(window.client_s, requests),
        window.cores(window.server_s), window.cores(window.client_s), window.cores(window.other_s), None, first_error[0],
    )  # fmt: skip


# ---- the run -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    duration: float
    warmup: float
    processes: int
    rounds: int
    workers: int
    stream_batches: tuple[int, ...]
    stream_concurrency: tuple[int, ...]
    batching_concurrency: tuple[int, ...]
    client_threads: tuple[int, ...]
    svc_rows: int
    svc_features: int
    server_threads: int | None


@dataclass
class Plan:
    """The pairs to run: each a list of (label, thunk) run back to back in one round."""

    pairs: list[tuple[str, list[tuple[str, Callable[[int], Row]]]]] = field(default_factory=list)


def make_plan(server: Server, settings: Settings) -> Plan:
    """Each thunk takes the round number and returns the measured row."""
    plan = Plan()
    for batch in settings.stream_batches:
        for conc in settings.stream_concurrency:
            plan.pairs.append((f"unary vs stream, batch {batch}, concurrency {conc}", [
                (mode, functools.partial(
                    _bench_thunk, server, settings, model="logistic", batch=batch, concurrency=conc, stream=mode == "stream",
                    section="stream", variant=mode))
                for mode in ("unary", "stream")
            ]))  # fmt: skip
    for conc in settings.batching_concurrency:
        plan.pairs.append((f"batching off vs on, concurrency {conc}", [
            (variant, functools.partial(
                _bench_thunk, server, settings, model=model, batch=1, concurrency=conc, stream=False, section="batching", variant=variant))
            for variant, model in (("batching off", "heavy"), ("batching on", "heavy_batched"))
        ]))  # fmt: skip
    for threads in settings.client_threads:
        plan.pairs.append((f"clients, {threads} thread(s)", [
            (client, functools.partial(_client_thunk, server, settings, client=client, threads=threads))
            for client in CLIENTS
        ]))  # fmt: skip
    return plan


def _bench_thunk(
    server: Server, settings: Settings, rnd: int, *, model: str, batch: int, concurrency: int, stream: bool, section: str, variant: str
) -> Row:
    return bench_point(
        server, model=model, batch=batch, concurrency=concurrency, stream=stream, settings=settings, section=section, variant=variant, rnd=rnd
    )


def _client_thunk(server: Server, settings: Settings, rnd: int, *, client: str, threads: int) -> Row:
    return client_point(server, client=client, model="logistic", threads=threads, settings=settings, rnd=rnd, width=N_FEATURES)


def run(settings: Settings, workdir: pathlib.Path) -> dict[str, Any]:
    repository = workdir / "models"
    progress("fitting and exporting models ...")
    models = build_repository(repository, settings)
    width = int(models.pop("width"))
    progress(f"starting tensorwire serve --workers {settings.workers} ...")
    extra = ["--threads", str(settings.server_threads)] if settings.server_threads else []
    server = start_tensorwire(repository, settings.workers, workdir / "tensorwire.log", extra)
    try:
        progress(f"serving on {server.url}; warming every worker ...")
        prewarm(server.url, ["logistic", "heavy", "heavy_batched"], {"logistic": N_FEATURES, "heavy": width, "heavy_batched": width})
        plan = make_plan(server, settings)
        rows: list[Row] = []
        load_before = load_average()
        for rnd in range(settings.rounds):
            for label, pair in plan.pairs:
                order = pair if rnd % 2 == 0 else list(reversed(pair))
                for variant, thunk in order:
                    progress(f"round {rnd + 1}/{settings.rounds}: {label}: {variant} ...")
                    row = thunk(rnd)
                    rows.append(row)
                    progress(
                        f"    {row.requests_per_s:.0f} req/s, p50 {row.p50_ms} ms, srv {row.server_cpu_us_per_request:.0f} µs/req, "
                        f"other cores {row.other_cores:.2f}"
                    )
        load_after = load_average()
    finally:
        stop_server(server)
    return {
        "benchmark": "bench_protocol_modes",
        "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "load_average_before": load_before, "load_average_after": load_after,
        },
        "settings": asdict(settings),
        "server": f"tensorwire serve --workers {settings.workers} --metrics-port 0 {' '.join(extra)}".strip(),
        "models": models,
        "batching_config": BATCHING,
        "rows": [asdict(r) for r in rows],
        "medians": [asdict(r) for r in medians(rows)],
        "ratios": ratios(rows),
    }  # fmt: skip


# ---- reporting -----------------------------------------------------------------------------------------

NUMERIC = (
    "requests_per_s", "rows_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request", "client_cpu_us_per_request",
    "server_cores", "client_cores", "other_cores", "rows_per_execution",
)  # fmt: skip


def _key(row: Row) -> tuple[str, str, int, int]:
    return row.section, row.variant, row.batch, row.concurrency


def medians(rows: Sequence[Row]) -> list[Row]:
    """One row per (section, variant, batch, concurrency): the median of each figure over rounds, errors summed."""
    groups: dict[tuple[str, str, int, int], list[Row]] = {}
    for row in rows:
        groups.setdefault(_key(row), []).append(row)
    out = []
    for group in groups.values():
        merged = Row(**{**asdict(group[0]), "round": -1, "requests": sum(r.requests for r in group), "errors": sum(r.errors for r in group)})
        for name in NUMERIC:
            values = [getattr(r, name) for r in group if getattr(r, name) is not None]
            setattr(merged, name, statistics.median(values) if values else None)
        merged.first_error = next((r.first_error for r in group if r.first_error), None)
        out.append(merged)
    return out


RATIOS = [  # (section, baseline variant, compared variant); the order of the sections and variants in the table
    ("stream", "unary", "stream"),
    ("batching", "batching off", "batching on"),
    ("client", "tritonclient.grpc", "tensorwire InferenceClient"),
    ("client", "tritonclient.grpc, own connection", "tensorwire InferenceClient"),
]
SECTIONS = list(dict.fromkeys(r[0] for r in RATIOS))
VARIANTS = list(dict.fromkeys(v for r in RATIOS for v in r[1:]))


def ratios(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """compared / baseline per round (same round, back to back), as median and range over rounds."""
    out = []
    by_key = {(r.section, r.variant, r.batch, r.concurrency, r.round): r for r in rows}
    points = sorted({(r.section, r.batch, r.concurrency) for r in rows}, key=lambda p: (SECTIONS.index(p[0]), p[1], p[2]))
    rounds = sorted({r.round for r in rows})
    for section, batch, conc in points:
        for _, base_name, comp_name in (r for r in RATIOS if r[0] == section):
            found: list[tuple[Row, Row]] = []
            for n in rounds:
                b, c = by_key.get((section, base_name, batch, conc, n)), by_key.get((section, comp_name, batch, conc, n))
                if b is not None and c is not None and b.requests and c.requests:
                    found.append((b, c))
            if not found:
                continue
            rps = [c.requests_per_s / b.requests_per_s for b, c in found]
            srv = [c.server_cpu_us_per_request / b.server_cpu_us_per_request for b, c in found]
            cli = [c.client_cpu_us_per_request / b.client_cpu_us_per_request for b, c in found]
            out.append({
                "section": section, "compared": comp_name, "baseline": base_name, "batch": batch, "concurrency": conc,
                "requests_per_s": _summary(rps), "server_cpu_per_request": _summary(srv), "client_cpu_per_request": _summary(cli),
            })  # fmt: skip
    return out


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def _fmt(value: float | None, spec: str, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}{spec}}"


def format_report(report: dict[str, Any]) -> str:
    s = report["settings"]
    m = report["machine"]
    lines = [
        (
            f"bench_protocol_modes: {report['server']}, {m['cpus']} CPUs, Python {m['python']}; "
            f"load average before {m['load_average_before']}, after {m['load_average_after']}"
        ),
        (
            f"models: logistic = {report['models']['logistic']}; heavy = {report['models']['heavy']}; "
            f"heavy_batched = heavy + dynamic_batching {json.dumps(report['batching_config'])}"
        ),
        (
            f"{s['duration']:g} s per point after {s['warmup']:g} s warm-up, median of {s['rounds']} round(s) "
            f"(pairs back to back, order alternating); tensorwire bench with {s['processes']} client process(es) x 4 channels"
        ),
        "",
        (
            f"{'comparison':<9} {'variant':<34} {'model':<13} {'batch':>5} {'conc':>4} {'req/s':>8} {'rows/s':>9} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'err':>4} {'srv µs/req':>10} {'cli µs/req':>10} {'srv cores':>9} {'cli cores':>9} {'other':>6} {'rows/exec':>9}"
        ),
    ]  # fmt: skip
    rows = sorted(report["medians"], key=lambda r: (SECTIONS.index(r["section"]), r["batch"], r["concurrency"], VARIANTS.index(r["variant"])))
    previous = None
    for r in rows:
        if previous is not None and (r["section"], r["batch"], r["concurrency"]) != previous:
            lines.append("")
        previous = (r["section"], r["batch"], r["concurrency"])
        lines.append(
            f"{r['section']:<9} {r['variant']:<34} {r['model']:<13} {r['batch']:>5} {r['concurrency']:>4} "
            f"{_fmt(r['requests_per_s'], '.0f', 8)} {_fmt(r['rows_per_s'], '.0f', 9)} {_fmt(r['p50_ms'], '.2f', 7)} "
            f"{_fmt(r['p99_ms'], '.2f', 7)} {r['errors']:>4} {_fmt(r['server_cpu_us_per_request'], '.0f', 10)} "
            f"{_fmt(r['client_cpu_us_per_request'], '.0f', 10)} {_fmt(r['server_cores'], '.2f', 9)} "
            f"{_fmt(r['client_cores'], '.2f', 9)} {_fmt(r['other_cores'], '.2f', 6)} {_fmt(r['rows_per_execution'], '.1f', 9)}"
        )
    lines += ["", "ratios (compared / baseline, per round back to back; median [min..max] over rounds):"]
    for q in report["ratios"]:
        rps, srv, cli = q["requests_per_s"], q["server_cpu_per_request"], q["client_cpu_per_request"]
        lines.append(
            f"  {q['compared']} / {q['baseline']}, batch {q['batch']}, concurrency {q['concurrency']}: "
            f"req/s {rps['median']:.2f}x [{rps['min']:.2f}..{rps['max']:.2f}], "
            f"server CPU/req {srv['median']:.2f}x [{srv['min']:.2f}..{srv['max']:.2f}], "
            f"client CPU/req {cli['median']:.2f}x [{cli['min']:.2f}..{cli['max']:.2f}]"
        )
    for r in rows:
        if r["first_error"]:
            lines.append(f"{r['section']} {r['variant']} batch {r['batch']} concurrency {r['concurrency']}: first error: {r['first_error']}")
    return "\n".join(lines)


def parse_counts(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per point (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds of load before each window (default 2)")
    parser.add_argument("--processes", type=int, default=1, help="tensorwire bench --processes (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each figure is the median over them (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="tensorwire serve --workers (default 2)")
    parser.add_argument("--stream-batches", type=parse_counts, default=(1, 64), help="batch sizes of (a) (default 1,64)")
    parser.add_argument("--stream-concurrency", type=parse_counts, default=(1, 16), help="concurrency of (a) (default 1,16)")
    parser.add_argument("--batching-concurrency", type=parse_counts, default=(1, 32, 64), help="concurrency of (b) (default 1,32,64)")
    parser.add_argument("--client-threads", type=parse_counts, default=(1, 8), help="threads of (c) (default 1,8)")
    parser.add_argument("--svc-rows", type=int, default=SVC_TRAIN_ROWS, help=f"training rows of the heavy SVC (default {SVC_TRAIN_ROWS})")
    parser.add_argument("--svc-features", type=int, default=SVC_FEATURES, help=f"features of the heavy SVC (default {SVC_FEATURES})")
    parser.add_argument("--server-threads", type=int, default=None, help="tensorwire serve --threads (default: the server's, 8)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 s points, 0.5 s warm-up, 1 round")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout (progress goes to stderr)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds = 2.0, 0.5, 1
    settings = Settings(
        args.duration, args.warmup, args.processes, args.rounds, args.workers, args.stream_batches,
        args.stream_concurrency, args.batching_concurrency, args.client_threads, args.svc_rows, args.svc_features,
        args.server_threads,
    )  # fmt: skip

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the server

    signal.signal(signal.SIGTERM, on_signal)
    with tempfile.TemporaryDirectory(prefix="tw-protocol-modes-") as tmp:
        report = run(settings, pathlib.Path(tmp))
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
