"""Per-worker caps on calls, so no kind of call can starve another: unary calls, open streams, health watches.

grpcio counts every RPC against one `maximum_concurrent_rpcs`, so a few hundred
idle streams or health watches would leave nothing for inference or probes.
Each kind gets a budget of its own here, and grpc's own cap is set to their
sum plus a reserve for probes (health Check, ServerLive, ServerReady), which
no budget counts. On the aio engine every call is counted as it arrives. On the
sync engine a unary call waits for one of `--threads` threads before any code of
ours sees it, so grpc's cap is what refuses a flood there: unary calls may then
use stream and watch capacity left unused.

Open ModelStreamInfer streams idle for longer than a timeout are closed by one
watchdog thread per worker. On the sync engine, where a stream holds a thread for
its whole life, `SplitPool` gives streams threads of their own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

PROBE_RESERVE = 8  # concurrent calls beyond every budget, for probes (a Kubernetes pod sends one or two at a time)
STREAM_POOL_SPARE = 8  # stream threads beyond --max-streams: health watches and reflection pass through them
# grpcio's sync server submits every call to its executor as this function (or Context.run of it) when the
# response streams: ModelStreamInfer, health Watch, server reflection.
STREAMING_TASK = "_stream_response_in_pool"


class CallSlots:
    """A budget of concurrent calls; taking and giving back a slot is a list pop/append, atomic under the GIL."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = [None] * limit

    def take(self) -> bool:
        try:
            self._free.pop()
        except IndexError:
            return False
        return True

    def give_back(self) -> None:
        self._free.append(None)


class OpenStream:
    """One open stream: when it last showed activity, whether a request is being scored, how to close it."""

    __slots__ = ("last_active", "busy", "closed_idle", "_close")

    def __init__(self, close: Callable[[], object]) -> None:
        self.last_active = time.monotonic()
        self.busy = False
        self.closed_idle = False
        self._close = close

    def close_idle(self) -> None:
        self.closed_idle = True
        self._close()


class OpenStreams:
    """The ModelStreamInfer streams of one worker: at most `limit` open, each closed after `idle_seconds` without a request."""

    def __init__(self, limit: int, idle_seconds: float) -> None:
        self.limit = limit
        self.idle_seconds = idle_seconds
        self._streams: set[OpenStream] = set()
        self._lock = threading.Lock()
        self._watchdog: threading.Thread | None = None

    def open(self, close: Callable[[], object]) -> OpenStream | None:
        """A record for a new stream, or None at the limit; `close` ends the stream from the watchdog's thread."""
        stream = OpenStream(close)
        with self._lock:
            if len(self._streams) >= self.limit:
                return None
            self._streams.add(stream)
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="tensorwire-stream-watchdog", daemon=True)
                self._watchdog.start()
        return stream

    def done(self, stream: OpenStream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def close_idle(self, now: float) -> int:
        """Close every stream idle since before `now - idle_seconds`; the number closed."""
        with self._lock:
            idle = [s for s in self._streams if not s.busy and not s.closed_idle and now - s.last_active > self.idle_seconds]
        for stream in idle:
            log.info("closing a ModelStreamInfer stream idle for more than %gs (--stream-idle-timeout)", self.idle_seconds)
            try:
                stream.close_idle()
            except Exception:  # a stream that ended meanwhile
                log.debug("closing an idle stream failed", exc_info=True)
        return len(idle)

    def _watch(self) -> None:
        tick = min(1.0, self.idle_seconds / 4)
        while True:
            time.sleep(tick)
            self.close_idle(time.monotonic())

    def idle_message(self) -> str:
        return f"stream closed: no request for {self.idle_seconds:g}s (--stream-idle-timeout)"

    def full_message(self) -> str:
        return f"this worker has {self.limit} ModelStreamInfer streams open (--max-streams); retry later, or use unary ModelInfer"


class SplitPool(Executor):
    """The sync engine's executor: calls whose responses stream run in a pool of their own, every other call in
    `threads` threads. More threads for unary calls would cost each call a GIL hand-off; fewer would let idle
    streams starve them. A call grpcio submits in a way not recognised lands in the unary pool, as it did
    before there were two (tests/test_hardening_calls.py fails then)."""

    def __init__(self, threads: int, stream_threads: int) -> None:
        self.unary = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tensorwire-rpc")
        self.streaming = ThreadPoolExecutor(max_workers=stream_threads, thread_name_prefix="tensorwire-stream")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        task = args[0] if args and callable(args[0]) else fn  # grpcio submits Context.run(task, ...)
        pool = self.streaming if getattr(task, "__name__", "") == STREAMING_TASK else self.unary
        return pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.unary.shutdown(wait, cancel_futures=cancel_futures)
        self.streaming.shutdown(wait, cancel_futures=cancel_futures)
