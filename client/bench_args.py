"""The `tensorwire bench` command line, apart from the load generator (tensorwire.client.bench).

The `tensorwire` command hands `bench ...` to `tensorwire.client.bench.main`, which
builds its parser from here; the serving processes never import the client.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

DESCRIPTION = (
    "A closed-loop load generator for any Open Inference Protocol gRPC server, in the spirit of Triton's "
    "perf_analyzer: for every (batch, concurrency) point, `concurrency` workers each send a request, wait for "
    "its answer and send the next; requests answered inside the measurement window count."
)


def parse_duration(text: str) -> float:
    """Seconds from "10s", "500ms", "2m" or a bare number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 10s, 500ms, 2m)")
    value = float(match.group(1)) * {"ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a duration must be positive, got {text!r}")
    return value


def parse_counts(text: str) -> list[int]:
    """Positive integers from "1,8,32"."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"give positive integers, e.g. 1,8,32 (got {text!r})")
    return values


def default_processes() -> int:
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _run(args: argparse.Namespace) -> Any:
    from tensorwire.client.bench import run_bench

    return run_bench(args)


def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Add the `bench` command to a parser's subcommands; its handler runs client/bench.py's `run_bench`."""
    bench = subparsers.add_parser("bench", help="measure throughput and latency of any Open Inference Protocol gRPC server", description=DESCRIPTION)
    bench.add_argument("--url", required=True, help="server address, HOST:PORT")
    bench.add_argument("--model", required=True, help="model name")
    bench.add_argument("--version", default="", help="model version (default: the server's choice)")
    bench.add_argument("--batch", type=parse_counts, default=[1], help="rows per request, comma-separated (default 1)")
    bench.add_argument("--concurrency", type=parse_counts, default=[1, 8, 32], help="requests in flight, comma-separated (default 1,8,32)")
    bench.add_argument("--stream", action="store_true", help="use ModelStreamInfer: one stream per concurrent worker")
    bench.add_argument("--duration", type=parse_duration, default=10.0, help="measurement window per point (default 10s)")
    bench.add_argument("--warmup", type=parse_duration, default=None, help="warm-up before each window (default: 20%% of it, at most 2s)")
    bench.add_argument("--processes", type=int, default=default_processes(), help="client processes (default: half the cores, at most 4)")
    bench.add_argument("--channels", type=int, default=4, help="connections per client process (default 4)")
    bench.add_argument("--timeout", type=parse_duration, default=30.0, help="per-request deadline (default 30s)")
    bench.add_argument("--token", default=None, help="bearer token, sent as 'authorization: Bearer TOKEN'")
    bench.add_argument("--input-name", default=None, help="input name, for servers whose metadata declares none")
    bench.add_argument("--datatype", default=None, help="input datatype (FP32, FP64, ...), overriding the metadata")
    bench.add_argument("--shape", default=None, help="input dimensions after the batch, e.g. 4 or 3,32 (overriding the metadata)")
    bench.add_argument("--seed", type=int, default=0, help="random seed of the inputs")
    out = bench.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    out.add_argument("--csv", action="store_true", help="print CSV instead of the table")
    bench.add_argument("--plot", default=None, metavar="OUT.png", help="also draw throughput against latency (needs matplotlib)")
    bench.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    bench.set_defaults(handler=_run)
    return bench
