"""The supervisor of `tensorwire serve --workers N`: it creates no gRPC object.

It reserves the port, starts the worker template (server/process/template.py),
which loads every model once and forks N worker processes that each serve the
port (SO_REUSEPORT: the kernel spreads connections over them) and share the
template's memory; where forking is not available it starts each worker as a
process of its own. It restarts a worker
that dies (with back-off), relays repository changes and statistics queries to
every worker, serves the metrics of all, and on SIGTERM/SIGINT lets the workers
drain before it exits.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import reduction
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any

from tensorwire.server.config import ServerConfig
from tensorwire.server.process.cluster import BROADCAST_TIMEOUT, Outcome
from tensorwire.server.process.control import ControlChannel
from tensorwire.server.repository.layout import model_names
from tensorwire.server.repository.poller import RepositoryPoller

log = logging.getLogger(__name__)

RESTART_BACKOFF_FIRST = 0.5  # seconds before the first restart of a worker that died
RESTART_BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # a worker that lived this long starts its back-off afresh
MUTATING_OPS = frozenset({"load", "unload"})
PR_SET_CHILD_SUBREAPER = 36


@contextmanager
def reserve_port(host: str, port: int) -> Iterator[int]:
    """Hold host:port with SO_REUSEPORT so that workers can share it, and nobody else takes it.

    A plain bind first proves the port free: a stale server holding it with
    SO_REUSEPORT would otherwise share it with us silently.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror} (--grpc-port picks another port; 0 a free one)") from None
        port = probe.getsockname()[1]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        yield port
    finally:
        sock.close()


class WorkerProcess:
    """One worker: `python -m tensorwire.server.process.worker` with its end of a control pipe.

    Not multiprocessing's spawn, which also starts multiprocessing's resource
    tracker, a process of ~8 MiB that tensorwire has no use for (no shared
    semaphores or memory), and re-imports the supervisor's __main__ in each worker.
    """

    def __init__(self, args: tuple[Any, ...]) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self._popen = subprocess.Popen(
                [sys.executable, "-m", "tensorwire.server.process.worker", str(theirs.fileno())], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL
            )
        self.pid = self._popen.pid
        self.conn = Connection(ours.detach())
        self.conn.send(args)  # worker_main's arguments
        # readable once the process has exited (Linux 5.3+); elsewhere the watch loop polls
        self.sentinel: int | None = os.pidfd_open(self.pid) if hasattr(os, "pidfd_open") else None

    @property
    def exitcode(self) -> int | None:
        """As multiprocessing's: None while running, -N if killed by signal N."""
        code = self._popen.poll()
        if code is not None:
            self._release_sentinel()
        return code

    def is_alive(self) -> bool:
        return self.exitcode is None

    def terminate(self) -> None:
        if self.is_alive():
            self._popen.terminate()

    def kill(self) -> None:
        if self.is_alive():
            self._popen.kill()

    def join(self, timeout: float | None = None) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return
        self._release_sentinel()

    def _release_sentinel(self) -> None:
        if self.sentinel is not None:
            os.close(self.sentinel)
            self.sentinel = None


def become_subreaper() -> bool:
    """Adopt orphaned descendants (the workers the template forks), so that this process waits for them; whether it could."""
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return False
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1) == 0  # type: ignore[no-any-return]
    except OSError:
        return False


class ForkedWorker:
    """A worker forked by the template and adopted by this process: WorkerProcess's interface over a bare pid."""

    def __init__(self, pid: int, conn: Connection) -> None:
        self.pid = pid
        self.conn = conn
        self.sentinel: int | None = os.pidfd_open(pid)
        self._exitcode: int | None = None

    @property
    def exitcode(self) -> int | None:
        if self._exitcode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already, or never adopted: nothing more to learn
                pid, status = self.pid, 255 << 8
            if pid == self.pid:
                self._exitcode = os.waitstatus_to_exitcode(status)
                self._release_sentinel()
        return self._exitcode

    def is_alive(self) -> bool:
        return self.exitcode is None

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and (deadline is None or time.monotonic() < deadline):
            if self.sentinel is not None:
                wait([self.sentinel], timeout=0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic())))
            else:
                time.sleep(0.01)

    def _signal(self, signum: int) -> None:
        if self.is_alive():
            os.kill(self.pid, signum)

    def _release_sentinel(self) -> None:
        if self.sentinel is not None:
            os.close(self.sentinel)
            self.sentinel = None


class WorkerTemplate:
    """`python -m tensorwire.server.process.template`: loads the models once, then forks each worker on request."""

    def __init__(self, args: tuple[Any, ...]) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self._popen = subprocess.Popen(
                [sys.executable, "-m", "tensorwire.server.process.template", str(theirs.fileno())], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL
            )
        self.pid = self._popen.pid
        self.conn = Connection(ours.detach())
        self.conn.send(args)  # (config, models, log_level, log_format)
        self._lock = threading.Lock()

    def wait_ready(self, stopping: threading.Event) -> int | None:
        """Model versions the template loaded; None if it died or we are stopping first."""
        while not stopping.is_set():
            if self.conn.poll(0.2):
                try:
                    loaded = self.conn.recv()
                except (EOFError, OSError):
                    return None
                return None if loaded is None else int(loaded)
            if self._popen.poll() is not None:
                return None
        return None

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def fork(self, args: tuple[Any, ...]) -> ForkedWorker:
        """A new worker running worker_main(*args); OSError or EOFError if the template cannot fork one."""
        ours, theirs = socket.socketpair()
        with self._lock, theirs:
            self.conn.send(args)
            reduction.send_handle(self.conn, theirs.fileno(), self.pid)
            pid = int(self.conn.recv())
        return ForkedWorker(pid, Connection(ours.detach()))

    def stop(self) -> None:
        self.conn.close()  # the template exits on the pipe's EOF
        try:
            self._popen.wait(5)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()


@dataclass
class WorkerSlot:
    index: int
    process: WorkerProcess | ForkedWorker | None = None
    channel: ControlChannel | None = None
    started_at: float = 0.0
    ready: bool = False  # has reported ready at least once
    quick_failures: int = 0
    restart_at: float | None = None


@dataclass
class Supervisor:
    config: ServerConfig
    log_level: str = "INFO"
    log_format: str = "text"
    slots: list[WorkerSlot] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stopping = threading.Event()
        self._mutation_lock = threading.Lock()
        self._models = self.config.initial_models()  # what a (re)started worker loads; None: everything
        self._restarts = 0
        self._last_metrics: dict[int, dict[str, Any]] = {}  # by worker pid; dead workers keep their last
        self._announced = False  # the "ready: serving" line, once every worker has first reported ready
        self._template: WorkerTemplate | None = None

    def run(self) -> int:
        with reserve_port(self.config.host, self.config.grpc_port) as port:
            self.config = dataclasses.replace(self.config, grpc_port=port)
            log.info(
                "reserved %s:%d; starting %d workers, which take connections once their models are compiled and warm",
                self.config.host, port, self.config.workers,
            )
            self._install_signal_handlers()
            if self.config.metrics_port:
                from tensorwire.server.process.metrics import ServerCollector, serve_metrics

                serve_metrics(self.config, ServerCollector(self.metrics_snapshots, lambda: self._restarts))
            self._start_template()
            self.slots = [WorkerSlot(i) for i in range(self.config.workers)]
            for slot in self.slots:
                if not self._stopping.is_set():
                    self._start(slot)
            poller = self._start_poller()
            self._watch()
            if poller is not None:
                poller.stop()
            self._stop_workers()
            if self._template is not None:
                self._template.stop()
        log.info("tensorwire stopped")
        return 0

    # ---- workers -------------------------------------------------------------

    def _start_template(self) -> None:
        """Load the models in the worker template, which forks the workers; without one, each worker is a process of its own."""
        if not become_subreaper():
            log.info("this platform cannot adopt forked workers: each worker loads the models itself")
            return
        started = time.monotonic()
        template = WorkerTemplate((self.config, self._models, self.log_level, self.log_format))
        loaded = template.wait_ready(self._stopping)
        if loaded is None:
            if not self._stopping.is_set():
                log.warning("the worker template (pid %d) failed; each worker loads the models itself", template.pid)
            template.stop()
            return
        self._template = template
        log.info("worker template (pid %d) holds %d model versions after %.2fs; forking %d workers", template.pid, loaded, time.monotonic() - started, self.config.workers)

    def _start(self, slot: WorkerSlot) -> None:
        args = (self.config, slot.index, self._models, self.log_level, self.log_format)
        process: WorkerProcess | ForkedWorker | None = None
        if self._template is not None:
            try:
                process = self._template.fork(args)
            except (OSError, EOFError) as exc:
                log.warning("the worker template cannot fork (%s); workers from now on load the models themselves", exc)
                self._template = None
        if process is None:
            process = WorkerProcess(args)
        slot.process, slot.started_at, slot.restart_at = process, time.monotonic(), None
        slot.channel = ControlChannel(process.conn, lambda op, args: self._on_worker_call(slot, op, args), name=f"supervisor<->{slot.index}").start()
        log.info("worker %d started (pid %d)", slot.index, process.pid)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            sentinels = [s.process.sentinel for s in self.slots if s.process is not None and s.process.sentinel is not None]
            wait(sentinels, timeout=0.2)
            now = time.monotonic()
            for slot in self.slots:
                if slot.process is not None and not slot.process.is_alive() and not self._stopping.is_set():
                    self._schedule_restart(slot, now)
                if slot.restart_at is not None and now >= slot.restart_at and not self._stopping.is_set():
                    self._restarts += 1
                    self._start(slot)

    def _schedule_restart(self, slot: WorkerSlot, now: float) -> None:
        assert slot.process is not None
        code = slot.process.exitcode
        cause = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        lived = now - slot.started_at
        slot.quick_failures = 0 if lived >= STABLE_AFTER else slot.quick_failures + 1
        delay = min(RESTART_BACKOFF_MAX, RESTART_BACKOFF_FIRST * 2 ** max(0, slot.quick_failures - 1))
        log.warning("worker %d (pid %d) %s after %.1fs; restarting in %.1fs", slot.index, slot.process.pid, cause, lived, delay)
        if slot.channel is not None:
            slot.channel.close()
        slot.process, slot.channel, slot.restart_at = None, None, now + delay

    def _stop_workers(self) -> None:
        live = [s.process for s in self.slots if s.process is not None and s.process.is_alive()]
        for process in live:
            process.terminate()  # SIGTERM: the worker drains, then exits
        deadline = time.monotonic() + self.config.grace_seconds + 5
        for process in live:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.join()

    def _install_signal_handlers(self) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: draining workers for up to %.1fs", signum, self.config.grace_seconds)
            self._stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    # ---- cluster operations ------------------------------------------------------

    def _on_worker_call(self, slot: WorkerSlot, op: str, args: dict[str, Any]) -> Any:
        if op == "ready":
            log.info("worker %d ready in %.2fs", slot.index, time.monotonic() - slot.started_at)
            slot.ready = True
            if all(s.ready for s in self.slots) and not self._announced:
                self._announced = True
                log.info("ready: serving %d model versions on %s:%d with %d workers", args.get("models", 0), self.config.host, self.config.grpc_port, len(self.slots))
            return {}
        if op == "broadcast":
            return [dataclasses.asdict(o) for o in self.broadcast(args["op"], args["args"])]
        raise ValueError(f"unknown supervisor operation '{op}'")

    def broadcast(self, op: str, args: dict[str, Any]) -> list[Outcome]:
        """Apply an operation in every live worker, in parallel; one outcome per worker."""
        if op not in MUTATING_OPS:
            return self._call_all(op, args)
        with self._mutation_lock:  # repository changes apply one at a time, everywhere
            outcomes = self._call_all(op, args)
            self._remember(op, args["name"])
            return outcomes

    def _call_all(self, op: str, args: dict[str, Any]) -> list[Outcome]:
        targets = [(s.index, s.channel) for s in self.slots if s.channel is not None]
        outcomes: list[Outcome] = []
        lock = threading.Lock()

        def call(index: int, channel: ControlChannel) -> None:
            try:
                outcome = Outcome(index, True, channel.call(op, args, timeout=BROADCAST_TIMEOUT))
            except Exception as exc:
                outcome = Outcome(index, False, error=f"worker {index}: {exc}")
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=call, args=target, daemon=True) for target in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sorted(outcomes, key=lambda o: o.worker)

    def metrics_snapshots(self) -> list[dict[str, Any]]:
        """Every worker's counters, live ones fresh, dead ones as last seen (totals never go backwards)."""
        for outcome in self.broadcast("metrics", {}):
            if outcome.ok:
                self._last_metrics[outcome.result["pid"]] = outcome.result
        return list(self._last_metrics.values())

    def _remember(self, op: str, name: str) -> None:
        """Keep the set of loaded models, so that a restarted worker loads the same."""
        if self._models is None:
            self._models = model_names(pathlib.Path(self.config.model_repository))
        if op == "load" and name not in self._models:
            self._models = [*self._models, name]
        elif op == "unload":
            self._models = [m for m in self._models if m != name]

    def _start_poller(self) -> RepositoryPoller | None:
        if self.config.model_control_mode != "poll":
            return None
        return RepositoryPoller(pathlib.Path(self.config.model_repository), self.config.poll_seconds, apply=lambda op, name: self.broadcast(op, {"name": name})).start()
