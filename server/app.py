"""One serving process: load the repository, run the gRPC server, drain on SIGTERM/SIGINT.

`tensorwire serve --workers 1` runs exactly this; with more workers the
supervisor (server/supervisor.py) runs one of these per worker process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Coroutine
from concurrent import futures
from types import FrameType
from typing import Any, TypeVar

import grpc

from tensorwire.kernels.config import apply_thread_budget
from tensorwire.server.cluster import Cluster
from tensorwire.server.config import ServerConfig
from tensorwire.server.handler import InferenceHandler
from tensorwire.server.poller import RepositoryPoller
from tensorwire.server.repository import ModelRepository
from tensorwire.server.security import AuthInterceptor, TokenStore
from tensorwire.server.servicer import Drain, HealthReporter, add_services

log = logging.getLogger(__name__)
T = TypeVar("T")
DRAIN_QUIET_SECONDS = 0.05  # no new inference call for this long: every client waits on a held one
DRAIN_HOLD_MAX_SECONDS = 1.0  # clients that never wait for answers do not delay a shutdown longer


class Server:
    """The gRPC server of one process, around an InferenceHandler.

    The server is grpc.aio, on an event loop of its own thread: a quick
    ModelInfer is decoded, scored and answered on that loop with no thread
    hand-off (with grpc's sync server, the hand-offs between its threads cost
    more CPU than the scoring). Long requests and the other RPCs run in a pool of
    `--threads` threads. The methods here are called from ordinary threads.
    """

    def __init__(self, config: ServerConfig, *, reuse_port: bool = False) -> None:
        self.config = config
        self.handler = InferenceHandler(
            ModelRepository(config.model_repository, max_model_bytes=config.max_model_bytes),
            repository_api=config.model_control_mode == "explicit",
            max_rows=config.max_rows,
        )
        self._pool = futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="tensorwire-rpc")
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="tensorwire-grpc", daemon=True).start()
        self._stopping, self._stopped = threading.Lock(), threading.Event()
        try:
            self._grpc, self.health, self.port = self._on_loop(self._build(reuse_port))
        except BaseException:
            self._close_loop()
            raise
        self.handler.on_repository_change = self.refresh_health

    async def _build(self, reuse_port: bool) -> tuple[grpc.aio.Server, HealthReporter, int]:
        """The server, built on the loop (grpc.aio and the drain's event belong to it)."""
        config = self.config
        self._drain = Drain()
        interceptors = [] if config.auth_tokens is None else [AuthInterceptor(TokenStore.load(config.auth_tokens or None))]
        server = grpc.aio.server(
            interceptors=interceptors,
            maximum_concurrent_rpcs=config.max_inflight,
            options=[
                ("grpc.max_receive_message_length", config.max_receive_bytes),
                ("grpc.max_send_message_length", config.max_send_bytes),
                # workers share the supervisor's port; a lone server never shares one silently
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                *_connection_age_options(config.max_connection_age_seconds),
            ],
        )
        health = add_services(server, self.handler, self._pool, self._drain)
        address = f"{config.host}:{config.grpc_port}"
        try:
            tls = config.tls()
            port = server.add_secure_port(address, tls.credentials()) if tls is not None else server.add_insecure_port(address)
        except RuntimeError:  # grpcio raises where older versions returned 0
            port = 0
        if port == 0:
            raise OSError(f"cannot listen on {address} (in use, or not an address of this machine)")
        return server, health, port

    def _on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def use_cluster(self, cluster: Cluster) -> None:
        self.handler.cluster = cluster

    def start(self, models: list[str] | None) -> None:
        """Load and warm the models, then start taking connections.

        Listening only once ready matters with several workers: a (re)started
        worker joins the port's SO_REUSEPORT group when it can serve, so no
        connection lands on a worker that is still loading.
        """
        apply_thread_budget()
        log.info("loading models from %s", self.config.model_repository)
        self.handler.repository.load_all(models)
        self.handler.ready = True
        self.health.update(self.handler)
        self._on_loop(self._grpc.start())
        log.info("listening on %s:%d, serving (pid %d)", self.config.host, self.port, os.getpid())

    def refresh_health(self) -> None:
        self.health.update(self.handler)

    def stop(self, grace: float | None = None) -> None:
        """Refuse new RPCs, let in-flight ones finish within the grace period, then stop."""
        if not self._stopping.acquire(blocking=False):
            return  # already stopping (a signal and the supervisor's pipe closing both ask)
        self.handler.ready = False
        self.health.shutdown()
        self._on_loop(self._drain_and_stop(self.config.grace_seconds if grace is None else grace))
        self._close_loop()

    async def _drain_and_stop(self, grace: float) -> None:
        """gRPC's shutdown cancels (CANCELLED, which no client retries) every call it has received
        that no handler has taken yet, and under load there always are some. So inference calls are
        held first: once none has arrived for a moment, the clients are all waiting on held calls,
        nothing is left untaken, and the shutdown (which also tells clients to go elsewhere) loses
        nothing. The held calls are then scored, as every call in flight is, within the grace period."""
        drain = self._drain
        drain.last_arrival = time.monotonic()
        drain.holding = True
        give_up = time.monotonic() + min(grace, DRAIN_HOLD_MAX_SECONDS)
        while time.monotonic() - drain.last_arrival < DRAIN_QUIET_SECONDS and time.monotonic() < give_up:
            await asyncio.sleep(DRAIN_QUIET_SECONDS / 5)
        stopping = asyncio.create_task(self._grpc.stop(grace))
        await asyncio.sleep(DRAIN_QUIET_SECONDS / 5)  # the shutdown has begun: calls that come now are refused, retryably
        drain.release()
        await stopping

    def _close_loop(self) -> None:
        self._pool.shutdown(wait=False)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()


def _connection_age_options(seconds: float) -> list[tuple[str, int]]:
    """Close connections after a while (gracefully), so clients spread again over new pods or workers."""
    if seconds <= 0:
        return []
    return [("grpc.max_connection_age_ms", int(seconds * 1000)), ("grpc.max_connection_age_grace_ms", 30_000)]


def serve_single_process(config: ServerConfig) -> None:
    """--workers 1: this process serves, polls the repository and exposes metrics itself."""
    server = Server(config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: draining for up to %.1fs", signum, config.grace_seconds)
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if config.metrics_port:
        from tensorwire.server.metrics import ServerCollector, serve_metrics

        serve_metrics(config.host, config.metrics_port, ServerCollector(lambda: [server.handler.metrics_snapshot()]))
    server.start(config.initial_models())
    if config.model_control_mode == "poll":
        RepositoryPoller(
            server.handler.repository.root,
            config.poll_seconds,
            apply=lambda op, name: server.handler.execute(op, {"name": name}),
        ).start()
    server.wait()
    log.info("tensorwire stopped")
