"""Supervisor <-> worker control messages over a duplex multiprocessing pipe.

Either end can call the other: a call carries an operation name and JSON-like
arguments and gets one reply. Inference never travels here — only repository
changes, statistics and lifecycle events, which are rare.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], Any]


class ControlError(RuntimeError):
    """The other end failed the call, or went away before answering."""


class ControlChannel:
    """One end of the pipe: `call` the other end, and serve its calls with `handler`."""

    def __init__(self, conn: Connection, handler: Handler, on_close: Callable[[], None] = lambda: None, name: str = "control") -> None:
        self._conn = conn
        self._handler = handler
        self._on_close = on_close
        self._name = name
        self._send_lock = threading.Lock()
        self._pending: dict[int, Future[Any]] = {}
        self._ids = itertools.count(1)
        self._closed = False

    def start(self) -> ControlChannel:
        threading.Thread(target=self._read_loop, name=f"{self._name}-reader", daemon=True).start()
        return self

    def call(self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        future: Future[Any] = Future()
        call_id = next(self._ids)
        self._pending[call_id] = future
        try:
            self._send({"kind": "call", "id": call_id, "op": op, "args": args or {}})
        except (OSError, EOFError, ValueError) as exc:
            self._pending.pop(call_id, None)
            raise ControlError(f"{self._name}: cannot send {op}: {exc}") from None
        try:
            return future.result(timeout)
        except TimeoutError:
            raise ControlError(f"{self._name}: no answer to {op} within {timeout}s") from None
        finally:
            self._pending.pop(call_id, None)

    def close(self) -> None:
        self._closed = True
        self._conn.close()

    def _send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _read_loop(self) -> None:
        try:
            while True:
                message = self._conn.recv()
                if message["kind"] == "reply":
                    future = self._pending.get(message["id"])
                    if future is not None:
                        if message["ok"]:
                            future.set_result(message["result"])
                        else:
                            future.set_exception(ControlError(message["error"]))
                else:
                    # a call may block (a broadcast waits on other workers): never on the reader
                    threading.Thread(target=self._serve, args=(message,), daemon=True).start()
        except (EOFError, OSError):
            pass
        finally:
            for future in list(self._pending.values()):
                if not future.done():
                    future.set_exception(ControlError(f"{self._name}: the other end went away"))
            if not self._closed:
                self._on_close()

    def _serve(self, message: dict[str, Any]) -> None:
        try:
            reply = {"kind": "reply", "id": message["id"], "ok": True, "result": self._handler(message["op"], message["args"])}
        except Exception as exc:
            reply = {"kind": "reply", "id": message["id"], "ok": False, "error": str(exc) or type(exc).__name__}
        try:
            self._send(reply)
        except (OSError, EOFError, ValueError):
            log.debug("%s: reply to %s lost, the other end went away", self._name, message["op"])
