"""The worker template: one process that loads every model once, then forks the workers.

Forked workers share the template's memory copy-on-write: numba, LLVM and the
compiled kernels, numpy, grpc's libraries and the models' arrays are in memory
once however many workers run, and a worker that replaces a dead one serves
within a fraction of a second instead of importing and loading everything again.

What keeps the fork safe: the template creates no gRPC object (each worker
creates its own server after the fork), starts no thread (numba's thread pool is
forbidden here; a dynamic batcher starts its thread on its first request), and
so is single-threaded whenever it forks.

Each worker is forked from a short-lived middle process that exits at once, so
that the worker is adopted by the supervisor (a child subreaper): the supervisor
waits for it, sees how it ended and restarts it, as a process it started itself.

The supervisor starts it as `python -m tensorwire.server.process.template FD`, FD
being its end of the control pipe. The first message holds (config, models,
log_level, log_format); the template answers with the number of model versions
it loaded (None if it cannot fork). Then each message holds a worker's arguments, followed by the
worker's end of its own control pipe (a passed file descriptor); the answer is
the worker's pid. The template exits when the pipe closes.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys
import time
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from tensorwire.kernels.config import forbid_thread_pool, thread_pool_started
from tensorwire.server.process.logs import configure_logging
from tensorwire.server.process.worker import die_with_parent, name_process, worker_main

log = logging.getLogger(__name__)

PID_BYTES = 8


def template_main(conn: Connection) -> None:
    die_with_parent()
    name_process("tw-template")
    config, models, log_level, log_format = conn.recv()
    configure_logging(log_level, log_format, "template")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the supervisor decides
    forbid_thread_pool()
    from tensorwire.server.process.app import open_repository
    from tensorwire.server.repository.cache_warming import load_compiling_in_parallel

    started = time.perf_counter()
    repository = open_repository(config)
    load_compiling_in_parallel(repository, models, os.cpu_count() or 1)
    log.info("%d model versions loaded in %.2fs; workers are forked from here and share them", repository.ready_count(), time.perf_counter() - started)
    if thread_pool_started():  # a model's load ran a parallel kernel after all: a forked child would abort in it
        log.error("numba's thread pool started while loading; the workers cannot be forked from here")
        conn.send(None)
        return
    gc.collect()
    release_compiler_pages()
    gc.freeze()  # what is loaded stays out of every later collection, which would otherwise copy its pages into each worker
    conn.send(repository.ready_count())
    supervisor = os.getppid()
    while True:
        try:
            args = conn.recv()
            fd = reduction.recv_handle(conn)
        except (EOFError, OSError):
            return
        conn.send(fork_worker(conn, fd, args, repository, supervisor))


MADV_PAGEOUT = 21  # Linux 5.4+


def release_compiler_pages() -> None:
    """Evict the LLVM library pages that loading touched and no worker uses (about 28 MiB): MADV_PAGEOUT reclaims
    clean file pages mapped by this process alone and never changes memory contents. A worker that compiles later
    reads them back from the file."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) == 6 and fields[5].endswith("libllvmlite.so"):
                start, end = (int(bound, 16) for bound in fields[0].split("-"))
                libc.madvise(start, end - start, MADV_PAGEOUT)  # refused on older kernels: nothing lost


def fork_worker(conn: Connection, fd: int, args: tuple[Any, ...], repository: Any, supervisor: int) -> int:
    """Fork a worker that runs worker_main(*args) on the control pipe `fd`; its pid, once the supervisor has adopted it."""
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        code = 1
        try:
            os.close(read_end)
            middle_pid = os.getpid()
            pid = os.fork()
            if pid == 0:
                os.close(write_end)
                _run_worker(conn, fd, args, repository, supervisor, middle_pid)
            os.write(write_end, pid.to_bytes(PID_BYTES, "little"))
            code = 0
        finally:
            os._exit(code)  # the worker is orphaned now, and the supervisor adopts it
    os.close(write_end)
    os.close(fd)
    data = os.read(read_end, PID_BYTES)
    os.close(read_end)
    os.waitpid(middle, 0)
    if len(data) != PID_BYTES:
        raise OSError("forking a worker failed")
    return int.from_bytes(data, "little")


def _run_worker(conn: Connection, fd: int, args: tuple[Any, ...], repository: Any, supervisor: int, middle: int) -> NoReturn:
    code = 1
    try:
        conn.close()  # the template's pipe: the template notices its supervisor leaving, the workers their own pipe
        while os.getppid() == middle:  # until the middle process has exited and the supervisor adopted us (it may have already)
            time.sleep(0.0005)
        if os.getppid() == supervisor:  # otherwise the supervisor is gone too
            forbid_thread_pool(False)
            config, index, models, log_level, log_format = args
            worker_main(config, index, Connection(fd), models, log_level, log_format, repository=repository)
            code = 0
    except BaseException:
        log.exception("worker failed")
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    template_main(Connection(int(sys.argv[1])))


if __name__ == "__main__":
    main()
