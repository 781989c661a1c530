"""gRPC glue: binds InferenceHandler to `inference.GRPCInferenceService`, plus health and reflection.

Method handlers are built from the service descriptor, so the proto file is the
single list of RPCs. Domain errors become gRPC statuses here and nowhere else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from tensorwire.protos import inference_pb2 as pb
from tensorwire.protos._pool import POOL
from tensorwire.server.errors import InvalidRequestError, TensorwireError, UnsupportedError
from tensorwire.server.handler import InferenceHandler

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICE_NAME = SERVICE.full_name
STREAM_METHOD = "ModelStreamInfer"
INFER_METHOD = "ModelInfer"
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
MESSAGE_CLASSES: dict[str, type[message.Message]] = {
    descriptor.full_name: getattr(pb, descriptor.name) for descriptor in pb.DESCRIPTOR.message_types_by_name.values()
}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, TensorwireError):
        return exc.code, str(exc)
    log.exception("internal error")
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def _deadline(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


@dataclass(frozen=True)
class Undecodable:
    """Stands for request bytes that protobuf could not parse (answered INVALID_ARGUMENT, quietly)."""

    message_type: str

    def error(self) -> InvalidRequestError:
        return InvalidRequestError(f"the request bytes are not a valid {self.message_type} message")


def _lenient(cls: type[message.Message]) -> Callable[[bytes], Any]:
    """A deserializer that never raises: gRPC would log a traceback per garbage request and answer INTERNAL."""

    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except message.DecodeError:
            return Undecodable(cls.DESCRIPTOR.full_name)

    return parse


Method = Callable[[Any, grpc.ServicerContext], message.Message]


def _unary(method: Method) -> Method:
    def call(request: Any, context: grpc.ServicerContext) -> message.Message:
        try:
            if isinstance(request, Undecodable):
                raise request.error()
            return method(request, context)
        except Exception as exc:  # every failure leaves as a status, never as a crash
            code, details = _status_of(exc)
            context.abort(code, details)
            raise  # unreachable: abort raises

    return call


def _stream_infer(handler: InferenceHandler) -> Callable[[Iterator[Any], grpc.ServicerContext], Iterator[pb.ModelStreamInferResponse]]:
    """Bidirectional inference: an error rides in its own message and the stream goes on."""

    def call(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[pb.ModelStreamInferResponse]:
        for request in requests:
            if not context.is_active():  # the client cancelled: stop working for it
                return
            try:
                if isinstance(request, Undecodable):
                    raise request.error()
                yield pb.ModelStreamInferResponse(infer_response=handler.model_infer(request, _deadline(context)))
            except Exception as exc:
                _, details = _status_of(exc)
                model_name, request_id = ("", "") if isinstance(request, Undecodable) else (request.model_name, request.id)
                yield pb.ModelStreamInferResponse(error_message=details, infer_response=pb.ModelInferResponse(model_name=model_name, id=request_id))

    return call


def inference_service(handler: InferenceHandler) -> grpc.GenericRpcHandler:
    """A generic handler serving every RPC of the proto's service that the handler implements."""
    methods: dict[str, grpc.RpcMethodHandler] = {}
    for method in SERVICE.methods:
        parse = _lenient(MESSAGE_CLASSES[method.input_type.full_name])
        serialize = MESSAGE_CLASSES[method.output_type.full_name].SerializeToString
        if method.name == STREAM_METHOD:
            methods[method.name] = grpc.stream_stream_rpc_method_handler(_stream_infer(handler), parse, serialize)
        elif method.name == INFER_METHOD:
            infer: Method = lambda request, context: handler.model_infer(request, _deadline(context))  # noqa: E731
            methods[method.name] = grpc.unary_unary_rpc_method_handler(_unary(infer), parse, serialize)
        else:
            implementation = getattr(handler, _snake(method.name), None) or _unimplemented(method.name)
            methods[method.name] = grpc.unary_unary_rpc_method_handler(_unary(_ignoring_context(implementation)), parse, serialize)
    return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)


def _ignoring_context(implementation: Callable[[Any], message.Message]) -> Method:
    return lambda request, context: implementation(request)


def _unimplemented(name: str) -> Callable[[Any], message.Message]:
    def call(request: Any) -> message.Message:
        raise UnsupportedError(f"{name} is not implemented by this tensorwire version")

    return call


class HealthReporter:
    """grpc.health.v1: the server-wide status ("") and one status per model name."""

    def __init__(self) -> None:
        self.servicer = health.HealthServicer()
        self._models: set[str] = set()

    def update(self, handler: InferenceHandler) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        self.servicer.set("", serving if handler.ready else not_serving)
        self.servicer.set(SERVICE_NAME, serving if handler.ready else not_serving)
        current = set()
        for entry in handler.repository.entries():
            current.add(entry.name)
            self.servicer.set(entry.name, serving if entry.default_version is not None else not_serving)
        for name in self._models - current:  # unloaded since the last update
            self.servicer.set(name, not_serving)
        self._models = current

    def shutdown(self) -> None:
        self.servicer.enter_graceful_shutdown()


def add_services(server: grpc.Server, handler: InferenceHandler) -> HealthReporter:
    """Register the inference service, health and reflection on a server (before it starts)."""
    server.add_generic_rpc_handlers((inference_service(handler),))
    reporter = HealthReporter()
    health_pb2_grpc.add_HealthServicer_to_server(reporter.servicer, server)
    _add_to_private_pool(health_pb2.DESCRIPTOR.serialized_pb, reflection_pb2.DESCRIPTOR.serialized_pb)
    reflection.enable_server_reflection(
        (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server, pool=POOL
    )
    return reporter


def _add_to_private_pool(*serialized_files: bytes) -> None:
    """Let reflection describe health and reflection itself from the same pool as our service."""
    for serialized in serialized_files:
        try:
            POOL.AddSerializedFile(serialized)
        except TypeError:
            pass  # already added by an earlier server in this process
