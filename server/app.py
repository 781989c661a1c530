"""One serving process: load the repository, start the gRPC server, drain on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from types import FrameType

import grpc

from tensorwire.kernels.config import apply_thread_budget
from tensorwire.server.handler import InferenceHandler
from tensorwire.server.repository import ModelRepository
from tensorwire.server.servicer import add_services

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Everything `tensorwire serve` can be told, validated once at start-up."""

    model_repository: str
    host: str = "0.0.0.0"
    grpc_port: int = 8001
    threads: int = 8
    max_receive_bytes: int = 64 * 1024 * 1024
    max_send_bytes: int = 64 * 1024 * 1024
    grace_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.grpc_port <= 65535:
            raise ValueError(f"--grpc-port {self.grpc_port} is not a TCP port")
        if self.threads < 1:
            raise ValueError("--threads must be at least 1")
        if self.max_receive_bytes < 1024 or self.max_send_bytes < 1024:
            raise ValueError("message size limits must be at least 1 KiB")
        if self.grace_seconds < 0:
            raise ValueError("--grace-period must not be negative")


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.handler = InferenceHandler(ModelRepository(config.model_repository))
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="tensorwire-rpc"),
            options=[
                ("grpc.max_receive_message_length", config.max_receive_bytes),
                ("grpc.max_send_message_length", config.max_send_bytes),
                # one process owns its port: never share it silently with a stale server
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = add_services(self._grpc, self.handler)
        address = f"{config.host}:{config.grpc_port}"
        try:
            self.port = self._grpc.add_insecure_port(address)
        except RuntimeError:  # grpcio raises where older versions returned 0
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen on {address} (in use, or not an address of this machine)")
        self._stopped = threading.Event()

    def start(self) -> None:
        apply_thread_budget()
        self.health.update(self.handler)  # NOT_SERVING while models load
        self._grpc.start()
        log.info("listening on %s:%d; loading models", self.config.host, self.port)
        self.handler.repository.load_all()
        self.handler.ready = True
        self.health.update(self.handler)
        log.info("tensorwire serving %s on %s:%d", self.config.model_repository, self.config.host, self.port)

    def stop(self, grace: float | None = None) -> None:
        """Refuse new RPCs, let in-flight ones finish within the grace period, then stop."""
        self.handler.ready = False
        self.health.shutdown()
        self._grpc.stop(self.config.grace_seconds if grace is None else grace).wait()
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()


def serve_forever(config: ServerConfig) -> None:
    server = Server(config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: draining for up to %.1fs", signum, config.grace_seconds)
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    server.wait()
    log.info("tensorwire stopped")
