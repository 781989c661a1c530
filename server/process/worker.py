"""A worker process under the supervisor: its own gRPC server on the shared port (SO_REUSEPORT).

Requests are decoded, scored and answered here; only repository changes and
statistics go through the supervisor. A worker never outlives its supervisor:
it asks the kernel for SIGTERM when the parent dies, and stops when the control
pipe closes.

On Linux the worker template (server/process/template.py) forks workers, which then
run worker_main with the models it loaded. Elsewhere, or when the template is gone,
the supervisor starts one as `python -m tensorwire.server.process.worker FD`, FD being
its end of the control pipe, whose first message holds worker_main's arguments
(see WorkerProcess in server/process/supervisor.py).
"""

from __future__ import annotations

import ctypes
import logging
import signal
import sys
import threading
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when this process's parent dies (Linux; elsewhere the control pipe's EOF stops it)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def name_process(name: str) -> None:
    """The name `ps -o comm` and top show (15 bytes at most): forked workers would otherwise all read as the template."""
    _prctl(PR_SET_NAME, ctypes.create_string_buffer(name.encode()[:15]))


def _prctl(option: int, value: Any) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value)
        except OSError:
            pass


def worker_main(
    config: Any, index: int, conn: Connection, models: list[str] | None, log_level: str, log_format: str, repository: Any = None
) -> None:
    """Entry point of a worker process; `repository`, the template's ModelRepository in a forked worker, already holds the models."""
    die_with_parent()
    name_process(f"tw-worker-{index}")
    from tensorwire.server.process.logs import configure_logging

    configure_logging(log_level, log_format, f"worker-{index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the supervisor decides

    from tensorwire.server.process.app import Server
    from tensorwire.server.process.cluster import SupervisedCluster
    from tensorwire.server.process.control import ControlChannel

    server = Server(config, reuse_port=True, repository=repository)
    server.handler.worker = index

    def stop(*_: object) -> None:
        threading.Thread(target=server.stop, daemon=True).start()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    channel = ControlChannel(conn, server.handler.execute, on_close=stop, name=f"worker-{index}").start()
    server.use_cluster(SupervisedCluster(channel))
    server.start(models)
    try:
        channel.call("ready", {"index": index, "models": server.handler.repository.ready_count()}, timeout=10)
    except Exception:
        logging.getLogger(__name__).warning("could not report ready to the supervisor")
    server.wait()


def main() -> None:
    from multiprocessing.connection import Connection

    conn = Connection(int(sys.argv[1]))
    config, index, models, log_level, log_format = conn.recv()
    worker_main(config, index, conn, models, log_level, log_format)


if __name__ == "__main__":
    main()
