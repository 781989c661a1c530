"""The configuration of `tensorwire serve`: one typed object, validated once at start-up."""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass
from typing import Any

CONTROL_MODES = ("none", "explicit", "poll")
ENGINES = ("auto", "aio", "sync")


@dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str
    root: str | None = None  # CA that signs client certificates (mutual TLS)
    mutual: bool = False

    def credentials(self) -> Any:
        """The grpc.ServerCredentials for these files."""
        import grpc

        def read(path: str, what: str) -> bytes:
            try:
                return pathlib.Path(path).read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read the {what} {path}: {exc.strerror}") from None

        if self.mutual and not self.root:
            raise ValueError("--grpc-use-ssl-mutual needs --grpc-root-cert (the CA of client certificates)")
        return grpc.ssl_server_credentials(
            [(read(self.key, "server key"), read(self.cert, "server certificate"))],
            root_certificates=read(self.root, "root certificate") if self.root else None,
            require_client_auth=self.mutual,
        )


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Everything `tensorwire serve` can be told, validated once at start-up."""

    model_repository: str
    host: str = "0.0.0.0"
    grpc_port: int = 8001
    metrics_port: int = 8002  # 0 turns the metrics endpoint off
    metrics_host: str | None = None  # None: the same as host
    metrics_tls: bool = False  # serve the metrics over HTTPS with the gRPC port's certificate
    workers: int = 1
    threads: int = 8
    engine: str = "auto"  # aio | sync | auto: sync when there is a worker per CPU, else aio (server/process/app.py says why)
    max_receive_bytes: int = 64 * 1024 * 1024
    max_send_bytes: int = 64 * 1024 * 1024
    grace_seconds: float = 10.0
    model_control_mode: str = "none"
    load_models: tuple[str, ...] = ()
    poll_seconds: float = 5.0
    # security and limits
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_root: str | None = None
    tls_mutual: bool = False
    auth_tokens: str | None = None  # a token file; "" means TENSORWIRE_AUTH_TOKENS
    max_inflight: int = 256  # concurrent unary RPCs per worker (probes aside); beyond it RESOURCE_EXHAUSTED at once
    max_streams: int = 64  # open ModelStreamInfer streams per worker (sync engine: each holds a thread of its own)
    stream_idle_seconds: float = 300.0  # a stream with no request for this long is closed
    max_health_watches: int = 32  # open grpc.health Watch calls per worker
    max_streams_per_connection: int = 100  # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
    max_rows: int = 1_000_000  # rows per request
    max_model_bytes: int = 4 << 30  # model.npz size
    follow_symlinks: bool = False  # serve model folders and files that link out of the repository root
    max_connection_age_seconds: float = 0.0  # 0: forever; else clients reconnect (and re-resolve DNS) this often

    def __post_init__(self) -> None:
        for flag, port in (("--grpc-port", self.grpc_port), ("--metrics-port", self.metrics_port)):
            if not 0 <= port <= 65535:
                raise ValueError(f"{flag} {port} is not a TCP port")
        if self.workers < 1 or self.threads < 1:
            raise ValueError("--workers and --threads must be at least 1")
        if self.engine not in ENGINES:
            raise ValueError(f"--engine must be one of {', '.join(ENGINES)}")
        if self.max_receive_bytes < 1024 or self.max_send_bytes < 1024:
            raise ValueError("message size limits must be at least 1 KiB")
        if self.grace_seconds < 0:
            raise ValueError("--grace-period must not be negative")
        if self.model_control_mode not in CONTROL_MODES:
            raise ValueError(f"--model-control-mode must be one of {', '.join(CONTROL_MODES)}")
        if self.load_models and self.model_control_mode != "explicit":
            raise ValueError("--load-model needs --model-control-mode explicit")
        if self.poll_seconds <= 0:
            raise ValueError("--repository-poll-secs must be positive")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both --grpc-server-cert and --grpc-server-key")
        if self.tls_mutual and (self.tls_cert is None or self.tls_root is None):
            raise ValueError("--grpc-use-ssl-mutual needs --grpc-server-cert, --grpc-server-key and --grpc-root-cert")
        if self.metrics_tls and self.tls_cert is None:
            raise ValueError("--metrics-use-ssl serves the gRPC port's certificate: it needs --grpc-use-ssl with --grpc-server-cert and --grpc-server-key")
        if self.max_connection_age_seconds < 0:
            raise ValueError("--grpc-max-connection-age must not be negative")
        if self.max_inflight < 1 or self.max_rows < 1 or self.max_model_bytes < 1:
            raise ValueError("--max-inflight, --max-rows and --max-model-mb must be positive")
        if self.max_streams < 1 or self.max_health_watches < 1 or self.max_streams_per_connection < 1:
            raise ValueError("--max-streams, --max-health-watches and --max-streams-per-connection must be positive")
        if self.stream_idle_seconds <= 0:
            raise ValueError("--stream-idle-timeout must be positive")

    def tls(self) -> TlsFiles | None:
        if self.tls_cert is None or self.tls_key is None:
            return None
        return TlsFiles(self.tls_cert, self.tls_key, self.tls_root, self.tls_mutual)

    def resolved_engine(self) -> str:
        """The gRPC engine a worker runs: `engine`, with auto decided by the CPUs this process may use."""
        if self.engine != "auto":
            return self.engine
        return "sync" if self.workers >= (os.cpu_count() or 1) else "aio"

    def initial_models(self) -> list[str] | None:
        """The models to load at start-up: None means every model in the repository."""
        if self.model_control_mode != "explicit":
            return None
        return None if "*" in self.load_models else list(self.load_models)
