"""`tensorwire bench`: a closed-loop load generator for any Open Inference Protocol gRPC server.

In the spirit of Triton's perf_analyzer. For every (batch, concurrency) point,
`concurrency` workers each send a request, wait for its answer and send the
next, first for a warm-up and then for `--duration`; requests answered inside
that window count. The input's name, shape and datatype come from the model's
metadata, filled with random valid values. Requests are serialised once,
before the clock starts; answers are not decoded (an error in a stream is
recognised by its first byte), and the workers are spread over client
processes, each with its own grpc.aio event loop and channels, so that the
client is not what is measured.

    tensorwire bench --url localhost:8001 --model iris --batch 1,64 --concurrency 1,8,32
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import multiprocessing
import multiprocessing.connection
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
import grpc.aio
import numpy as np

from tensorwire.client.bench_args import add_bench_parser
from tensorwire.client.channels import DEFAULT_MAX_MESSAGE_BYTES, call_metadata, channel_options
from tensorwire.client.synthetic import InputSpec, input_specs, rows_per_request, serialized_requests
from tensorwire.protos import inference_pb2 as pb

UNARY_METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
DISTINCT_PAYLOADS = 8  # different random requests per point, cycled, so no server can answer from a cache
START_LEAD_S = 0.3  # the window opens this long after the job is sent, so every process starts together
ERROR_TAG = b"\n"  # ModelStreamInferResponse field 1 (error_message) comes first when it is set


# ---- one client process's share of one point ---------------------------------------------------------


@dataclass
class Job:
    """What one client process runs for one point."""

    url: str
    stream: bool
    payloads: list[bytes]
    workers: int
    channels: int
    start_wall: float  # time.time() at which the warm-up starts
    warmup_s: float
    duration_s: float
    timeout_s: float
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Sample:
    """What one client process measured: latencies of the successes inside the window, in ns, and the errors."""

    latencies_ns: bytes = b""
    errors: int = 0
    first_error: str | None = None


class _Recorder:
    def __init__(self, measure_from: int, measure_to: int) -> None:
        self.measure_from = measure_from
        self.measure_to = measure_to
        self.latencies = array("q")
        self.errors = 0
        self.first_error: str | None = None

    def record(self, started: int, finished: int, error: str | None) -> None:
        if not self.measure_from <= finished <= self.measure_to:
            return
        if error is None:
            self.latencies.append(finished - started)
        else:
            self.errors += 1
            self.first_error = self.first_error or error


async def _unary_worker(channel: grpc.aio.Channel, job: Job, offset: int, recorder: _Recorder) -> None:
    call = channel.unary_unary(UNARY_METHOD)  # bytes in, bytes out: nothing encoded or decoded here
    payloads = job.payloads
    metadata = job.headers or None
    i = offset
    while True:
        started = time.perf_counter_ns()
        if started >= recorder.measure_to:
            return
        error = None
        try:
            await call(payloads[i % len(payloads)], timeout=job.timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            error = f"{exc.code().name}: {exc.details()}"
        recorder.record(started, time.perf_counter_ns(), error)
        i += 1


async def _stream_worker(channel: grpc.aio.Channel, job: Job, offset: int, recorder: _Recorder) -> None:
    """One stream per worker, request and answer in lock-step; a broken stream is counted and reopened."""
    method = channel.stream_stream(STREAM_METHOD)
    payloads = job.payloads
    i = offset
    while time.perf_counter_ns() < recorder.measure_to:
        remaining_s = (recorder.measure_to - time.perf_counter_ns()) / 1e9
        call = method(timeout=remaining_s + job.timeout_s, metadata=job.headers or None)
        started = time.perf_counter_ns()
        try:
            while started < recorder.measure_to:
                await call.write(payloads[i % len(payloads)])
                answer = await call.read()
                if answer is grpc.aio.EOF:
                    recorder.record(started, time.perf_counter_ns(), "stream closed by the server")
                    break
                error = None
                if answer[:1] == ERROR_TAG:
                    error = pb.ModelStreamInferResponse.FromString(answer).error_message or "stream error"
                recorder.record(started, time.perf_counter_ns(), error)
                i += 1
                started = time.perf_counter_ns()
            else:
                await call.done_writing()
        except grpc.aio.AioRpcError as exc:
            recorder.record(started, time.perf_counter_ns(), f"{exc.code().name}: {exc.details()}")
        finally:
            call.cancel()


async def _run_job_async(job: Job) -> Sample:
    start = time.perf_counter_ns() + int((job.start_wall - time.time()) * 1e9)
    recorder = _Recorder(start + int(job.warmup_s * 1e9), start + int((job.warmup_s + job.duration_s) * 1e9))
    n_channels = max(1, min(job.channels, job.workers))
    channels = [
        grpc.aio.insecure_channel(
            job.url, options=channel_options(i, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, keepalive=None, extra=())
        )
        for i in range(n_channels)
    ]
    try:
        await asyncio.sleep(max(0.0, (start - time.perf_counter_ns()) / 1e9))
        worker = _stream_worker if job.stream else _unary_worker
        await asyncio.gather(*(worker(channels[w % n_channels], job, w, recorder) for w in range(job.workers)))
    finally:
        for channel in channels:
            await channel.close()
    return Sample(recorder.latencies.tobytes(), recorder.errors, recorder.first_error)


def run_job(job: Job) -> Sample:
    return asyncio.run(_run_job_async(job))


def _serve_jobs(connection: multiprocessing.connection.Connection) -> None:
    """A client process: say it is ready, then run each job it is sent until it is sent None."""
    connection.send("ready")
    while (job := connection.recv()) is not None:
        connection.send(run_job(job))
    connection.close()


class ClientProcesses:
    """P spawned processes that run jobs; with P == 1 jobs run in this process (no start-up cost)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._connections: list[multiprocessing.connection.Connection] = []
        self._processes: list[Any] = []
        if count == 1:
            return
        context = multiprocessing.get_context("spawn")  # gRPC does not survive fork
        for _ in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=_serve_jobs, args=(child,), daemon=True)
            process.start()
            child.close()
            self._connections.append(parent)
            self._processes.append(process)
        for connection in self._connections:
            if connection.recv() != "ready":
                raise RuntimeError("a bench client process failed to start")

    def run(self, jobs: Sequence[Job | None]) -> list[Sample]:
        """Run jobs[i] in process i (None: that process sits this point out)."""
        if self.count == 1:
            return [run_job(job) for job in jobs if job is not None]
        busy = [(c, j) for c, j in zip(self._connections, jobs) if j is not None]
        for connection, job in busy:
            connection.send(job)
        return [connection.recv() for connection, _ in busy]

    def close(self) -> None:
        for connection in self._connections:
            try:
                connection.send(None)
                connection.close()
            except OSError:
                pass
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()

    def __enter__(self) -> ClientProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- points, sweeps and reports -----------------------------------------------------------------------


@dataclass
class Point:
    batch: int
    concurrency: int
    requests: int
    errors: int
    requests_per_s: float
    rows_per_s: float
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    first_error: str | None = None


def summarize(batch: int, rows: int, concurrency: int, duration_s: float, samples: Sequence[Sample]) -> Point:
    latencies = np.concatenate([np.frombuffer(s.latencies_ns, dtype=np.int64) for s in samples] or [np.empty(0, np.int64)])
    errors = sum(s.errors for s in samples)
    first_error = next((s.first_error for s in samples if s.first_error), None)
    if latencies.size:
        p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
        values = {"p50": p50, "p90": p90, "p99": p99, "mean": latencies.mean(), "max": latencies.max()}
        latency: dict[str, float | None] = {k: round(float(v) / 1e6, 4) for k, v in values.items()}
    else:
        latency = dict.fromkeys(("p50", "p90", "p99", "mean", "max"))
    rps = latencies.size / duration_s
    return Point(batch, concurrency, int(latencies.size), errors, round(rps, 2), round(rps * rows, 2), latency, first_error)


def split(total: int, parts: int) -> list[int]:
    """`total` workers over `parts` processes, as evenly as possible."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"tensorwire bench: model '{report['model']}' at {report['url']}, {report['mode']}, "
        f"{report['duration_s']:g} s per point after {report['warmup_s']:g} s warm-up, "
        f"{report['processes']} client process(es) x {report['channels']} channel(s)",
        f"{'batch':>7} {'concurrency':>11} {'requests/s':>12} {'rows/s':>13} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'errors':>7}",
    ]

    def ms(value: float | None) -> str:
        return f"{value:9.3f}" if value is not None else f"{'-':>9}"

    for p in report["points"]:
        latency = p["latency_ms"]
        lines.append(
            f"{p['batch']:>7} {p['concurrency']:>11} {p['requests_per_s']:>12.1f} {p['rows_per_s']:>13.1f} "
            f"{ms(latency['p50'])} {ms(latency['p90'])} {ms(latency['p99'])} {p['errors']:>7}"
        )
    for p in report["points"]:
        if p["first_error"]:
            lines.append(f"batch {p['batch']}, concurrency {p['concurrency']}: {p['errors']} errors; first: {p['first_error']}")
    return "\n".join(lines)


CSV_COLUMNS = ["batch", "concurrency", "requests", "errors", "requests_per_s", "rows_per_s", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms"]


def format_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in report["points"]:
        latency = p["latency_ms"]
        writer.writerow(
            [p["batch"], p["concurrency"], p["requests"], p["errors"], f"{p['requests_per_s']:.3f}", f"{p['rows_per_s']:.3f}"]
            + ["" if latency[k] is None else f"{latency[k]:.4f}" for k in ("p50", "p90", "p99", "mean", "max")]
        )
    return out.getvalue()


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(report: dict[str, Any], path: str) -> None:
    """Throughput against p99 latency (p50 dashed), one curve per batch size, each point labelled with its concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for batch in sorted({p["batch"] for p in report["points"]}):
        points = [p for p in report["points"] if p["batch"] == batch and p["latency_ms"]["p99"] is not None]
        x = [p["rows_per_s"] for p in points]
        (line,) = axes.plot(x, [p["latency_ms"]["p99"] for p in points], marker="o", label=f"batch {batch}, p99")
        axes.plot(x, [p["latency_ms"]["p50"] for p in points], linestyle="--", color=line.get_color(), label=f"batch {batch}, p50")
        for p in points:
            axes.annotate(f"c{p['concurrency']}", (p["rows_per_s"], p["latency_ms"]["p99"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlabel("throughput, rows/s")
    axes.set_ylabel("latency, ms")
    axes.set_title(f"{report['model']} at {report['url']} ({report['mode']})")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ---- the command ---------------------------------------------------------------------------------------


class BenchError(Exception):
    """A problem to report in one line, before any load is sent."""


def _resolve_inputs(args: argparse.Namespace) -> list[InputSpec]:
    from tensorwire.client.client import InferenceClient
    from tensorwire.client.errors import InferenceServerError

    try:
        with InferenceClient(args.url, retry=None) as client:
            metadata = client.model_metadata(args.model, version=args.version or None, timeout=10)
            if not client.model_ready(args.model, version=args.version or None, timeout=10):
                raise BenchError(f"model '{args.model}' is not ready on {args.url}")
    except InferenceServerError as exc:
        raise BenchError(f"cannot read model '{args.model}' metadata from {args.url}: {exc}") from None
    specs = input_specs(metadata)
    if args.input_name or args.datatype or args.shape:
        if len(specs) > 1:
            raise BenchError(f"model '{args.model}' has {len(specs)} inputs; --input-name/--datatype/--shape fit single-input models")
        base = specs[0] if specs else InputSpec(args.input_name or "input", args.datatype or "", ())
        shape = base.shape
        if args.shape:
            try:
                shape = (-1, *(int(d) for d in args.shape.split(",")))
            except ValueError:
                raise BenchError(f"--shape takes comma-separated integers, got {args.shape!r}") from None
        specs = [InputSpec(args.input_name or base.name, (args.datatype or base.datatype).upper(), shape)]
    if not specs:
        raise BenchError(f"the server declares no inputs for model '{args.model}': give --input-name, --datatype and --shape")
    from tensorwire.protos.codec import DATATYPES

    for spec in specs:
        if spec.datatype not in DATATYPES:
            raise BenchError(f"input '{spec.name}' has datatype '{spec.datatype}', which the bench cannot generate")
        if not spec.shape:
            raise BenchError(f"input '{spec.name}' declares no shape: give --shape")
    return specs


def run_bench(args: argparse.Namespace) -> int:
    """Run the sweep that `args` describes and print its report; 0: no error, 1: some requests failed, 2: could not run."""

    def fail(message: str) -> int:
        print(f"tensorwire bench: {message}", file=sys.stderr)
        return 2

    if args.plot and not _have_matplotlib():
        return fail("--plot needs matplotlib, which is not installed (pip install matplotlib)")
    if args.processes < 1 or args.channels < 1:
        return fail("--processes and --channels must be at least 1")
    warmup = args.warmup if args.warmup is not None else min(2.0, 0.2 * args.duration)
    try:
        specs = _resolve_inputs(args)
        headers = call_metadata(args.token)
    except (BenchError, ValueError) as exc:
        return fail(str(exc))

    points: list[Point] = []
    with ClientProcesses(args.processes) as processes:
        for batch in args.batch:
            payloads = serialized_requests(args.model, args.version, specs, batch, DISTINCT_PAYLOADS, seed=args.seed)
            rows = rows_per_request(specs, batch)
            for concurrency in args.concurrency:
                if not args.quiet:
                    print(f"batch {batch}, concurrency {concurrency}: {warmup + args.duration:g} s ...", file=sys.stderr, flush=True)
                start = time.time() + (START_LEAD_S if processes.count > 1 else 0.0)
                jobs = [
                    Job(args.url, args.stream, payloads, share, args.channels, start, warmup, args.duration, args.timeout, headers)
                    if share
                    else None
                    for share in split(concurrency, processes.count)
                ]
                points.append(summarize(batch, rows, concurrency, args.duration, processes.run(jobs)))

    report = {
        "tool": "tensorwire bench",
        "url": args.url,
        "model": args.model,
        "version": args.version,
        "mode": "stream" if args.stream else "unary",
        "duration_s": args.duration,
        "warmup_s": warmup,
        "processes": args.processes,
        "channels": args.channels,
        "inputs": [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs],
        "points": [asdict(p) for p in points],
    }
    if args.json or args.csv:
        sys.stdout.write(json.dumps(report, indent=2, allow_nan=False) + "\n" if args.json else format_csv(report))
        for p in points:  # the table shows these itself
            if p.first_error:
                print(f"batch {p.batch}, concurrency {p.concurrency}: {p.errors} errors; first: {p.first_error}", file=sys.stderr)
    else:
        print(format_table(report))
    if args.plot:
        plot(report, args.plot)
        if not args.quiet:
            print(f"plot written to {args.plot}", file=sys.stderr)
    return 1 if any(p.errors for p in points) else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m tensorwire.client.bench ARGS` is `tensorwire bench ARGS`."""
    parser = argparse.ArgumentParser(prog="tensorwire")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
