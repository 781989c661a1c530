"""The configuration of `tensorwire serve`: one typed object, validated once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

CONTROL_MODES = ("none", "explicit", "poll")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Everything `tensorwire serve` can be told, validated once at start-up."""

    model_repository: str
    host: str = "0.0.0.0"
    grpc_port: int = 8001
    metrics_port: int = 8002  # 0 turns the metrics endpoint off
    workers: int = 1
    threads: int = 8
    max_receive_bytes: int = 64 * 1024 * 1024
    max_send_bytes: int = 64 * 1024 * 1024
    grace_seconds: float = 10.0
    model_control_mode: str = "none"
    load_models: tuple[str, ...] = ()
    poll_seconds: float = 5.0

    def __post_init__(self) -> None:
        for flag, port in (("--grpc-port", self.grpc_port), ("--metrics-port", self.metrics_port)):
            if not 0 <= port <= 65535:
                raise ValueError(f"{flag} {port} is not a TCP port")
        if self.workers < 1 or self.threads < 1:
            raise ValueError("--workers and --threads must be at least 1")
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

    def initial_models(self) -> list[str] | None:
        """The models to load at start-up: None means every model in the repository."""
        if self.model_control_mode != "explicit":
            return None
        return None if "*" in self.load_models else list(self.load_models)
