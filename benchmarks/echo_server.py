"""An Open Inference Protocol server that does no inference: the floor under tensorwire's cost.

It serves `inference.GRPCInferenceService` with the same gRPC setup as
tensorwire's server (sync `grpc.server`, a ThreadPoolExecutor of 8 threads,
the same message size limits, a generic method handler) but answers
ModelInfer without decoding a tensor or computing anything: the request's
first raw input is echoed back as the one raw output `echo`, with the input's
datatype and shape. The protobuf envelope is parsed and a response is
serialised, as any Open Inference Protocol server must; everything tensorwire
does beyond that (tensor decode, validation, scoring, output encoding,
statistics) is what a comparison against this server isolates.

    python benchmarks/echo_server.py --port 0                # prints "listening on 127.0.0.1:PORT"
    python benchmarks/echo_server.py --port 0 --workers 2    # one process per worker, one shared port

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
THREADS = 8  # as tensorwire serve's default --threads
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # as tensorwire serve's default limits
WORKER_START_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG = 1


def model_infer(request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
    """One raw output holding the first raw input's bytes, shaped like that input."""
    response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
    if request.inputs and request.raw_input_contents:
        tensor = request.inputs[0]
        response.outputs.add(name="echo", datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(request.raw_input_contents[0])
    return response


def server_live(request: pb.ServerLiveRequest, context: grpc.ServicerContext) -> pb.ServerLiveResponse:
    return pb.ServerLiveResponse(live=True)


def server_ready(request: pb.ServerReadyRequest, context: grpc.ServicerContext) -> pb.ServerReadyResponse:
    return pb.ServerReadyResponse(ready=True)


def echo_service() -> grpc.GenericRpcHandler:
    """The three RPCs, bound by name like tensorwire's servicer binds its handler."""

    def unary(fn: Callable[[Any, grpc.ServicerContext], Message], request_cls: type[Message], response_cls: type[Message]) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(fn, request_cls.FromString, response_cls.SerializeToString)

    methods = {
        "ModelInfer": unary(model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
        "ServerLive": unary(server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": unary(server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)


def build_server(host: str, port: int, *, reuse_port: bool = False) -> tuple[grpc.Server, int]:
    """A configured, not yet started server and the port it bound (shared with SO_REUSEPORT if asked)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="echo-rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )
    server.add_generic_rpc_handlers((echo_service(),))
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpcio raises where older versions returned 0
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    return server, bound


def serve_until_signal(server: grpc.Server, on_started: Callable[[], None]) -> None:
    """Start the server, call on_started, and stop (1 s grace) on SIGTERM or SIGINT."""
    stopped = threading.Event()

    def drain() -> None:
        server.stop(1).wait()
        stopped.set()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=drain, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    on_started()
    stopped.wait()


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


def worker_main(host: str, port: int, conn: Connection) -> None:
    """Entry point of a spawned worker: its own gRPC server on the shared port."""
    if sys.platform.startswith("linux"):  # never outlive the parent
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass
    try:
        server, _ = build_server(host, port, reuse_port=True)
    except Exception as exc:  # noqa: BLE001  (any failure goes to the parent, which reports it)
        conn.send(f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None

    def report() -> None:
        conn.send("ok")
        conn.close()

    serve_until_signal(server, report)


def serve_workers(host: str, port: int, workers: int) -> None:
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
                worker: BaseProcess = context.Process(target=worker_main, args=(host, port, child_end), name=f"echo-worker-{index}")
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
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1:
        serve_workers(args.host, args.port, args.workers)
        return
    server, port = build_server(args.host, args.port)
    serve_until_signal(server, lambda: print(f"listening on {args.host}:{port}", flush=True))


if __name__ == "__main__":
    main()
