"""An Open Inference Protocol server that does no inference: the floor under tensorwire's cost.

It serves `inference.GRPCInferenceService` with the same gRPC setup as
tensorwire's aio engine (grpc.aio, its handler a coroutine run on the event loop,
the same message size limits, a generic method handler) but answers ModelInfer
without decoding a tensor or computing anything: the request's first raw input
is echoed back as the one raw output `echo`, with the input's datatype and
shape. The protobuf envelope is parsed and a response is serialised, as any
Open Inference Protocol server must; everything tensorwire does beyond that
(tensor decode, validation, scoring, output encoding, statistics) is what a
comparison against this server isolates.

`--api sync` serves the same handler from grpcio's classic server instead
(`grpc.server` with a ThreadPoolExecutor of 8 threads: tensorwire's sync engine
with its default --threads, and the do-nothing server most grpcio services are
built like).

    python benchmarks/echo_server.py --port 0                # prints "listening on 127.0.0.1:PORT"
    python benchmarks/echo_server.py --port 0 --workers 2    # one process per worker, one shared port
    python benchmarks/echo_server.py --port 0 --api sync     # grpcio's thread-pool server

With `--workers N` (N > 1) it runs tensorwire's process model: a parent that
creates no gRPC object reserves the port with SO_REUSEPORT and spawns N worker
processes, each with its own gRPC server bound to that port with
`grpc.so_reuseport` (the kernel spreads connections over the workers). The
"listening on" line is printed once every worker is serving. `--workers 1`
(the default) is one process, as `tensorwire serve --workers 1`.

Only ServerLive, ServerReady and ModelInfer are served.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import multiprocessing
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import grpc
from google.protobuf.message import Message
from tensorwire.protos import inference_pb2 as pb

SERVICE_NAME = "inference.GRPCInferenceService"
THREADS = 8  # --api sync: as tensorwire serve's default --threads
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # as tensorwire serve's default limits
WORKER_START_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG = 1


def echo_response(request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    """One raw output holding the first raw input's bytes, shaped like that input."""
    response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
    if request.inputs and request.raw_input_contents:
        tensor = request.inputs[0]
        response.outputs.add(name="echo", datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(request.raw_input_contents[0])
    return response


ANSWERS: dict[str, tuple[Callable[[Any], Message], type[Message], type[Message]]] = {
    "ModelInfer": (echo_response, pb.ModelInferRequest, pb.ModelInferResponse),
    "ServerLive": (lambda request: pb.ServerLiveResponse(live=True), pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (lambda request: pb.ServerReadyResponse(ready=True), pb.ServerReadyRequest, pb.ServerReadyResponse),
}


def echo_service(api: str) -> grpc.GenericRpcHandler:
    """The three RPCs, bound by name like tensorwire's servicer binds its handler: coroutines for
    grpc.aio (run on its event loop, as tensorwire's quick requests are), functions for the sync server."""

    def bind(answer: Callable[[Any], Message]) -> Callable[..., Any]:
        if api == "aio":

            async def call_async(request: Any, context: Any) -> Message:
                return answer(request)

            return call_async
        return lambda request, context: answer(request)

    methods = {
        name: grpc.unary_unary_rpc_method_handler(bind(answer), request_cls.FromString, response_cls.SerializeToString)
        for name, (answer, request_cls, response_cls) in ANSWERS.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)


def _options(reuse_port: bool) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]


def _bind(server: Any, host: str, port: int) -> int:
    try:
        bound = int(server.add_insecure_port(f"{host}:{port}"))
    except RuntimeError:  # grpcio raises where older versions returned 0
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    return bound


def serve(api: str, host: str, port: int, on_started: Callable[[int], None], *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM or SIGINT (then stop with 1 s grace); on_started gets the bound port."""
    if api == "aio":
        asyncio.run(_serve_aio(host, port, on_started, reuse_port))
        return
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="echo-rpc"), options=_options(reuse_port))
    server.add_generic_rpc_handlers((echo_service(api),))
    bound = _bind(server, host, port)
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=lambda: (server.stop(1).wait(), stopped.set()), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    on_started(bound)
    stopped.wait()


async def _serve_aio(host: str, port: int, on_started: Callable[[int], None], reuse_port: bool) -> None:
    server = grpc.aio.server(options=_options(reuse_port))
    server.add_generic_rpc_handlers((echo_service("aio"),))
    bound = _bind(server, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    on_started(bound)
    await stop.wait()
    await server.stop(1)


# ---- --workers N: tensorwire's process model ------------------------------------


def reserve_port(host: str, port: int) -> socket.socket:
    """Hold host:port with SO_REUSEPORT so that the workers can share it (as tensorwire's supervisor does).

    A plain bind first proves the port free, so that a stale server holding it
    with SO_REUSEPORT cannot share it silently.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, port))
        port = probe.getsockname()[1]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def worker_main(api: str, host: str, port: int, conn: Connection) -> None:
    """Entry point of a spawned worker: its own gRPC server on the shared port."""
    if sys.platform.startswith("linux"):  # never outlive the parent
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass

    def report(bound: int) -> None:
        conn.send("ok")
        conn.close()

    try:
        serve(api, host, port, report, reuse_port=True)
    except Exception as exc:  # noqa: BLE001  (a failure to start goes to the parent, which reports it)
        if not conn.closed:
            conn.send(f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None


def serve_workers(api: str, host: str, port: int, workers: int) -> None:
    """Reserve the port, spawn the workers (no gRPC object exists in this process), wait for a signal."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.set())
    context = multiprocessing.get_context("spawn")
    with reserve_port(host, port) as reserved:
        port = reserved.getsockname()[1]
        processes: list[BaseProcess] = []
        try:
            pipes = []
            for index in range(workers):
                parent_end, child_end = context.Pipe(duplex=False)
                worker: BaseProcess = context.Process(target=worker_main, args=(api, host, port, child_end), name=f"echo-worker-{index}")
                worker.start()
                child_end.close()
                processes.append(worker)
                pipes.append(parent_end)
            for index, pipe in enumerate(pipes):
                if not pipe.poll(WORKER_START_TIMEOUT_S):
                    raise RuntimeError(f"echo worker {index} did not start")
                answer = pipe.recv()
                if answer != "ok":
                    raise RuntimeError(f"echo worker {index}: {answer}")
            print(f"listening on {host}:{port} ({workers} workers)", flush=True)
            while not stopping.is_set() and all(p.is_alive() for p in processes):
                stopping.wait(0.2)
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()  # SIGTERM: the worker stops its server (1 s grace)
            deadline = time.monotonic() + 5
            for process in processes:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    process.kill()
                    process.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the port (default 1: one process)")
    parser.add_argument("--api", choices=("aio", "sync"), default="aio", help="grpc.aio as tensorwire (default), or grpcio's thread-pool server")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1:
        serve_workers(args.api, args.host, args.port, args.workers)
        return
    serve(args.api, args.host, args.port, lambda bound: print(f"listening on {args.host}:{bound}", flush=True))


if __name__ == "__main__":
    main()
