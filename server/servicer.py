"""gRPC glue: binds InferenceHandler to `inference.GRPCInferenceService`, plus health and reflection.

Method handlers are built from the service descriptor, so the proto file is the
single list of RPCs. They are grpc.aio coroutines on one event loop. Domain errors become gRPC statuses here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf import message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from tensorwire.protos import inference_pb2 as pb
from tensorwire.protos._pool import POOL
from tensorwire.protos.wire import stream_infer_response
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


Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
AsyncMethod: TypeAlias = Callable[[Any, Context], Awaitable[Any]]  # answers a message, or its serialised bytes


def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, TensorwireError):
        return exc.code, str(exc)
    log.exception("internal error")
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def _deadline(context: Context) -> float | None:
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


def _unary(method: AsyncMethod) -> AsyncMethod:
    async def call(request: Any, context: Context) -> Any:
        try:
            if isinstance(request, Undecodable):
                raise request.error()
            return await method(request, context)
        except Exception as exc:  # every failure leaves as a status, never as a crash
            code, details = _status_of(exc)
            await context.abort(code, details)
            raise  # unreachable: abort raises

    return call


class Drain:
    """Inference calls that arrive once a shutdown has begun wait here until it is safe to serve them
    (see Server._drain_and_stop). Lives on the server's event loop."""

    def __init__(self) -> None:
        self.holding = False
        self.last_arrival = 0.0  # time.monotonic() of the last call held
        self._released = asyncio.Event()

    async def hold(self) -> None:
        self.last_arrival = time.monotonic()
        await self._released.wait()

    def release(self) -> None:
        self._released.set()


async def _scored(handler: InferenceHandler, pool: Executor, drain: Drain, request: Any, context: Context) -> bytes:
    """A quick request is scored right here on the event loop (no thread hand-off: the cheapest path
    grpc.aio offers); a long one goes to the pool, so that it never stalls the others."""
    if drain.holding:
        await drain.hold()
    if isinstance(request, Undecodable):
        raise request.error()
    deadline = _deadline(context)
    model = handler.model_of(request)
    if handler.is_quick(model, request):
        return handler.score_request(model, request, deadline)
    return await asyncio.get_running_loop().run_in_executor(pool, handler.score_request, model, request, deadline)


def _infer(handler: InferenceHandler, pool: Executor, drain: Drain) -> AsyncMethod:
    return _unary(lambda request, context: _scored(handler, pool, drain, request, context))


def _in_pool(implementation: Callable[[Any], message.Message], pool: Executor) -> AsyncMethod:
    """Every other RPC runs in the pool: loading a model or gathering statistics waits on other workers."""

    async def call(request: Any, context: Context) -> message.Message:
        return await asyncio.get_running_loop().run_in_executor(pool, implementation, request)

    return call


def _stream_infer(handler: InferenceHandler, pool: Executor, drain: Drain) -> Callable[[AsyncIterator[Any], Context], AsyncIterator[bytes]]:
    """Bidirectional inference: an error rides in its own message and the stream goes on.

    A cancelled stream needs no check here: grpc.aio cancels this coroutine.
    """

    async def call(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[bytes]:
        async for request in requests:
            try:
                yield stream_infer_response(await _scored(handler, pool, drain, request, context))
            except Exception as exc:
                _, details = _status_of(exc)
                model_name, request_id = ("", "") if isinstance(request, Undecodable) else (request.model_name, request.id)
                error = pb.ModelStreamInferResponse(error_message=details, infer_response=pb.ModelInferResponse(model_name=model_name, id=request_id))
                yield error.SerializeToString()

    return call


def inference_service(handler: InferenceHandler, pool: Executor, drain: Drain) -> grpc.GenericRpcHandler:
    """A generic handler serving every RPC of the proto's service that the handler implements."""
    methods: dict[str, grpc.RpcMethodHandler] = {}
    for method in SERVICE.methods:
        parse = _lenient(MESSAGE_CLASSES[method.input_type.full_name])
        serialize = MESSAGE_CLASSES[method.output_type.full_name].SerializeToString
        if method.name == STREAM_METHOD:
            methods[method.name] = grpc.stream_stream_rpc_method_handler(_stream_infer(handler, pool, drain), parse, None)
        elif method.name == INFER_METHOD:  # no serializer: the handler answers serialised bytes
            methods[method.name] = grpc.unary_unary_rpc_method_handler(_infer(handler, pool, drain), parse, None)
        else:
            implementation = getattr(handler, _snake(method.name), None) or _unimplemented(method.name)
            methods[method.name] = grpc.unary_unary_rpc_method_handler(_unary(_in_pool(implementation, pool)), parse, serialize)
    return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)


def _unimplemented(name: str) -> Callable[[Any], message.Message]:
    def call(request: Any) -> message.Message:
        raise UnsupportedError(f"{name} is not implemented by this tensorwire version")

    return call


class HealthReporter:
    """grpc.health.v1: the server-wide status ("") and one status per model name.

    The servicer lives on the server's event loop; `update` may be called from
    any other thread (a model load, the repository poller) and returns once the
    new statuses are visible.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.servicer = health.aio.HealthServicer()
        self._loop = loop
        self._models: set[str] = set()

    def update(self, handler: InferenceHandler) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        statuses = {"": serving if handler.ready else not_serving, SERVICE_NAME: serving if handler.ready else not_serving}
        current = set()
        for entry in handler.repository.entries():
            current.add(entry.name)
            statuses[entry.name] = serving if entry.default_version is not None else not_serving
        for name in self._models - current:  # unloaded since the last update
            statuses[name] = not_serving
        self._models = current
        self._run(self._set_all(statuses))

    def shutdown(self) -> None:
        self._run(self.servicer.enter_graceful_shutdown())

    async def _set_all(self, statuses: dict[str, int]) -> None:
        for service, status in statuses.items():
            await self.servicer.set(service, status)

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        if not _on_loop(self._loop):  # from the loop itself, waiting would deadlock: it runs next
            future.result()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def add_services(server: grpc.aio.Server, handler: InferenceHandler, pool: Executor, drain: Drain) -> HealthReporter:
    """Register the inference service, health and reflection on a server (on its loop, before it starts)."""
    server.add_generic_rpc_handlers((inference_service(handler, pool, drain),))
    reporter = HealthReporter(asyncio.get_running_loop())
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
