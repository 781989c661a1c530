"""How a repository change or a statistics query reaches every serving process.

The handler asks its `Cluster` to apply an operation everywhere and gets one
outcome per worker. With one process that is a local call; under the
supervisor, the worker that received the RPC asks the supervisor, which relays
the operation to every worker (itself included) and answers when all have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tensorwire.server.process.control import ControlChannel, ControlError

BROADCAST_TIMEOUT = 300.0  # loading a big model (compile included) can take a while


@dataclass(frozen=True)
class Outcome:
    worker: int
    ok: bool
    result: Any = None
    error: str = ""


class Cluster(Protocol):
    def broadcast(self, op: str, args: dict[str, Any]) -> list[Outcome]: ...


Operation = Callable[[str, dict[str, Any]], Any]


class LocalCluster:
    """A single serving process: operations apply here, and only here."""

    def __init__(self, execute: Operation) -> None:
        self._execute = execute

    def broadcast(self, op: str, args: dict[str, Any]) -> list[Outcome]:
        try:
            return [Outcome(0, True, self._execute(op, args))]
        except Exception as exc:
            return [Outcome(0, False, error=str(exc))]


class SupervisedCluster:
    """A worker under the supervisor: operations go to every worker through it."""

    def __init__(self, channel: ControlChannel) -> None:
        self._channel = channel

    def broadcast(self, op: str, args: dict[str, Any]) -> list[Outcome]:
        try:
            raw = self._channel.call("broadcast", {"op": op, "args": args}, timeout=BROADCAST_TIMEOUT)
        except ControlError as exc:
            return [Outcome(-1, False, error=f"supervisor: {exc}")]
        return [Outcome(**item) for item in raw]
