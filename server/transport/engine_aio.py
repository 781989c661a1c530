"""The grpc.aio engine: one event loop, in a thread of its own, answers every call.

A quick ModelInfer is decoded, scored and answered on the loop with no thread
hand-off, the cheapest path grpc.aio offers; a long one and every other RPC
run in the pool, so that they never stall the quick ones. The cheapest engine
when a worker has more than one core to itself (see server/process/app.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf import message
from grpc_health.v1 import health_pb2_grpc

from tensorwire.protos.wire import stream_infer_response
from tensorwire.server.config import ServerConfig
from tensorwire.server.inference.handler import InferenceHandler, parse_infer_request
from tensorwire.server.transport.call_limits import OpenStreams
from tensorwire.server.transport.health import AioHealthServicer, HealthAccess
from tensorwire.server.transport.security import AuthInterceptor
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

T = TypeVar("T")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class Drain(DrainClock):
    """Holds inference calls once a shutdown has begun (see DrainClock); lives on the event loop."""

    def __init__(self) -> None:
        super().__init__()
        self._released = asyncio.Event()

    async def hold(self) -> None:
        self.arrived()
        await self._released.wait()

    def release(self) -> None:
        self._released.set()


class AioEngine:
    def __init__(self, config: ServerConfig, handler: InferenceHandler, pool: Executor, *, reuse_port: bool) -> None:
        self._config, self._handler, self._pool = config, handler, pool
        self._inflight, self._max_inflight, self._inflight_message = 0, config.max_inflight, inflight_message(config)  # counted on the loop
        self._streams = OpenStreams(config.max_streams, config.stream_idle_seconds)
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="tensorwire-grpc", daemon=True).start()
        try:
            self._server, self.port = self._on_loop(self._build(reuse_port))
        except BaseException:
            self.close()
            raise

    async def _build(self, reuse_port: bool) -> tuple[grpc.aio.Server, int]:
        """The server, built on the loop (grpc.aio, the drain's event and health belong to it)."""
        config = self._config
        self._drain = Drain()
        tokens = None if config.auth_tokens is None else TokenStore.load(config.auth_tokens or None)
        interceptors = [] if tokens is None else [AuthInterceptor(tokens)]
        server = grpc.aio.server(interceptors=interceptors, maximum_concurrent_rpcs=grpc_call_cap(config), options=server_options(config, reuse_port))
        server.add_generic_rpc_handlers((inference_service(self._handler, self._infer, self._stream_infer, self._in_pool),))
        self._health = AioHealthServicer(HealthAccess(PUBLIC_HEALTH_SERVICES, tokens, config.max_health_watches))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        add_reflection(server)
        return server, listen(server, config, reuse_port=reuse_port)

    def _on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def start(self) -> None:
        self._on_loop(self._server.start())

    def set_health(self, statuses: dict[str, int]) -> None:
        """Callable from any thread; returns once the statuses are visible (from the loop: once queued)."""
        self._run(self._set_health(statuses))

    async def _set_health(self, statuses: dict[str, int]) -> None:
        for service, status in statuses.items():
            await self._health.set(service, status)

    def shutdown_health(self) -> None:
        self._run(self._health.enter_graceful_shutdown())

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        if not _running_on(self._loop):  # from the loop itself, waiting would deadlock: it runs next
            future.result()

    def drain_and_stop(self, grace: float) -> None:
        self._on_loop(self._drain_and_stop(grace))

    async def _drain_and_stop(self, grace: float) -> None:
        drain = self._drain
        drain.begin(grace)
        while not drain.settled():
            await asyncio.sleep(DRAIN_QUIET_SECONDS / 5)
        stopping = asyncio.create_task(self._server.stop(grace))
        await asyncio.sleep(DRAIN_QUIET_SECONDS / 5)  # the shutdown has begun: calls that come now are refused, retryably
        drain.release()
        await stopping

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    # ---- method adapters ---------------------------------------------------------

    async def _scored(self, request: Any, context: Context, data: bytes | None = None) -> bytes:
        """A parsed request scored, on the loop if quick, else in the pool; `data`, its bytes, lets the handler plan for the next."""
        if self._drain.holding:
            await self._drain.hold()
        if isinstance(request, Undecodable):
            raise request.error()
        handler = self._handler
        deadline = deadline_after(context.time_remaining())
        model = handler.model_of(request)
        if handler.is_quick(model, request):
            return handler.score_request(model, request, deadline, data)
        return await asyncio.get_running_loop().run_in_executor(self._pool, handler.score_request, model, request, deadline, data)

    async def _infer(self, data: bytes, context: Context) -> bytes:
        if self._inflight >= self._max_inflight:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._inflight_message)
        self._inflight += 1
        try:
            handler = self._handler
            plan = None if self._drain.holding else handler.plan_of(data)
            if plan is not None:  # nearly every call: a quick request, scored here (deadline_after, inlined)
                remaining = context.time_remaining()
                return handler.score_planned(plan, data, None if remaining is None else time.monotonic() + remaining)
            return await self._scored(parse_infer_request(data), context, data)
        except Exception as exc:  # every failure leaves as a status, never as a crash
            await context.abort(*status_of(exc))
            raise  # unreachable: abort raises
        finally:
            self._inflight -= 1

    async def _stream_infer(self, requests: AsyncIterator[Any], context: Context) -> None:
        """Writes each answer itself rather than yielding it: a write to a stream the client has cancelled fails,
        and inside grpc.aio's own write loop that failure is logged with a traceback. Holds no thread while idle;
        the watchdog cancels this task when the stream is idle, and it then ends with DEADLINE_EXCEEDED."""
        streams, task, loop = self._streams, asyncio.current_task(), self._loop
        assert task is not None
        stream = streams.open(lambda: loop.call_soon_threadsafe(task.cancel))
        if stream is None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, streams.full_message())
            return
        try:
            async for request in requests:
                stream.busy = True
                try:
                    answer = stream_infer_response(await self._scored(request, context))
                except Exception as exc:
                    answer = stream_error(request, exc)
                stream.busy = False
                try:
                    await context.write(answer)
                except Exception as exc:  # only a call that has ended fails a write: nothing is left to tell anyone
                    log.debug("ModelStreamInfer stream ended while an answer was written: %r", exc)
                    return
                stream.last_active = time.monotonic()
        except asyncio.CancelledError:  # the client cancelled (grpc.aio cancels this task), or the watchdog did
            if not stream.closed_idle:
                log.debug("ModelStreamInfer stream cancelled by the client")
                raise
            task.uncancel()
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, streams.idle_message())
        finally:
            streams.done(stream)

    def _in_pool(self, implementation: Callable[[Any], message.Message], counted: bool) -> Callable[[Any, Context], Awaitable[message.Message]]:
        """Every other RPC runs in the pool: loading a model or gathering statistics waits on other workers."""

        async def call(request: Any, context: Context) -> message.Message:
            if counted and self._inflight >= self._max_inflight:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._inflight_message)
            self._inflight += counted
            try:
                if isinstance(request, Undecodable):
                    raise request.error()
                return await asyncio.get_running_loop().run_in_executor(self._pool, implementation, request)
            except Exception as exc:
                await context.abort(*status_of(exc))
                raise
            finally:
                self._inflight -= counted

        return call


def _running_on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
