"""Dynamic batching: concurrent requests for one model version, scored in one kernel call.

Request threads queue their rows and wait; one batching thread per model
version takes the queue when it holds enough rows (a preferred size, or
max_batch_size) or when the oldest request has waited max_queue_delay, scores
the rows together and hands each request its slice. Requests whose deadline
passed while queued are answered without being scored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tensorwire.server.errors import DeadlineExceededError
from tensorwire.server.modeling.registry import Scorer
from tensorwire.server.repository.model_config import DynamicBatching


@dataclass(eq=False)
class _Pending:
    X: np.ndarray
    outputs: Sequence[str]
    deadline: float | None  # time.monotonic() seconds
    queued_at: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    results: list[np.ndarray] | None = None
    error: Exception | None = None
    queue_seconds: float = 0.0
    executed: bool = False  # the first request of a batch counts its one kernel execution


@dataclass(frozen=True)
class BatchResult:
    outputs: list[np.ndarray]
    queue_seconds: float
    executed: bool  # whether this request counts the batch's kernel execution


class DynamicBatcher:
    def __init__(self, scorer: Scorer, settings: DynamicBatching, name: str) -> None:
        self._scorer = scorer
        self._settings = settings
        self._max_delay = settings.max_queue_delay_microseconds * 1e-6
        self._queue: list[_Pending] = []
        self._rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self._name = name
        self._thread: threading.Thread | None = None  # started by the first request: a process that forks workers holds none

    def score(self, X: np.ndarray, outputs: Sequence[str], deadline: float | None) -> BatchResult:
        """Queue the rows, wait for the batch they join, return this request's outputs."""
        if X.shape[0] >= self._settings.max_batch_size:  # big enough alone: no reason to wait
            return BatchResult(self._scorer.score(X, outputs), 0.0, True)
        pending = _Pending(X, outputs, deadline)
        with self._cond:
            if self._closed:  # the version was swapped out; requests still holding it finish unbatched
                return BatchResult(self._scorer.score(X, outputs), 0.0, True)
            if self._thread is None or not self._thread.is_alive():  # not alive: this is a forked worker, the thread stayed behind
                self._thread = threading.Thread(target=self._run, name=f"batcher-{self._name}", daemon=True)
                self._thread.start()
            self._queue.append(pending)
            self._rows += X.shape[0]
            self._cond.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.results is not None
        return BatchResult(pending.results, pending.queue_seconds, pending.executed)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _ready(self) -> bool:
        rows = self._rows
        return rows >= self._settings.max_batch_size or rows in self._settings.preferred_batch_size

    def _take(self) -> list[_Pending]:
        """Wait for a batch worth scoring and take it off the queue."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return []
            flush_at = self._queue[0].queued_at + self._max_delay
            while not self._ready() and not self._closed:
                remaining = flush_at - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch, rows = [], 0
            while self._queue and rows + self._queue[0].X.shape[0] <= self._settings.max_batch_size:
                item = self._queue.pop(0)
                batch.append(item)
                rows += item.X.shape[0]
            if not batch:  # cannot happen: oversized requests never queue
                batch.append(self._queue.pop(0))
            self._rows -= sum(item.X.shape[0] for item in batch)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            self._score(batch)

    def _score(self, batch: list[_Pending]) -> None:
        now = time.monotonic()
        live = []
        for item in batch:
            item.queue_seconds = now - item.queued_at
            if item.deadline is not None and now > item.deadline:
                item.error = DeadlineExceededError("the request's deadline passed while it waited for a batch")
                item.done.set()
            else:
                live.append(item)
        if not live:
            return
        names = list(dict.fromkeys(name for item in live for name in item.outputs))
        try:
            X = live[0].X if len(live) == 1 else np.concatenate([item.X for item in live])
            outputs = self._scorer.score(X, names)
        except Exception as exc:
            if len(live) == 1:
                live[0].error = exc
                live[0].done.set()
            else:  # one request's rows may be what failed (e.g. a row a model refuses): each request alone, its rows numbered as it sent them
                for item in live:
                    self._score_alone(item)
            return
        live[0].executed = True
        by_name = dict(zip(names, outputs))
        start = 0
        for item in live:
            stop = start + item.X.shape[0]
            item.results = [by_name[name][start:stop] for name in item.outputs]
            start = stop
            item.done.set()

    def _score_alone(self, item: _Pending) -> None:
        try:
            item.results = self._scorer.score(item.X, item.outputs)
            item.executed = True
        except Exception as exc:
            item.error = exc
        item.done.set()
