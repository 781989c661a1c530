"""One serving process: load the repository, run the gRPC server, drain on SIGTERM/SIGINT.

`tensorwire serve --workers 1` runs exactly this; with more workers the
supervisor (server/process/supervisor.py) runs one of these per worker process.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from types import FrameType

from tensorwire.kernels.config import apply_thread_budget
from tensorwire.server.config import ServerConfig
from tensorwire.server.inference.handler import InferenceHandler
from tensorwire.server.process.cluster import Cluster
from tensorwire.server.repository.cache_warming import load_compiling_in_parallel
from tensorwire.server.repository.model_repository import ModelRepository
from tensorwire.server.repository.poller import RepositoryPoller
from tensorwire.server.transport.call_limits import STREAM_POOL_SPARE, SplitPool
from tensorwire.server.transport.engine_aio import AioEngine
from tensorwire.server.transport.engine_sync import SyncEngine
from tensorwire.server.transport.servicer import HealthStatuses

log = logging.getLogger(__name__)


class Server:
    """The gRPC server of one process, around an InferenceHandler, on one of two engines.

    grpc.aio (server/transport/engine_aio.py) answers small requests on its event loop
    with no thread hand-off: the cheapest when the process has cores to spare.
    grpcio's thread-pool server (server/transport/engine_sync.py) is cheaper once there is
    a worker process per core: measured on 2 cores with 2 workers, the aio
    loop's per-call wake-ups cost a third to a half more CPU than the pool's hand-offs.
    `--engine auto` picks by that rule. The methods here are called from
    ordinary threads.
    """

    def __init__(self, config: ServerConfig, *, reuse_port: bool = False, repository: ModelRepository | None = None) -> None:
        self.config = config
        self.handler = InferenceHandler(
            open_repository(config) if repository is None else repository,
            repository_api=config.model_control_mode == "explicit",
            max_rows=config.max_rows,
        )
        self.engine_name = config.resolved_engine()
        self._pool: futures.Executor
        self._engine: AioEngine | SyncEngine
        if self.engine_name == "aio":
            self._pool = futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="tensorwire-rpc")
            self._engine = AioEngine(config, self.handler, self._pool, reuse_port=reuse_port)
        else:  # a stream holds its thread for its whole life: streams get threads of their own
            self._pool = SplitPool(config.threads, config.max_streams + STREAM_POOL_SPARE)
            self._engine = SyncEngine(config, self.handler, self._pool, reuse_port=reuse_port)
        self.port = self._engine.port
        self._health = HealthStatuses()
        self._stopping, self._stopped = threading.Lock(), threading.Event()
        self.handler.on_repository_change = self.refresh_health

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
        # a repository that holds them already (a forked worker's) keeps those whose files are unchanged
        load_compiling_in_parallel(self.handler.repository, models, os.cpu_count() or 1)
        if models is not None:
            for name in set(self.handler.repository.snapshot) - set(models):  # unloaded since the template loaded them
                self.handler.repository.unload(name)
        self.handler.ready = True
        self.refresh_health()
        self._engine.start()
        log.info("listening on %s:%d, serving (pid %d, %s engine)", self.config.host, self.port, os.getpid(), self.engine_name)

    def refresh_health(self) -> None:
        self._engine.set_health(self._health.of(self.handler))

    def stop(self, grace: float | None = None) -> None:
        """Refuse new RPCs, let in-flight ones finish within the grace period, then stop."""
        if not self._stopping.acquire(blocking=False):
            return  # already stopping (a signal and the supervisor's pipe closing both ask)
        self.handler.ready = False
        self._engine.shutdown_health()
        self._engine.drain_and_stop(self.config.grace_seconds if grace is None else grace)
        self._engine.close()
        self._pool.shutdown(wait=False)
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()


def open_repository(config: ServerConfig) -> ModelRepository:
    """The configured model repository, nothing loaded yet."""
    return ModelRepository(config.model_repository, max_model_bytes=config.max_model_bytes, follow_symlinks=config.follow_symlinks)


def serve_single_process(config: ServerConfig) -> None:
    """--workers 1: this process serves, polls the repository and exposes metrics itself."""
    server = Server(config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: draining for up to %.1fs", signum, config.grace_seconds)
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if config.metrics_port:
        from tensorwire.server.process.metrics import ServerCollector, serve_metrics

        serve_metrics(config, ServerCollector(lambda: [server.handler.metrics_snapshot()]))
    server.start(config.initial_models())
    if config.model_control_mode == "poll":
        RepositoryPoller(
            server.handler.repository.root,
            config.poll_seconds,
            apply=lambda op, name: server.handler.execute(op, {"name": name}),
        ).start()
    server.wait()
    log.info("tensorwire stopped")
