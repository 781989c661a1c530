"""One serving process: load the repository, run the gRPC server, drain on SIGTERM/SIGINT.

`tensorwire serve --workers 1` runs exactly this; with more workers the
supervisor (server/supervisor.py) runs one of these per worker process.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from types import FrameType

import grpc

from tensorwire.kernels.config import apply_thread_budget
from tensorwire.server.cluster import Cluster
from tensorwire.server.config import ServerConfig
from tensorwire.server.handler import InferenceHandler
from tensorwire.server.poller import RepositoryPoller
from tensorwire.server.repository import ModelRepository
from tensorwire.server.security import AuthInterceptor, TokenStore
from tensorwire.server.servicer import add_services

log = logging.getLogger(__name__)

class Server:
    """The gRPC server of one process, around an InferenceHandler."""

    def __init__(self, config: ServerConfig, *, reuse_port: bool = False) -> None:
        self.config = config
        self.handler = InferenceHandler(
            ModelRepository(config.model_repository, max_model_bytes=config.max_model_bytes),
            repository_api=config.model_control_mode == "explicit",
            max_rows=config.max_rows,
        )
        interceptors = [] if config.auth_tokens is None else [AuthInterceptor(TokenStore.load(config.auth_tokens or None))]
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="tensorwire-rpc"),
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
        self.health = add_services(self._grpc, self.handler)
        self.handler.on_repository_change = self.refresh_health
        address = f"{config.host}:{config.grpc_port}"
        try:
            tls = config.tls()
            if tls is not None:
                self.port = self._grpc.add_secure_port(address, tls.credentials())
            else:
                self.port = self._grpc.add_insecure_port(address)
        except RuntimeError:  # grpcio raises where older versions returned 0
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen on {address} (in use, or not an address of this machine)")
        self._stopped = threading.Event()

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
        self._grpc.start()
        log.info("listening on %s:%d, serving (pid %d)", self.config.host, self.port, os.getpid())

    def refresh_health(self) -> None:
        self.health.update(self.handler)

    def stop(self, grace: float | None = None) -> None:
        """Refuse new RPCs, let in-flight ones finish within the grace period, then stop."""
        if self._stopped.is_set():
            return
        self.handler.ready = False
        self.health.shutdown()
        self._grpc.stop(self.config.grace_seconds if grace is None else grace).wait()
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
