"""When to retry a failed call and how long to wait first: shared by the sync and async clients (no I/O)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import grpc


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Retries with exponential back-off and jitter, for UNAVAILABLE answers to idempotent calls.

    Health, metadata, configuration, statistics and repository-index calls are
    idempotent and always follow this policy. Inference is idempotent for the
    stateless models tensorwire serves, so it is retried too unless
    `retry_infer=False` (set that for servers whose models keep state).
    Repository load and unload and streams are never retried.

    A call's `timeout` bounds all its attempts together, back-off included.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.2  # each wait is scaled by a random factor in [1 - jitter, 1 + jitter]
    retry_infer: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be at least 1, got {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("RetryPolicy back-off times must not be negative")
        if self.multiplier < 1:
            raise ValueError(f"RetryPolicy.multiplier must be at least 1, got {self.multiplier}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"RetryPolicy.jitter must lie in [0, 1), got {self.jitter}")

    def backoffs(self) -> Iterator[float]:
        """The waits, in seconds, before the second, third, ... attempt."""
        delay = self.initial_backoff_s
        for _ in range(self.max_attempts - 1):
            yield min(delay, self.max_backoff_s) * random.uniform(1 - self.jitter, 1 + self.jitter)
            delay *= self.multiplier


NO_RETRY = RetryPolicy(max_attempts=1)
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


def should_retry(code: grpc.StatusCode | None, idempotent: bool) -> bool:
    return idempotent and code in RETRYABLE
