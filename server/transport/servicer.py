"""gRPC glue shared by both serving engines: the RPC table, error mapping, health statuses, reflection, the drain.

Method handlers are built from the service descriptor, so the proto file is the
single list of RPCs; each engine (server/transport/engine_aio.py, server/transport/engine_sync.py)
supplies the adapters that call InferenceHandler in its own way. Domain errors
become gRPC statuses here and nowhere else.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message
from grpc_health.v1 import health_pb2

from tensorwire.protos import inference_pb2 as pb
from tensorwire.protos.descriptors import POOL
from tensorwire.server.config import ServerConfig
from tensorwire.server.errors import InvalidRequestError, TensorwireError, UnsupportedError, bounded, undecodable
from tensorwire.server.inference.handler import InferenceHandler
from tensorwire.server.transport.call_limits import PROBE_RESERVE
from tensorwire.server.transport.reflection import add_file_once, serve_reflection

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICE_NAME = SERVICE.full_name
STREAM_METHOD = "ModelStreamInfer"
INFER_METHOD = "ModelInfer"
PROBE_METHODS = frozenset({"ServerLive", "ServerReady"})  # with health Check: outside --max-inflight, on the probes' reserve
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
MESSAGE_CLASSES: dict[str, type[message.Message]] = {
    descriptor.full_name: getattr(pb, descriptor.name) for descriptor in pb.DESCRIPTOR.message_types_by_name.values()
}
PUBLIC_HEALTH_SERVICES = ("", SERVICE_NAME)  # what a health caller without a token may ask about
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DRAIN_QUIET_SECONDS = 0.05  # no new inference call for this long: every client waits on a held one
DRAIN_HOLD_MAX_SECONDS = 1.0  # clients that never wait for answers do not delay a shutdown longer


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, TensorwireError):
        return exc.code, bounded(str(exc))
    log.exception("internal error")
    return grpc.StatusCode.INTERNAL, bounded(f"internal error: {type(exc).__name__}: {exc}")


def deadline_after(remaining: float | None) -> float | None:
    """A call's time_remaining() as a time.monotonic() deadline."""
    return None if remaining is None else time.monotonic() + remaining


@dataclass(frozen=True)
class Undecodable:
    """Stands for request bytes that protobuf could not parse (answered INVALID_ARGUMENT, quietly)."""

    message_type: str

    def error(self) -> InvalidRequestError:
        return undecodable(self.message_type)


def _lenient(cls: type[message.Message]) -> Callable[[bytes], Any]:
    """A deserializer that never raises: gRPC would log a traceback per garbage request and answer INTERNAL."""

    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except message.DecodeError:
            return Undecodable(cls.DESCRIPTOR.full_name)

    return parse


def stream_error(request: Any, exc: Exception) -> bytes:
    """A ModelStreamInferResponse carrying a failure: on a stream, an error rides in its own message and the stream goes on."""
    _, details = status_of(exc)
    model_name, request_id = ("", "") if isinstance(request, Undecodable) else (request.model_name, request.id)
    error = pb.ModelStreamInferResponse(error_message=details, infer_response=pb.ModelInferResponse(model_name=model_name, id=request_id))
    return error.SerializeToString()


def inference_service(
    handler: InferenceHandler, infer: Callable[..., Any], stream_infer: Callable[..., Any], other: Callable[[Callable[[Any], message.Message], bool], Callable[..., Any]]
) -> grpc.GenericRpcHandler:
    """A generic handler serving every RPC of the proto's service: `infer` and `stream_infer` answer
    serialised bytes; `other(method, counted)` adapts each of the handler's other methods (or a refusal)
    to the engine, `counted` false for probes, which --max-inflight never refuses."""
    methods: dict[str, grpc.RpcMethodHandler] = {}
    for method in SERVICE.methods:
        parse = _lenient(MESSAGE_CLASSES[method.input_type.full_name])
        serialize = MESSAGE_CLASSES[method.output_type.full_name].SerializeToString
        if method.name == STREAM_METHOD:
            methods[method.name] = grpc.stream_stream_rpc_method_handler(stream_infer, parse, None)
        elif method.name == INFER_METHOD:  # bytes in and out: the handler parses only what no request plan covers
            methods[method.name] = grpc.unary_unary_rpc_method_handler(infer, None, None)
        else:
            implementation = getattr(handler, _snake(method.name), None) or _unimplemented(method.name)
            methods[method.name] = grpc.unary_unary_rpc_method_handler(other(implementation, method.name not in PROBE_METHODS), parse, serialize)
    return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)


def _unimplemented(name: str) -> Callable[[Any], message.Message]:
    def call(request: Any) -> message.Message:
        raise UnsupportedError(f"{name} is not implemented by this tensorwire version")

    return call


class HealthStatuses:
    """grpc.health.v1 statuses: the server-wide one (""), the service's, and one per model name."""

    def __init__(self) -> None:
        self._models: set[str] = set()

    def of(self, handler: InferenceHandler) -> dict[str, int]:
        server = SERVING if handler.ready else NOT_SERVING
        statuses = {"": server, SERVICE_NAME: server}
        current = set()
        for entry in handler.repository.entries():
            current.add(entry.name)
            statuses[entry.name] = SERVING if entry.default_version is not None else NOT_SERVING
        for name in self._models - current:  # unloaded since the last update
            statuses[name] = NOT_SERVING
        self._models = current
        return statuses


class DrainClock:
    """When a shutdown may begin: gRPC's shutdown cancels (CANCELLED, which no client retries) every
    call it has received that no handler has taken yet, and under load there always are some. So each
    engine first holds inference calls as they arrive; once none has arrived for a moment, the clients
    are all waiting on held calls, nothing is left untaken, and the shutdown (which also tells clients to
    go elsewhere) loses nothing. The held calls are then scored, within the grace period."""

    def __init__(self) -> None:
        self.holding = False
        self.last_arrival = 0.0  # time.monotonic() of the last call held
        self._give_up = 0.0

    def begin(self, grace: float) -> None:
        self.last_arrival = time.monotonic()
        self._give_up = self.last_arrival + min(grace, DRAIN_HOLD_MAX_SECONDS)
        self.holding = True

    def arrived(self) -> None:
        self.last_arrival = time.monotonic()

    def settled(self) -> bool:
        now = time.monotonic()
        return now - self.last_arrival >= DRAIN_QUIET_SECONDS or now >= self._give_up


def add_reflection(server: Any) -> None:
    """Server reflection, v1 and v1alpha, for our service, health and reflection itself (before the server starts)."""
    add_file_once(POOL, health_pb2.DESCRIPTOR.name, health_pb2.DESCRIPTOR.serialized_pb)
    serve_reflection(server, (SERVICE_NAME, HEALTH_SERVICE_NAME), POOL)


def grpc_call_cap(config: ServerConfig) -> int:
    """grpc's own cap on concurrent RPCs: every budget of server/transport/call_limits.py plus the probes' reserve."""
    return config.max_inflight + config.max_streams + config.max_health_watches + PROBE_RESERVE


def inflight_message(config: ServerConfig) -> str:
    return f"this worker is answering {config.max_inflight} calls (--max-inflight); retry later"


def server_options(config: ServerConfig, reuse_port: bool) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_receive_message_length", config.max_receive_bytes),
        ("grpc.max_send_message_length", config.max_send_bytes),
        ("grpc.max_concurrent_streams", config.max_streams_per_connection),  # HTTP/2 streams of one connection
        # workers share the supervisor's port; a lone server never shares one silently
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    if config.max_connection_age_seconds > 0:  # clients reconnect now and then, so they spread again over new pods or workers
        options += [("grpc.max_connection_age_ms", int(config.max_connection_age_seconds * 1000)), ("grpc.max_connection_age_grace_ms", 30_000)]
    return options


def require_free(host: str, port: int) -> None:
    """Fail with a message naming the flag before grpc core tries the port (it would log its own error line)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds: a port in TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror} (--grpc-port picks another port; 0 a free one)") from None


def listen(server: Any, config: ServerConfig, *, reuse_port: bool) -> int:
    """Bind the configured address (TLS if configured) and return the port."""
    address = f"{config.host}:{config.grpc_port}"
    if not reuse_port:
        require_free(config.host, config.grpc_port)
    try:
        tls = config.tls()
        port = server.add_secure_port(address, tls.credentials()) if tls is not None else server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises where older versions returned 0
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {address} (in use, or not an address of this machine)")
    return int(port)
