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

    python benchmarks/echo_server.py --port 0     # prints "listening on 127.0.0.1:PORT"

Only ServerLive, ServerReady and ModelInfer are served.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from types import FrameType
from typing import Any

import grpc
from google.protobuf.message import Message

from tensorwire.protos import inference_pb2 as pb

SERVICE_NAME = "inference.GRPCInferenceService"
THREADS = 8  # as tensorwire serve's default --threads
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # as tensorwire serve's default limits


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


def build_server(host: str, port: int) -> tuple[grpc.Server, int]:
    """A configured, not yet started server and the port it bound."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="echo-rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    server.add_generic_rpc_handlers((echo_service(),))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    return server, bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()
    server, port = build_server(args.host, args.port)
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.stop(1).wait()
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    print(f"listening on {args.host}:{port}", flush=True)
    stopped.wait()


if __name__ == "__main__":
    main()
