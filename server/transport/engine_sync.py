"""The sync engine: grpcio's thread-pool server, every call answered in one of `--threads` threads.

Each call hops from grpc's poller thread to a pool thread, which costs more
than grpc.aio's single loop when a process has cores to spare; with one worker
process per core the hops are cheaper than the loop's wake-ups (see server/process/app.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any

import grpc
from google.protobuf import message
from grpc_health.v1 import health_pb2_grpc

from tensorwire.protos.wire import stream_infer_response
from tensorwire.server.config import ServerConfig
from tensorwire.server.inference.handler import InferenceHandler
from tensorwire.server.transport.call_limits import CallSlots, OpenStreams
from tensorwire.server.transport.health import HealthAccess, SyncHealthServicer
from tensorwire.server.transport.security import SyncAuthInterceptor
from tensorwire.server.transport.servicer import (
    DRAIN_QUIET_SECONDS,
    PUBLIC_HEALTH_SERVICES,
    DrainClock,
    Undecodable,
    add_reflection,
    deadline_after,
    grpc_call_cap,
    inference_service,
    inflight_message,
    listen,
    server_options,
    status_of,
    stream_error,
)
from tensorwire.server.transport.tokens import TokenStore

log = logging.getLogger(__name__)


class Drain(DrainClock):
    """Holds inference calls once a shutdown has begun (see DrainClock), each in its pool thread."""

    def __init__(self) -> None:
        super().__init__()
        self._released = threading.Event()

    def hold(self) -> None:
        self.arrived()
        self._released.wait()

    def release(self) -> None:
        self._released.set()


class SyncEngine:
    def __init__(self, config: ServerConfig, handler: InferenceHandler, pool: Executor, *, reuse_port: bool) -> None:
        self._handler = handler
        self._drain = Drain()
        self._calls = CallSlots(config.max_inflight)
        self._inflight_message = inflight_message(config)
        self._streams = OpenStreams(config.max_streams, config.stream_idle_seconds)
        tokens = None if config.auth_tokens is None else TokenStore.load(config.auth_tokens or None)
        interceptors = [] if tokens is None else [SyncAuthInterceptor(tokens)]
        server = grpc.server(pool, interceptors=interceptors, maximum_concurrent_rpcs=grpc_call_cap(config), options=server_options(config, reuse_port))
        server.add_generic_rpc_handlers((inference_service(handler, self._infer, self._stream_infer, self._plain),))
        self._health = SyncHealthServicer(HealthAccess(PUBLIC_HEALTH_SERVICES, tokens, config.max_health_watches))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        add_reflection(server)
        self.port = listen(server, config, reuse_port=reuse_port)
        self._server = server

    def start(self) -> None:
        self._server.start()

    def set_health(self, statuses: dict[str, int]) -> None:
        for service, status in statuses.items():
            self._health.set(service, status)

    def shutdown_health(self) -> None:
        self._health.enter_graceful_shutdown()

    def drain_and_stop(self, grace: float) -> None:
        drain = self._drain
        drain.begin(grace)
        while not drain.settled():
            time.sleep(DRAIN_QUIET_SECONDS / 5)
        stopped = self._server.stop(grace)
        time.sleep(DRAIN_QUIET_SECONDS / 5)  # the shutdown has begun: calls that come now are refused, retryably
        drain.release()
        stopped.wait()

    def close(self) -> None:
        pass  # grpcio's server has no thread of its own left once stopped

    # ---- method adapters ---------------------------------------------------------

    def _scored(self, request: Any, context: grpc.ServicerContext) -> bytes:
        if self._drain.holding:
            self._drain.hold()
        if isinstance(request, Undecodable):
            raise request.error()
        return self._handler.model_infer(request, deadline_after(context.time_remaining()))

    def _infer(self, data: bytes, context: grpc.ServicerContext) -> bytes:
        calls = self._calls
        if not calls.take():
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._inflight_message)
        try:
            if self._drain.holding:
                self._drain.hold()
            return self._handler.model_infer_bytes(data, deadline_after(context.time_remaining()))
        except Exception as exc:  # every failure leaves as a status, never as a crash
            context.abort(*status_of(exc))
            raise  # unreachable: abort raises
        finally:
            calls.give_back()

    def _stream_infer(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[bytes]:
        """Runs in a thread of its own (the pool has one per --max-streams); the watchdog cancels it when idle."""
        streams = self._streams
        stream = streams.open(context.cancel)
        if stream is None:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, streams.full_message())
            return
        try:
            for request in requests:
                stream.busy = True
                try:
                    answer = stream_infer_response(self._scored(request, context))
                except Exception as exc:
                    answer = stream_error(request, exc)
                stream.busy = False
                yield answer
                stream.last_active = time.monotonic()
        except grpc.RpcError:  # the client cancelled, or the watchdog closed the stream (the client sees CANCELLED)
            log.debug("ModelStreamInfer stream cancelled%s", " (idle)" if stream.closed_idle else "")
        finally:
            streams.done(stream)

    def _plain(self, implementation: Callable[[Any], message.Message], counted: bool) -> Callable[[Any, grpc.ServicerContext], message.Message]:
        calls = self._calls if counted else None

        def call(request: Any, context: grpc.ServicerContext) -> message.Message:
            if calls is not None and not calls.take():
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._inflight_message)
            try:
                if isinstance(request, Undecodable):
                    raise request.error()
                return implementation(request)
            except Exception as exc:
                context.abort(*status_of(exc))
                raise
            finally:
                if calls is not None:
                    calls.give_back()

        return call
