"""tensorwire's speed beside its references, measured in one run on one machine.

(a) Kernel time per call: tensorwire's scorer (the exported model, loaded as the
    server loads it, scoring a read-only array from np.frombuffer) against
    scikit-learn's predict / predict_proba on the same estimator, for a
    multinomial LogisticRegression and a Ridge regressor at batch 1, 64 and 4096.
    Median over repeats of the mean time per call, in microseconds.

(b) Server throughput at batch 1 and 64: `tensorwire serve` with the logistic
    model against benchmarks/echo_server.py (same gRPC setup, no inference),
    each a subprocess, driven by a closed-loop load generator in separate
    processes (grpc.aio, pre-serialised request bytes, responses left
    undecoded). Reports requests/s, rows/s, p50/p99 latency, errors, and the
    server's CPU time per request read from /proc: on a small box where client
    and server share the cores, CPU per request is the figure to compare.

    python benchmarks/bench_skeleton.py            # full run (about two minutes)
    python benchmarks/bench_skeleton.py --quick    # smoke test
    python benchmarks/bench_skeleton.py --json     # one JSON document on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import pathlib
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any

import grpc
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
METHOD = "/inference.GRPCInferenceService/ModelInfer"
MODEL_NAME = "logistic"
N_FEATURES, N_CLASSES, N_TRAIN = 20, 4, 2000
KERNEL_BATCHES = (1, 64, 4096)
SERVER_BATCHES = (1, 64)
START_TIMEOUT_S = 120.0  # a first start compiles kernels
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
RTOL, ATOL = 1e-5, 1e-6  # DESIGN.md's agreement bar for FP32 models


@dataclass(frozen=True)
class Settings:
    duration: float  # seconds measured per load run
    warmup: float  # seconds of load before measuring
    processes: int  # load-generator processes
    concurrency: int  # requests in flight per load-generator process
    rounds: int  # load runs per server and batch, alternating servers; medians are reported
    repeat_target_s: float  # kernel timing: the least time one repeat takes
    repeats: int  # kernel timing: repeats; the median is reported


@dataclass(frozen=True)
class KernelRow:
    model: str
    output: str
    batch: int
    tensorwire_us: float
    sklearn_us: float
    speedup: float
    agrees: bool


@dataclass(frozen=True)
class LoadRow:
    server: str
    batch: int
    requests_per_s: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_us_per_request: float
    server_cores: float  # server CPU seconds per wall second during the measurement
    client_cores: float  # the same for all load-generator processes together
    other_cores: float  # busy CPU of everything else on the box (other work skews the figures)


# ---- models ------------------------------------------------------------------


def fit_models() -> dict[str, Any]:
    """A multinomial LogisticRegression and a Ridge regressor on synthetic data (deterministic)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_TRAIN, N_FEATURES))
    labels = np.argmax(X[:, :N_CLASSES] + 0.5 * rng.standard_normal((N_TRAIN, N_CLASSES)), axis=1)
    target = X @ rng.standard_normal(N_FEATURES) + 0.1 * rng.standard_normal(N_TRAIN)
    return {
        "logistic": LogisticRegression(max_iter=1000).fit(X, labels),
        "ridge": Ridge(alpha=1.0).fit(X, target),
    }


def export_models(models: dict[str, Any], root: pathlib.Path) -> None:
    """Write each model as root/<name>/1/model.npz, FP32 input."""
    import tensorwire

    for name, estimator in models.items():
        tensorwire.export(estimator, root / name / "1", dtype="float32")


def request_array(batch: int, seed: int = 1) -> np.ndarray:
    """A read-only float32 (batch, N_FEATURES) array viewing a bytes object, as the server decodes it."""
    data = np.random.default_rng(seed).standard_normal((batch, N_FEATURES)).astype(np.float32)
    return np.frombuffer(data.tobytes(), dtype=np.float32).reshape(batch, N_FEATURES)


# ---- (a) kernels ---------------------------------------------------------------


def median_call_us(fn: Callable[[], object], settings: Settings) -> float:
    """Median over repeats of the mean time per call of fn, in µs; calls per repeat auto-scaled."""
    fn()  # warm caches (and, for numba, make sure nothing compiles inside the timing)
    timer = timeit.Timer(fn)
    number = 1
    while timer.timeit(number) < settings.repeat_target_s:
        number *= 2
    return statistics.median(timer.repeat(repeat=settings.repeats, number=number)) / number * 1e6


def kernel_rows(models: dict[str, Any], root: pathlib.Path, settings: Settings) -> list[KernelRow]:
    """tensorwire's scorer against scikit-learn, per model, output and batch size."""
    from tensorwire.kernels.config import apply_thread_budget
    from tensorwire.server.modeling.registry import build_scorer
    from tensorwire.server.repository.model_format import MODEL_FILE, load_model

    apply_thread_budget()  # numba threads as in the server
    cases = [("logistic", "predict"), ("logistic", "predict_proba"), ("ridge", "predict")]
    rows = []
    for model_name, output in cases:
        stored = load_model(root / model_name / "1" / MODEL_FILE)
        scorer = build_scorer(stored.manifest, stored.arrays)
        sklearn_method = getattr(models[model_name], output)
        for batch in KERNEL_BATCHES:
            X = request_array(batch)
            names = [output]
            ours = scorer.score(X, names)[0]
            theirs = sklearn_method(X)
            agrees = bool(np.allclose(ours, theirs, rtol=RTOL, atol=ATOL))
            tw_us = median_call_us(lambda: scorer.score(X, names), settings)
            sk_us = median_call_us(lambda: sklearn_method(X), settings)
            rows.append(KernelRow(model_name, output, batch, tw_us, sk_us, sk_us / tw_us, agrees))
            progress(f"kernel {model_name}.{output} batch {batch}: {tw_us:.1f} µs vs {sk_us:.1f} µs")
    return rows


# ---- (b) servers ---------------------------------------------------------------


@dataclass
class ServerProcess:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: pathlib.Path


def start_server(name: str, command: Sequence[str], log_path: pathlib.Path) -> ServerProcess:
    """Start a server subprocess, read its port from its "listening on" line, and wait for ServerReady."""
    from tensorwire.client import InferenceClient, InferenceServerError

    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = ServerProcess(name, process, "", log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.url:
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", log_path.read_text(errors="replace"))
        if match:
            server.url = f"127.0.0.1:{match.group(1)}"
        else:
            _check_alive(server, deadline)
            time.sleep(0.05)
    with InferenceClient(server.url) as client:
        while True:
            with contextlib.suppress(InferenceServerError):
                if client.server_ready(timeout=1):
                    return server
            _check_alive(server, deadline)
            time.sleep(0.05)


def _check_alive(server: ServerProcess, deadline: float) -> None:
    if server.process.poll() is not None or time.monotonic() > deadline:
        raise RuntimeError(f"{server.name} did not start:\n{server.log_path.read_text(errors='replace')[-4000:]}")


def stop_server(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (a multi-worker server spends its CPU in its children)."""
    pids = [pid]
    for parent in pids:
        for task in pathlib.Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                pids.extend(int(child) for child in (task / "children").read_text().split())
    return pids


def box_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, pathlib.Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process tree, from /proc/<pid>/stat, in seconds."""
    ticks = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):  # a process may exit mid-read
            fields = pathlib.Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def serialized_request(batch: int) -> bytes:
    """A ModelInfer request for the logistic model, asking for every output (the client's default)."""
    from tensorwire.client._requests import build_infer_request

    return bytes(build_infer_request(MODEL_NAME, np.array(request_array(batch, seed=2))).SerializeToString())


def check_response(url: str, payload: bytes, batch: int) -> None:
    """One request by hand: the server must answer with outputs of `batch` rows."""
    from tensorwire.protos import inference_pb2 as pb

    with grpc.insecure_channel(url, options=CHANNEL_OPTIONS) as channel:
        response = pb.ModelInferResponse.FromString(channel.unary_unary(METHOD)(payload, timeout=10))
    if not response.outputs or any(o.shape[0] != batch for o in response.outputs):
        raise RuntimeError(f"{url} answered a batch of {batch} with {response.outputs}")


def sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.monotonic()))


def load_worker(url: str, payload: bytes, settings: Settings, go: Any, start_at: Any, results: Any) -> None:
    """Entry point of a load-generator process: run the closed loop, send its figures to `results`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends this process
    try:
        results.put(asyncio.run(_closed_loop(url, payload, settings, go, start_at, results)))
    except BaseException as exc:  # report, never hang the parent
        results.put({"error": f"{type(exc).__name__}: {exc}"})


async def _closed_loop(url: str, payload: bytes, settings: Settings, go: Any, start_at: Any, results: Any) -> dict[str, Any]:
    """`concurrency` clients on one channel, each sending the next request when the last returns.

    Latencies count requests that complete inside the measured window; errors count the whole run.
    """
    async with grpc.aio.insecure_channel(url, options=CHANNEL_OPTIONS) as channel:
        infer = channel.unary_unary(METHOD)  # bytes in, bytes out: no client-side protobuf work
        await channel.channel_ready()
        results.put({"ready": os.getpid()})
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        begin = start_at.value + settings.warmup
        end = begin + settings.duration
        latencies: list[float] = []
        errors = 0

        async def client() -> None:
            nonlocal errors
            now = time.monotonic()
            while now < end:
                sent = now
                try:
                    await infer(payload)
                    ok = True
                except grpc.aio.AioRpcError:
                    errors, ok = errors + 1, False
                now = time.monotonic()
                if ok and begin <= now < end:
                    latencies.append(now - sent)

        async def client_cpu() -> float:
            await asyncio.sleep(max(0.0, begin - time.monotonic()))
            before = time.process_time()
            await asyncio.sleep(max(0.0, end - time.monotonic()))
            return time.process_time() - before

        await asyncio.sleep(max(0.0, start_at.value - time.monotonic()))
        *_, cpu = await asyncio.gather(*(client() for _ in range(settings.concurrency)), client_cpu())
    return {"latencies": latencies, "errors": errors, "cpu": cpu}


def run_load(server: ServerProcess, payload: bytes, batch: int, settings: Settings) -> LoadRow:
    """Drive one server with the closed-loop generator; server CPU is read around the measured window."""
    ctx = mp.get_context("spawn")  # no fork after grpc has started threads
    results, go, start_at = ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    workers = [
        ctx.Process(target=load_worker, args=(server.url, payload, settings, go, start_at, results), daemon=True)
        for _ in range(settings.processes)
    ]
    try:
        for worker in workers:
            worker.start()
        for _ in workers:
            _expect(results.get(timeout=60), "ready")
        start_at.value = time.monotonic() + 0.05
        go.set()
        sleep_until(start_at.value + settings.warmup)
        cpu_before, box_before = cpu_seconds(server.process.pid), box_busy_seconds()
        sleep_until(start_at.value + settings.warmup + settings.duration)
        server_cpu, box_cpu = cpu_seconds(server.process.pid) - cpu_before, box_busy_seconds() - box_before
        reports = [_expect(results.get(timeout=60), "latencies") for _ in workers]
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
    return summarise(server.name, batch, reports, server_cpu, box_cpu, settings.duration)


def _expect(message: dict[str, Any], key: str) -> dict[str, Any]:
    if key not in message:
        raise RuntimeError(f"load generator failed: {message.get('error', message)}")
    return message


def summarise(name: str, batch: int, reports: list[dict[str, Any]], server_cpu: float, box_cpu: float, duration: float) -> LoadRow:
    client_cpu = sum(r["cpu"] for r in reports)
    latencies_ms = np.concatenate([np.asarray(r["latencies"], dtype=np.float64) for r in reports]) * 1e3
    completed = len(latencies_ms)
    p50, p99 = np.percentile(latencies_ms, [50, 99]) if completed else (float("nan"), float("nan"))
    return LoadRow(
        server=name,
        batch=batch,
        requests_per_s=completed / duration,
        rows_per_s=completed * batch / duration,
        p50_ms=float(p50),
        p99_ms=float(p99),
        errors=sum(r["errors"] for r in reports),
        server_cpu_us_per_request=server_cpu / completed * 1e6 if completed else float("nan"),
        server_cores=server_cpu / duration,
        client_cores=client_cpu / duration,
        other_cores=max(0.0, box_cpu - server_cpu - client_cpu) / duration,
    )


def median_row(rows: list[LoadRow]) -> LoadRow:
    """Each figure's median over rounds; errors add up."""
    first = rows[0]
    figures = {k: statistics.median(getattr(r, k) for r in rows) for k, v in asdict(first).items() if isinstance(v, float)}
    return LoadRow(**{**asdict(first), **figures, "errors": sum(r.errors for r in rows)})


def load_rows(root: pathlib.Path, settings: Settings, stack: contextlib.ExitStack) -> list[LoadRow]:
    """Start both servers (stopped by `stack`), then load each in turn at each batch size, `rounds` times."""
    commands = {
        "echo": [sys.executable, str(HERE / "echo_server.py"), "--port", "0"],
        "tensorwire": [sys.executable, "-m", "tensorwire", "serve", str(root), "--host", "127.0.0.1",
                       "--grpc-port", "0", "--metrics-port", "0", "--workers", "1", "--grace-period", "1"],
    }
    servers = []
    for name, command in commands.items():
        server = start_server(name, command, root.parent / f"{name}.log")
        stack.callback(stop_server, server)
        servers.append(server)
    rows: list[LoadRow] = []
    for batch in SERVER_BATCHES:
        payload = serialized_request(batch)
        runs: dict[str, list[LoadRow]] = {server.name: [] for server in servers}
        for round_ in range(settings.rounds):
            for server in servers:
                check_response(server.url, payload, batch)
                row = run_load(server, payload, batch, settings)
                progress(f"load {server.name} batch {batch} round {round_ + 1}: {row.requests_per_s:.0f} req/s, "
                         f"{row.server_cpu_us_per_request:.0f} µs server CPU/request, {row.other_cores:.2f} other cores")
                runs[server.name].append(row)
        rows.extend(median_row(r) for r in runs.values())
    return rows


def cpu_ratios(rows: list[LoadRow]) -> dict[int, float]:
    """tensorwire's server CPU per request over the echo server's, per batch size."""
    by_key = {(r.server, r.batch): r.server_cpu_us_per_request for r in rows}
    return {b: by_key[("tensorwire", b)] / by_key[("echo", b)] for b in SERVER_BATCHES}


# ---- report --------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import numba
    import sklearn
    from threadpoolctl import threadpool_info

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "numba": numba.__version__,
        "grpcio": grpc.__version__,
        "numba_threads": numba.get_num_threads(),
        "blas_threads": max((p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"), default=None),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines)


def print_report(env: dict[str, Any], settings: Settings, kernels: list[KernelRow], loads: list[LoadRow]) -> None:
    print("environment: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    print(f"\n(a) kernel time per call, µs (median of {settings.repeats} repeats; FP32 input, read-only)")
    print(table(
        ["model", "output", "batch", "tensorwire", "scikit-learn", "speed-up", "agrees"],
        [[r.model, r.output, str(r.batch), f"{r.tensorwire_us:.2f}", f"{r.sklearn_us:.2f}", f"{r.speedup:.1f}x",
          "yes" if r.agrees else "NO"] for r in kernels],
    ))
    print(f"\n(b) server throughput: {settings.processes} client processes x {settings.concurrency} in flight, "
          f"{settings.duration:g} s after {settings.warmup:g} s warm-up, median of {settings.rounds} alternating round(s)")
    print(table(
        ["server", "batch", "req/s", "rows/s", "p50 ms", "p99 ms", "errors", "srv CPU µs/req", "srv cores", "client cores",
         "other cores"],
        [[r.server, str(r.batch), f"{r.requests_per_s:.0f}", f"{r.rows_per_s:.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
          str(r.errors), f"{r.server_cpu_us_per_request:.0f}", f"{r.server_cores:.2f}", f"{r.client_cores:.2f}",
          f"{r.other_cores:.2f}"] for r in loads],
    ))
    for batch, ratio in cpu_ratios(loads).items():
        print(f"batch {batch}: tensorwire server CPU per request = {ratio:.2f} x the echo server's")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- main ----------------------------------------------------------------------


def parse_settings(argv: Sequence[str] | None) -> tuple[Settings, bool]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, help="seconds measured per load run (default 8; --quick 2)")
    parser.add_argument("--warmup", type=float, help="seconds of load before measuring (default 1; --quick 0.5)")
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight per process (default 16)")
    parser.add_argument("--rounds", type=int, help="load runs per server and batch, alternating (default 3; --quick 1)")
    parser.add_argument("--quick", action="store_true", help="a short run, for smoke testing")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = parser.parse_args(argv)
    if args.processes < 1 or args.concurrency < 1 or (args.rounds is not None and args.rounds < 1):
        parser.error("--processes, --concurrency and --rounds must be at least 1")
    settings = Settings(
        duration=args.duration or (2.0 if args.quick else 8.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0),
        processes=args.processes,
        concurrency=args.concurrency,
        rounds=args.rounds or (1 if args.quick else 3),
        repeat_target_s=0.002 if args.quick else 0.02,
        repeats=5 if args.quick else 15,
    )
    return settings, args.json


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    settings, as_json = parse_settings(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # clean up subprocesses on SIGTERM as on Ctrl-C
    with tempfile.TemporaryDirectory(prefix="tensorwire-bench-") as tmp, contextlib.ExitStack() as stack:
        root = pathlib.Path(tmp) / "models"
        models = fit_models()
        export_models(models, root)
        kernels = kernel_rows(models, root, settings)
        loads = load_rows(root, settings, stack)
        env = environment()
    if as_json:
        document = {
            "environment": env,
            "settings": asdict(settings),
            "kernels": [asdict(r) for r in kernels],
            "servers": [asdict(r) for r in loads],
            "server_cpu_ratio_vs_echo": cpu_ratios(loads),
        }
        print(json.dumps(document, indent=2))
    else:
        print_report(env, settings, kernels, loads)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
