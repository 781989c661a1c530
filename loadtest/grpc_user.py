"""A reusable Locust user for Open Inference Protocol gRPC servers: one channel per simulated user, every call reported.

Importing this module makes gRPC cooperate with gevent, which runs Locust's
users; it must happen before any gRPC channel exists, so import it at the top
of a locustfile. Requests are serialised ahead of time and answers are not
decoded: the Python client stays as light as it can.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import gevent.queue  # noqa: E402  (after gRPC's gevent set-up, on purpose)
from google.protobuf.message import Message  # noqa: E402
from locust import User  # noqa: E402
from locust.env import Environment  # noqa: E402

from tensorwire.client.channels import DEFAULT_MAX_MESSAGE_BYTES  # noqa: E402
from tensorwire.client.synthetic import InputSpec, input_specs, rows_per_request, serialized_requests  # noqa: E402
from tensorwire.protos import inference_pb2 as pb  # noqa: E402
from tensorwire.protos.codec import DATATYPES  # noqa: E402

log = logging.getLogger(__name__)

SERVICE = "/inference.GRPCInferenceService/"
PAYLOADS_PER_BATCH = 8
ERROR_TAG = b"\n"  # ModelStreamInferResponse field 1 (error_message) comes first when it is set


class RpcFailure(Exception):
    """A failed call as Locust's statistics show it: the status code and the server's message."""


def grpc_target(host: str | None) -> str:
    """HOST:PORT from Locust's --host, which may carry a scheme (grpc://, http://)."""
    if not host:
        raise ValueError("give the server with --host HOST:PORT")
    return host.split("://", 1)[-1].rstrip("/")


@dataclass
class ModelTarget:
    """A model to send load to: its name, version and inputs, and ready-made requests by batch size."""

    name: str
    version: str
    inputs: list[InputSpec]
    _payloads: dict[int, list[bytes]] = field(default_factory=dict)

    def payload(self, batch: int) -> bytes:
        payloads = self._payloads.get(batch)
        if payloads is None:
            payloads = serialized_requests(self.name, self.version, self.inputs, batch, PAYLOADS_PER_BATCH, seed=batch)
            self._payloads[batch] = payloads
        return random.choice(payloads)

    def rows(self, batch: int) -> int:
        return rows_per_request(self.inputs, batch)


class GrpcUser(User):
    """A Locust user with its own gRPC channel to `--host` and helpers that report every call.

    Each call is fired as a Locust request event: `request_type` is the RPC
    (ModelInfer, ModelStreamInfer, ModelMetadata, ...), `name` says which model
    and batch size, so Locust's table and CSV have one row per model.
    """

    abstract = True
    timeout_s: float = 10.0

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.channel = grpc.insecure_channel(
            grpc_target(self.host),
            options=[
                ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
                ("grpc.use_local_subchannel_pool", 1),  # a connection of its own, as a real client would have
            ],
        )
        self._stream: InferStream | None = None
        self._methods: dict[str, grpc.UnaryUnaryMultiCallable] = {}

    def on_stop(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self.channel.close()

    def report(self, request_type: str, name: str, started: float, length: int, error: Exception | None, **context: Any) -> None:
        self.environment.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=error,
            context=context,
        )

    def call(self, method: str, request: bytes | Message, *, name: str, **context: Any) -> bytes | None:
        """One unary RPC; the answer's bytes, or None after a failure (which is reported, not raised)."""
        payload = request if isinstance(request, bytes) else request.SerializeToString()
        started = time.perf_counter()
        try:
            answer: bytes = self._method(method)(payload, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            self.report(method, name, started, 0, RpcFailure(f"{exc.code().name}: {exc.details()}"), **context)  # type: ignore[attr-defined]
            return None
        self.report(method, name, started, len(answer), None, **context)
        return answer

    def _method(self, method: str) -> grpc.UnaryUnaryMultiCallable:
        callable_ = self._methods.get(method)
        if callable_ is None:
            callable_ = self._methods[method] = self.channel.unary_unary(SERVICE + method)  # bytes in, bytes out
        return callable_

    def infer(self, target: ModelTarget, batch: int) -> bytes | None:
        """One unary ModelInfer of `batch` random rows."""
        return self.call("ModelInfer", target.payload(batch), name=f"{target.name} [{batch}]", model=target.name, rows=target.rows(batch))

    def stream_infer(self, target: ModelTarget, batch: int) -> bytes | None:
        """One request and its answer on this user's long-lived ModelStreamInfer stream (opened on first use)."""
        if self._stream is None:
            self._stream = InferStream(self.channel)
        return self._stream.roundtrip(self, target, batch)

    def discover(self, only: Sequence[str] = ()) -> list[ModelTarget]:
        """The models to load, found once per process: the repository index's ready models (or `only`), and their metadata."""
        with _catalog_lock:
            key = (self.host or "", tuple(only))
            if key not in _catalogs:
                _catalogs[key] = self._discover(only)
            return _catalogs[key]

    def _discover(self, only: Sequence[str]) -> list[ModelTarget]:
        names = list(only)
        if not names:
            answer = self.call("RepositoryIndex", pb.RepositoryIndexRequest(ready=True), name="discovery")
            if answer is not None:
                names = sorted({m.name for m in pb.RepositoryIndexResponse.FromString(answer).models})
        targets = []
        for name in names:
            answer = self.call("ModelMetadata", pb.ModelMetadataRequest(name=name), name=name)
            if answer is None:
                continue
            metadata = pb.ModelMetadataResponse.FromString(answer)
            specs = input_specs(metadata)
            unusable = [s.name for s in specs if s.datatype not in DATATYPES or not s.shape]
            if not specs or unusable:
                log.warning("model '%s' skipped: no inputs declared, or no shape or known datatype for %s", name, unusable)
                continue
            targets.append(ModelTarget(name, "", specs))
        if not targets:
            log.error("no model to load on %s (asked for: %s)", self.host, ", ".join(names) or "every ready model")
        return targets


_catalog_lock = threading.Lock()  # gevent-aware: Locust monkey-patches threading
_catalogs: dict[tuple[str, tuple[str, ...]], list[ModelTarget]] = {}


class InferStream:
    """One ModelStreamInfer call used in lock-step: send a request, wait for its answer; reopened after a failure."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._method = channel.stream_stream(SERVICE + "ModelStreamInfer")
        self._outbox: gevent.queue.Queue[bytes | None] | None = None
        self._answers: Any = None

    def _open(self) -> Iterator[bytes]:
        outbox: gevent.queue.Queue[bytes | None] = gevent.queue.Queue()
        self._outbox = outbox
        self._answers = self._method(iter(outbox.get, None))
        return self._answers  # type: ignore[no-any-return]

    def roundtrip(self, user: GrpcUser, target: ModelTarget, batch: int) -> bytes | None:
        answers = self._answers if self._answers is not None else self._open()
        name = f"{target.name} [{batch}]"
        context = {"model": target.name, "rows": target.rows(batch)}
        started = time.perf_counter()
        assert self._outbox is not None
        self._outbox.put(target.payload(batch))
        try:
            answer: bytes = next(answers)
        except (grpc.RpcError, StopIteration) as exc:
            self.close()
            detail = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.RpcError) else "stream closed by the server"  # type: ignore[attr-defined]
            user.report("ModelStreamInfer", name, started, 0, RpcFailure(detail), **context)
            return None
        error = None
        if answer[:1] == ERROR_TAG:
            error = RpcFailure(pb.ModelStreamInferResponse.FromString(answer).error_message or "stream error")
        user.report("ModelStreamInfer", name, started, len(answer), error, **context)
        return None if error else answer

    def close(self) -> None:
        if self._outbox is not None:
            self._outbox.put(None)
        if self._answers is not None:
            self._answers.cancel()
        self._outbox = self._answers = None
