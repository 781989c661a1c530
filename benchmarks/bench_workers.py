"""tensorwire with 1 and N worker processes beside an echo server with the same process model, in one run.

(a) Throughput, latency and server CPU per request at batch 1 and 64, for a
    multinomial LogisticRegression (20 features, 4 classes, FP32), against
    benchmarks/echo_server.py (same protocol and gRPC setup, no inference) with
    the same worker count: one on grpc.aio and one on grpcio's thread-pool
    server (`--api aio|sync`, tensorwire's two engines; `tensorwire serve`
    picks sync when there is a worker per CPU, aio otherwise, and the ratio
    table marks the echo server on the same engine). The load generator is h2load (C, HTTP/2), replaying
    one serialised ModelInferRequest as a gRPC unary call over several
    connections (one TCP connection lands on one worker) with several streams
    each, for a fixed duration after a warm-up. h2load cannot read gRPC status
    trailers, so before and after every run one request goes through a real gRPC
    client and its answer is checked (against scikit-learn for tensorwire), and
    tensorwire's ModelStatistics must count no failure during the run.

    Beside it, tensorwire's InferenceHandler.model_infer_bytes and the echo
    server's answer are timed in this process (no gRPC): the CPU per request that
    tensorwire's own work adds, free of the noise of a loaded machine.

(b) Whole-server memory (sum of PSS and of RSS over the supervisor and its
    workers, from /proc/PID/smaps_rollup) with 1 and N workers, serving five
    small models (examples/models plus a logistic and a ridge model), then the
    same plus one large model (Ridge, 2000 x 2000 FP64 coefficients, ~31 MiB).

    python benchmarks/bench_workers.py                # full run (about twelve minutes)
    python benchmarks/bench_workers.py --quick        # smoke test (about one minute)
    python benchmarks/bench_workers.py --json         # one JSON document on stdout

Needs h2load: `apt-get install nghttp2-client` (Debian/Ubuntu).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
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
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from types import FrameType
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_skeleton import (  # the sibling script's model and /proc helpers
    N_FEATURES,
    box_busy_seconds,
    export_models,
    fit_models,
    process_tree,
    progress,
    table,
)

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
EXAMPLES = REPO_ROOT / "examples" / "models"
METHOD = "/inference.GRPCInferenceService/ModelInfer"
MODEL_NAME = "logistic"
BATCHES = (1, 64)
START_TIMEOUT_S = 180.0  # a first start compiles kernels; the machine may be busy
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
RTOL, ATOL = 1e-5, 1e-6  # DESIGN.md's agreement bar for FP32 models
LARGE_SHAPE = (2000, 2000)  # features x targets of the large model: 32 MB of float64 coefficients
UNBALANCED_RETRIES = 2  # reruns of a run where SO_REUSEPORT left a worker with far less than its share of connections
ECHO_APIS = {"echo": "aio", "echo-sync": "sync"}  # the echo servers run beside tensorwire, and their --api (tensorwire's --engine)
GOAL_REQ_RATIO, GOAL_CPU_RATIO = 0.9, 1.15  # issue 4: >= 0.9x the echo server's req/s, <= 1.15x its CPU/request
INSTALL_HINT = "h2load is missing: install it with `apt-get install nghttp2-client` (Debian/Ubuntu), or put it on PATH"


@dataclass(frozen=True)
class Settings:
    workers: int  # N, compared with 1
    duration: float  # seconds measured per h2load run
    warmup: float  # seconds of h2load warm-up before measuring
    rounds: int  # runs per server, worker count and batch, alternating servers; medians are reported
    connections_per_worker: int  # h2load -c = this x workers
    streams: int  # h2load -m: requests in flight per connection
    memory: bool  # run part (b)
    h2load_threads: int = 1  # h2load -t: one is enough on 2 cores; more where many workers would outrun it

    @property
    def worker_counts(self) -> tuple[int, ...]:
        return tuple(sorted({1, self.workers}))

    def connections(self, workers: int) -> int:
        return self.connections_per_worker * workers


@dataclass(frozen=True)
class LoadRow:
    server: str
    workers: int
    batch: int
    connections: int
    streams: int
    requests_per_s: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int  # completed in the measured window (h2load's "done")
    http_failures: int  # h2load failed + errored + timed out + non-2xx (all should be 0)
    grpc_failures: int | None  # tensorwire's ModelStatistics fail count over the run; None for the echo server
    server_cpu_us_per_request: float
    server_switches_per_request: float  # context switches of all server threads per request (GIL hand-offs show here)
    server_cores: float  # server CPU seconds per wall second in the window
    worker_split: str  # each worker's share of the workers' CPU, e.g. "0.52/0.48": connection balance
    client_cores: float  # h2load's CPU
    other_cores: float  # busy CPU of everything else on the machine


@dataclass(frozen=True)
class MemoryRow:
    server: str
    repository: str
    workers: int
    processes: int
    pss_mib: float
    rss_mib: float
    per_process: list[dict[str, Any]] = field(default_factory=list)  # pid, role, pss_mib, rss_mib


# ---- servers -------------------------------------------------------------------


@dataclass
class Server:
    name: str
    workers: int
    process: subprocess.Popen[bytes]
    log_path: pathlib.Path
    url: str = ""


def start_server(name: str, workers: int, repository: pathlib.Path | None, log_path: pathlib.Path) -> Server:
    """Start tensorwire or the echo server; return once every worker serves."""
    if name in ECHO_APIS:
        command = [sys.executable, str(HERE / "echo_server.py"), "--port", "0", "--workers", str(workers), "--api", ECHO_APIS[name]]
    else:
        command = [sys.executable, "-m", "tensorwire", "serve", str(repository), "--workers", str(workers),
                   "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--grace-period", "1"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = Server(name, workers, process, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        text = log_path.read_text(errors="replace")
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
        # the echo server prints its line once all workers serve; tensorwire's supervisor logs each worker ready
        all_up = name in ECHO_APIS or workers == 1 or len(set(re.findall(r"worker (\d+) ready", text))) >= workers
        if match and all_up:
            server.url = f"127.0.0.1:{match.group(1)}"
            if _ready(server.url):
                return server
        if process.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"{name} --workers {workers} did not start:\n{text[-4000:]}")
        time.sleep(0.1)


def _ready(url: str) -> bool:
    from tensorwire.client import InferenceClient, InferenceServerError

    with InferenceClient(url) as client, contextlib.suppress(InferenceServerError):
        return client.server_ready(timeout=2)
    return False


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                for pid in reversed(process_tree(server.process.pid)):
                    os.kill(pid, signal.SIGKILL)
            server.process.wait()


def worker_pids(server: Server) -> list[int]:
    """The processes that serve: the server itself with 1 worker, else its children (the echo server's resource tracker left out)."""
    if server.workers == 1:
        return [server.process.pid]
    children = [p for p in process_tree(server.process.pid) if p != server.process.pid]
    return [p for p in children if "resource_tracker" not in _cmdline(p)]


def _cmdline(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def context_switches(pids: Sequence[int]) -> int:
    """Voluntary + involuntary context switches of every thread of these processes (/proc/PID/task/*/status)."""
    total = 0
    for pid in pids:
        for task in pathlib.Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:  # voluntary_ and nonvoluntary_
                        total += int(line.split()[1])
    return total


def cpu_of(pids: Sequence[int]) -> dict[int, float]:
    """utime + stime per process, in seconds (/proc/PID/stat fields 14 and 15)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return out


# ---- requests and checks -------------------------------------------------------


def request_rows(batch: int) -> np.ndarray:
    return np.random.default_rng(batch).standard_normal((batch, N_FEATURES)).astype(np.float32)


def serialized_request(X: np.ndarray) -> bytes:
    """ModelInfer for the logistic model, raw FP32 input, every output (the client SDK's default)."""
    from tensorwire.protos import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name=MODEL_NAME)
    request.inputs.add(name="input", datatype="FP32", shape=list(X.shape))
    request.raw_input_contents.append(np.ascontiguousarray(X, dtype="<f4").tobytes())
    return request.SerializeToString()


def grpc_frame(message: bytes) -> bytes:
    """The body of a gRPC unary call: flag 0 (uncompressed), 4-byte big-endian length, the message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def check_answer(server: Server, payload: bytes, X: np.ndarray, estimator: Any) -> None:
    """One call through a real gRPC client; the answer must be right (h2load sees only HTTP status 200)."""
    from tensorwire.protos import inference_pb2 as pb
    from tensorwire.protos.codec import decode_tensor

    with grpc.insecure_channel(server.url, options=CHANNEL_OPTIONS) as channel:
        response = pb.ModelInferResponse.FromString(channel.unary_unary(METHOD)(payload, timeout=30))
    outputs = {o.name: decode_tensor(o.name, o.datatype, o.shape, raw, None)
               for o, raw in zip(response.outputs, response.raw_output_contents)}
    where = f"{server.name} --workers {server.workers}, batch {len(X)}"
    if server.name in ECHO_APIS:
        if "echo" not in outputs or not np.array_equal(outputs["echo"], X):
            raise RuntimeError(f"{where}: the echo server did not echo the input: {response}")
        return
    expected = {"predict": estimator.predict(X), "predict_proba": estimator.predict_proba(X),
                "decision_function": estimator.decision_function(X)}
    if not {"predict", "predict_proba"} <= outputs.keys():
        raise RuntimeError(f"{where}: outputs {sorted(outputs)} lack predict / predict_proba")
    for name, got in outputs.items():
        want = expected.get(name)
        if want is None:
            continue
        same = np.array_equal(got.astype(want.dtype), want) if name == "predict" else np.allclose(got, want, rtol=RTOL, atol=ATOL)
        if got.shape != want.shape or not same:
            raise RuntimeError(f"{where}: output '{name}' differs from scikit-learn's:\n{got}\nvs\n{want}")


def failure_count(server: Server) -> int | None:
    """Failed ModelInfer calls of the logistic model, summed over workers (None for the echo server)."""
    if server.name in ECHO_APIS:
        return None
    from tensorwire.client import InferenceClient

    with InferenceClient(server.url) as client:
        stats = client.model_statistics(MODEL_NAME, timeout=30)
    return sum(s.inference_stats.fail.count for s in stats.model_stats)


# ---- (a) load ------------------------------------------------------------------


def h2load_duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def run_h2load(server: Server, body_path: pathlib.Path, batch: int, settings: Settings, log_path: pathlib.Path) -> LoadRow:
    """One h2load run; server, h2load and machine CPU are read when h2load starts and ends its measured phase."""
    h2load = shutil.which("h2load")
    assert h2load is not None
    connections = settings.connections(server.workers)
    command = [h2load, "-D", h2load_duration(settings.duration), "--warm-up-time", h2load_duration(settings.warmup),
               "-c", str(connections), "-m", str(settings.streams), "-t", str(settings.h2load_threads), "-d", str(body_path),
               "-H", "content-type: application/grpc", "-H", "te: trailers", f"--log-file={log_path}",
               f"http://{server.url}{METHOD}"]
    serving = worker_pids(server)
    everyone = process_tree(server.process.pid)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    marks: dict[str, tuple[float, dict[int, float], float, float, int]] = {}
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            for key, marker in (("begin", "Main benchmark duration is started"), ("end", "Main benchmark duration is over")):
                if marker in line:
                    own = cpu_of([process.pid]).get(process.pid, 0.0)
                    marks[key] = (time.monotonic(), cpu_of(everyone), own, box_busy_seconds(), context_switches(everyone))
        process.wait(timeout=settings.duration + settings.warmup + 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines)
    if process.returncode != 0 or "begin" not in marks or "end" not in marks:
        raise RuntimeError(f"h2load failed (exit {process.returncode}):\n{output[-3000:]}")
    return summarise(server, batch, connections, settings.streams, output, log_path, marks, serving)


def summarise(server: Server, batch: int, connections: int, streams: int, output: str, log_path: pathlib.Path,
              marks: dict[str, tuple[float, dict[int, float], float, float, int]], serving: list[int]) -> LoadRow:
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
                       r"(\d+) timeout", output)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    finished = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", output)
    if not counts or not codes or not finished:
        raise RuntimeError(f"cannot read h2load's summary:\n{output[-3000:]}")
    done, succeeded, failed, errored, timeouts = (int(counts.group(i)) for i in (3, 4, 5, 6, 7))
    non_2xx = sum(int(codes.group(i)) for i in (2, 3, 4))
    req_per_s = float(finished.group(2))  # h2load: requests done in the measured phase / its duration
    (t0, cpu0, own0, box0, switches0), (t1, cpu1, own1, box1, switches1) = marks["begin"], marks["end"]
    wall = t1 - t0
    delta = {pid: cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0) for pid in cpu0}
    server_cpu = sum(delta.values())
    worker_cpu = [delta.get(pid, 0.0) for pid in serving]
    total_worker = sum(worker_cpu) or 1.0
    client_cpu = own1 - own0
    durations_us = np.loadtxt(log_path, usecols=2, ndmin=1, dtype=np.float64) if log_path.stat().st_size else np.array([])
    p50, p99 = (np.percentile(durations_us, [50, 99]) / 1e3) if len(durations_us) else (float("nan"), float("nan"))
    return LoadRow(
        server=server.name,
        workers=server.workers,
        batch=batch,
        connections=connections,
        streams=streams,
        requests_per_s=req_per_s,
        rows_per_s=req_per_s * batch,
        p50_ms=float(p50),
        p99_ms=float(p99),
        requests=done,
        http_failures=(done - succeeded) + failed + errored + timeouts + non_2xx,
        grpc_failures=None,
        server_cpu_us_per_request=server_cpu / done * 1e6 if done else float("nan"),
        server_switches_per_request=(switches1 - switches0) / done if done else float("nan"),
        server_cores=server_cpu / wall,
        worker_split="/".join(f"{c / total_worker:.2f}" for c in sorted(worker_cpu, reverse=True)),
        client_cores=client_cpu / wall,
        other_cores=max(0.0, (box1 - box0) - server_cpu - client_cpu) / wall,
    )


def unbalanced(row: LoadRow) -> bool:
    """A worker got less than half its fair share of the server's CPU: connections were hashed unevenly."""
    shares = [float(x) for x in row.worker_split.split("/")]
    return len(shares) > 1 and min(shares) < 0.5 / len(shares)


def median_row(rows: list[LoadRow]) -> LoadRow:
    """Each figure's median over rounds; failures add up; the worker split of the median-CPU round."""
    first = rows[0]
    figures = {k: statistics.median(getattr(r, k) for r in rows) for k, v in asdict(first).items() if isinstance(v, float)}
    by_cpu = sorted(rows, key=lambda r: r.server_cpu_us_per_request)[len(rows) // 2]
    grpc_failures = None if first.grpc_failures is None else sum(r.grpc_failures or 0 for r in rows)
    return replace(first, **figures, requests=sum(r.requests for r in rows), http_failures=sum(r.http_failures for r in rows),
                   grpc_failures=grpc_failures, worker_split=by_cpu.worker_split)


@dataclass(frozen=True)
class Pair:
    """tensorwire's figure over an echo server's, per round: the runs of a round are back to back."""

    reference: str  # "echo" (grpc.aio) or "echo-sync" (grpcio's thread-pool server)
    workers: int
    batch: int
    req_per_s_ratios: list[float]
    cpu_per_request_ratios: list[float]


def load_rows(estimator: Any, root: pathlib.Path, work: pathlib.Path, settings: Settings,
              stack: contextlib.ExitStack) -> tuple[list[LoadRow], list[Pair]]:
    """For each worker count: start both servers, then load each in turn at each batch size, `rounds` times."""
    bodies, inputs = {}, {}
    for batch in BATCHES:
        inputs[batch] = request_rows(batch)
        payload = serialized_request(inputs[batch])
        bodies[batch] = (payload, work / f"request-batch{batch}.grpc")
        bodies[batch][1].write_bytes(grpc_frame(payload))
    rows: list[LoadRow] = []
    pairs: list[Pair] = []
    for workers in settings.worker_counts:
        servers = []
        for name in (*ECHO_APIS, "tensorwire"):
            server = start_server(name, workers, root, work / f"{name}-w{workers}.log")
            stop = stack.enter_context(contextlib.ExitStack())
            stop.callback(stop_server, server)
            servers.append((server, stop))
        for batch in BATCHES:
            payload, body_path = bodies[batch]
            runs: dict[str, list[LoadRow]] = {s.name: [] for s, _ in servers}
            for round_ in range(settings.rounds):
                order = servers if round_ % 2 == 0 else servers[::-1]  # alternate who goes first
                for server, _ in order:
                    check_answer(server, payload, inputs[batch], estimator)
                    failed_before = failure_count(server)
                    for retry in range(UNBALANCED_RETRIES + 1):
                        row = run_h2load(server, body_path, batch, settings, work / "h2load.log")
                        if not unbalanced(row) or retry == UNBALANCED_RETRIES:
                            break
                        progress(f"{server.name} --workers {workers} batch {batch}: worker split {row.worker_split} "
                                 "(the kernel hashed the connections unevenly); running again")
                    check_answer(server, payload, inputs[batch], estimator)
                    failed_after = failure_count(server)
                    if failed_before is not None and failed_after is not None:
                        row = replace(row, grpc_failures=failed_after - failed_before)
                    progress(f"{server.name} --workers {workers} batch {batch} round {round_ + 1}: "
                             f"{row.requests_per_s:.0f} req/s, {row.server_cpu_us_per_request:.0f} µs server CPU/request, "
                             f"split {row.worker_split}, {row.client_cores:.2f} h2load cores, {row.other_cores:.2f} other cores")
                    runs[server.name].append(row)
            rows.extend(median_row(r) for r in runs.values())
            tw = runs["tensorwire"]
            for reference in ECHO_APIS:
                echo = runs[reference]
                pairs.append(Pair(reference, workers, batch, [t.requests_per_s / e.requests_per_s for t, e in zip(tw, echo)],
                                  [t.server_cpu_us_per_request / e.server_cpu_us_per_request for t, e in zip(tw, echo)]))
        for _, stop in servers:
            stop.close()
    return rows, pairs


def tensorwire_engine(workers: int) -> str:
    """The gRPC engine `tensorwire serve --workers N` picks on this machine (--engine auto)."""
    from tensorwire.server.config import ServerConfig

    return ServerConfig(model_repository=".", workers=workers).resolved_engine()


def ratios(pairs: list[Pair]) -> list[dict[str, Any]]:
    """tensorwire / echo at the same worker count and batch: the median over rounds of each round's ratio.

    Pairing the two back-to-back runs of a round cancels much of the drift in
    other load on the machine; the range shows what is left.
    """
    out = []
    for pair in pairs:
        req = statistics.median(pair.req_per_s_ratios)
        cpu = statistics.median(pair.cpu_per_request_ratios)
        engine = tensorwire_engine(pair.workers)
        out.append({"reference": pair.reference, "workers": pair.workers, "batch": pair.batch, "tensorwire_engine": engine,
                    "same_engine": ECHO_APIS[pair.reference] == engine, "req_per_s_ratio": req, "cpu_per_request_ratio": cpu,
                    "req_per_s_ratio_range": [min(pair.req_per_s_ratios), max(pair.req_per_s_ratios)],
                    "cpu_per_request_ratio_range": [min(pair.cpu_per_request_ratios), max(pair.cpu_per_request_ratios)],
                    "meets_req_goal": req >= GOAL_REQ_RATIO, "meets_cpu_goal": cpu <= GOAL_CPU_RATIO})
    return out


# ---- in-process handler cost ---------------------------------------------------


def handler_rows(root: pathlib.Path, quick: bool) -> list[dict[str, Any]]:
    """µs per call of tensorwire's InferenceHandler.model_infer_bytes and the echo server's answer, serialised bytes to bytes, in this process.

    No gRPC and no other thread: the part of the server CPU per request that the
    two servers do not share, free of the noise of a loaded machine.
    """
    import timeit

    import echo_server

    from tensorwire.kernels.config import apply_thread_budget
    from tensorwire.protos import inference_pb2 as pb
    from tensorwire.server.inference.handler import InferenceHandler
    from tensorwire.server.repository.model_repository import ModelRepository

    apply_thread_budget()
    handler = InferenceHandler(ModelRepository(str(root)))
    handler.repository.load_all(None)
    rows = []
    for batch in BATCHES:
        data = serialized_request(request_rows(batch))
        figures = {}
        calls: dict[str, Callable[[], object]] = {  # bytes to bytes, as each server's ModelInfer
            "tensorwire": functools.partial(handler.model_infer_bytes, data),
            "echo": lambda: echo_server.echo_response(pb.ModelInferRequest.FromString(data)).SerializeToString(),
        }
        for name, call in calls.items():
            call()
            timer = timeit.Timer(call)
            number = 200 if quick else 2000
            figures[name] = min(timer.repeat(repeat=3 if quick else 7, number=number)) / number * 1e6
        rows.append({"batch": batch, "tensorwire_us": figures["tensorwire"], "echo_us": figures["echo"],
                     "difference_us": figures["tensorwire"] - figures["echo"]})
    return rows


# ---- (b) memory ----------------------------------------------------------------


def memory_repositories(models: dict[str, Any], work: pathlib.Path) -> dict[str, pathlib.Path]:
    """'5 small': examples/models + logistic + ridge; '5 small + large': the same and a 2000x2000 FP64 Ridge."""
    from sklearn.linear_model import Ridge

    import tensorwire

    small = work / "memory-small"
    shutil.copytree(EXAMPLES, small)
    export_models(models, small)
    large = work / "memory-large"
    shutil.copytree(small, large)
    rng = np.random.default_rng(2)
    n_features, n_targets = LARGE_SHAPE
    X = rng.standard_normal((n_features + 200, n_features))
    Y = rng.standard_normal((n_features + 200, n_targets))
    tensorwire.export(Ridge(alpha=1.0, solver="cholesky").fit(X, Y), large / "large" / "1", dtype="float64")
    count = len([p for p in small.iterdir() if p.is_dir()])
    size = (large / "large" / "1" / "model.npz").stat().st_size / 2**20
    return {f"{count} small": small, f"{count} small + large ({n_features}x{n_targets} FP64 Ridge, {size:.0f} MiB file)": large}


def warm_every_worker(server: Server, repository: pathlib.Path) -> None:
    """Score every model through 4 connections per worker, so that each worker has touched each model."""
    from tensorwire.client import InferenceClient

    with InferenceClient(server.url, channels=4 * server.workers) as client:
        for name in sorted(p.name for p in repository.iterdir() if p.is_dir()):
            metadata = client.model_metadata(name, timeout=30)
            spec = metadata.inputs[0]
            dtype = np.float64 if spec.datatype == "FP64" else np.float32
            X = np.random.default_rng(0).standard_normal((4, spec.shape[-1])).astype(dtype)
            for _ in range(4 * server.workers):
                client.infer(name, X, timeout=60)


def smaps_rollup(pid: int) -> tuple[float, float]:
    """(PSS, RSS) of one process in MiB."""
    values = {}
    for line in pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Rss"):
            values[key] = int(rest.split()[0]) / 1024
    return values["Pss"], values["Rss"]


def measure_memory(server: Server, repository: str) -> MemoryRow:
    serving = set(worker_pids(server))
    per_process: list[dict[str, Any]] = []
    for pid in process_tree(server.process.pid):
        with contextlib.suppress(OSError, KeyError):
            pss, rss = smaps_rollup(pid)
            role = "worker" if pid in serving and server.workers > 1 else (
                "server" if pid == server.process.pid and server.workers == 1 else
                "supervisor" if pid == server.process.pid else
                "resource tracker" if "resource_tracker" in _cmdline(pid) else "other")
            per_process.append({"pid": pid, "role": role, "pss_mib": pss, "rss_mib": rss})
    pss_total = sum(float(p["pss_mib"]) for p in per_process)
    rss_total = sum(float(p["rss_mib"]) for p in per_process)
    return MemoryRow(server.name, repository, server.workers, len(per_process), pss_total, rss_total, per_process)


def memory_rows(models: dict[str, Any], work: pathlib.Path, settings: Settings) -> list[MemoryRow]:
    rows = []
    for workers in settings.worker_counts:  # the floor: a Python gRPC server with no model
        server = start_server("echo", workers, None, work / f"echo-memory-w{workers}.log")
        try:
            rows.append(measure_memory(server, "(none)"))
        finally:
            stop_server(server)
    for label, repository in memory_repositories(models, work).items():
        for workers in settings.worker_counts:
            server = start_server("tensorwire", workers, repository, work / f"tensorwire-memory-w{workers}.log")
            try:
                warm_every_worker(server, repository)
                time.sleep(0.5)
                rows.append(measure_memory(server, label))
            finally:
                stop_server(server)
        progress(f"memory measured: {label}")
    return rows


# ---- report --------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import numba
    import sklearn

    version = subprocess.run([shutil.which("h2load") or "h2load", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "grpcio": grpc.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scikit-learn": sklearn.__version__,
        "h2load": version,
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def print_report(env: dict[str, Any], settings: Settings, loads: list[LoadRow], pairs: list[Pair],
                 handlers: list[dict[str, Any]], memory: list[MemoryRow]) -> None:
    print("environment: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    if loads:
        print(f"\n(a) logistic model (20 features, 4 classes, FP32, all outputs) vs echo server; h2load -t {settings.h2load_threads}, "
              f"-c {settings.connections_per_worker} x workers, -m {settings.streams}, {settings.duration:g} s after "
              f"{settings.warmup:g} s warm-up, median of {settings.rounds} alternating round(s)")
        print(table(
            ["server", "workers", "batch", "req/s", "rows/s", "p50 ms", "p99 ms", "fails http/grpc", "srv CPU µs/req",
             "ctx sw/req", "srv cores", "worker split", "h2load cores", "other cores"],
            [[r.server, str(r.workers), str(r.batch), f"{r.requests_per_s:.0f}", f"{r.rows_per_s:.0f}", f"{r.p50_ms:.2f}",
              f"{r.p99_ms:.2f}", f"{r.http_failures}/{'-' if r.grpc_failures is None else r.grpc_failures}",
              f"{r.server_cpu_us_per_request:.0f}", f"{r.server_switches_per_request:.1f}", f"{r.server_cores:.2f}",
              r.worker_split, f"{r.client_cores:.2f}", f"{r.other_cores:.2f}"] for r in loads],
        ))
        print(f"\ntensorwire / echo server at the same worker count, median of the per-round ratios [min-max] "
              f"(goals: req/s >= {GOAL_REQ_RATIO}x, CPU/request <= {GOAL_CPU_RATIO}x); echo = grpc.aio as tensorwire, "
              "echo-sync = grpcio's thread-pool server; 'same' marks the echo server on tensorwire's engine at that worker count")
        print(table(
            ["vs", "workers", "batch", "tensorwire engine", "req/s ratio", "CPU/req ratio", "goals"],
            [[r["reference"], str(r["workers"]), str(r["batch"]), r["tensorwire_engine"] + (" (same)" if r["same_engine"] else ""),
              f"{r['req_per_s_ratio']:.2f}x [{r['req_per_s_ratio_range'][0]:.2f}-{r['req_per_s_ratio_range'][1]:.2f}]",
              f"{r['cpu_per_request_ratio']:.2f}x [{r['cpu_per_request_ratio_range'][0]:.2f}-{r['cpu_per_request_ratio_range'][1]:.2f}]",
              "met" if r["meets_req_goal"] and r["meets_cpu_goal"] else
              "req/s " + ("ok" if r["meets_req_goal"] else "MISSED") + ", CPU " + ("ok" if r["meets_cpu_goal"] else "MISSED")]
             for r in ratios(pairs)],
        ))
    if handlers:
        print("\nin-process handler time per call, µs (best of repeats; no gRPC, one thread): the CPU per request "
              "tensorwire adds to what both servers pay")
        print(table(
            ["batch", "tensorwire model_infer_bytes", "echo answer", "difference"],
            [[str(r["batch"]), f"{r['tensorwire_us']:.1f}", f"{r['echo_us']:.1f}", f"{r['difference_us']:.1f}"]
             for r in handlers],
        ))
    if memory:
        print("\n(b) whole-server memory after every model has answered on every worker (sum over all processes of the tree)")
        print(table(
            ["server", "models", "workers", "processes", "PSS MiB", "RSS MiB", "per process (role PSS/RSS MiB)"],
            [[r.server, r.repository, str(r.workers), str(r.processes), f"{r.pss_mib:.0f}", f"{r.rss_mib:.0f}",
              ", ".join(f"{p['role']} {p['pss_mib']:.0f}/{p['rss_mib']:.0f}" for p in r.per_process)] for r in memory],
        ))


# ---- main ----------------------------------------------------------------------


def parse_settings(argv: Sequence[str] | None) -> tuple[Settings, bool]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="N, the worker count compared with 1 (default 2)")
    parser.add_argument("--duration", type=float, help="seconds measured per h2load run (default 5; --quick 2)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per h2load run (default 1; --quick 0.5)")
    parser.add_argument("--rounds", type=int, help="runs per server, worker count and batch, alternating (default 5; --quick 1)")
    parser.add_argument("--connections-per-worker", type=int, default=4,
                        help="h2load connections per worker (default 4: -c 8 with 2 workers)")
    parser.add_argument("--streams", type=int, default=4, help="h2load -m, requests in flight per connection (default 4)")
    parser.add_argument("--h2load-threads", type=int, default=1, help="h2load -t (default 1; raise it for many workers)")
    parser.add_argument("--no-memory", action="store_true", help="skip part (b), the memory measurement")
    parser.add_argument("--no-load", action="store_true", help="skip part (a), the h2load runs (h2load then not needed)")
    parser.add_argument("--quick", action="store_true", help="a short run, for smoke testing")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.streams < 1 or args.connections_per_worker < 1 or (args.rounds is not None and args.rounds < 1):
        parser.error("--workers, --streams, --connections-per-worker and --rounds must be at least 1")
    if args.connections_per_worker < 2:
        progress("warning: with fewer than 2 connections per worker, SO_REUSEPORT may leave a worker without any")
    settings = Settings(
        workers=args.workers,
        duration=args.duration or (2.0 if args.quick else 5.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0),
        rounds=args.rounds or (1 if args.quick else 5),
        connections_per_worker=args.connections_per_worker,
        streams=args.streams,
        memory=not args.no_memory,
        h2load_threads=max(1, args.h2load_threads),
    )
    if not args.no_load and shutil.which("h2load") is None:
        parser.exit(2, f"bench_workers.py: {INSTALL_HINT} (or run with --no-load for the memory part only)\n")
    return (replace(settings, rounds=0) if args.no_load else settings), args.json


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    settings, as_json = parse_settings(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # stop the servers on SIGTERM as on Ctrl-C
    env = environment()
    with tempfile.TemporaryDirectory(prefix="tensorwire-bench-workers-") as tmp, contextlib.ExitStack() as stack:
        work = pathlib.Path(tmp)
        models = fit_models()
        perf_repo = work / "perf"
        export_models({MODEL_NAME: models[MODEL_NAME]}, perf_repo)
        loads, pairs = load_rows(models[MODEL_NAME], perf_repo, work, settings, stack) if settings.rounds else ([], [])
        handlers = handler_rows(perf_repo, settings.duration < 5) if settings.rounds else []
        memory = memory_rows(models, work, settings) if settings.memory else []
    if as_json:
        document = {
            "environment": env,
            "settings": asdict(settings),
            "servers": [asdict(r) for r in loads],
            "ratios_vs_echo": ratios(pairs),
            "per_round_ratios": [asdict(p) for p in pairs],
            "handler_us_per_call": handlers,
            "memory": [asdict(r) for r in memory],
        }
        print(json.dumps(document, indent=2))
    else:
        print_report(env, settings, loads, pairs, handlers, memory)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
