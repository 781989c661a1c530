"""Every JIT option tensorwire's kernels use, in one place.

Kernels decorate themselves with `kernel` (serial), `parallel_kernel`, or
`request_kernel` (a whole small request in one call, keeping the GIL); a test
checks that no kernel module calls numba.njit directly.

Environment:
    TENSORWIRE_KERNEL_THREADS   numba threads per process for parallel kernels (default 1:
                                the server runs one worker process per core, and parallel
                                variants are neither compiled nor run)
    TENSORWIRE_PARALLEL_ROWS    batch size from which a parallel variant is used
    TENSORWIRE_KERNEL_NOGIL     0 compiles kernels that keep the GIL (default 1: they release it)
    NUMBA_CACHE_DIR             where compiled code is cached (numba's own variable)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import numba

F = TypeVar("F", bound=Callable[..., Any])

CACHE = True  # compiled code persists on disk, so a new worker starts warm
# Kernels release the GIL so that gRPC threads keep serving while one scores
# (TENSORWIRE_KERNEL_NOGIL=0 keeps it: an experiment knob for tiny kernels).
NOGIL = os.environ.get("TENSORWIRE_KERNEL_NOGIL", "1") != "0"
FASTMATH = False  # exact IEEE semantics: results must match scikit-learn
PARALLEL_MIN_ROWS = int(os.environ.get("TENSORWIRE_PARALLEL_ROWS", "4096"))
THREAD_BUDGET = int(os.environ.get("TENSORWIRE_KERNEL_THREADS", "1"))

JIT_OPTIONS: dict[str, Any] = {"cache": CACHE, "nogil": NOGIL, "fastmath": FASTMATH}

# Set in a process that forks workers (server/process/template.py): numba's thread pool must not start there,
# because GNU OpenMP aborts a child forked after its pool started, and compiling a parallel kernel starts it.
_thread_pool_forbidden = False


def kernel(func: F) -> F:
    """Compile a serial kernel with the project's options."""
    return numba.njit(**JIT_OPTIONS)(func)  # type: ignore[no-any-return]


def request_kernel(func: F) -> F:
    """Compile a kernel that answers one small request start to finish (microseconds). It keeps the GIL:
    releasing it for so short a call costs the server's other threads more context switches than it saves."""
    return numba.njit(**{**JIT_OPTIONS, "nogil": False})(func)  # type: ignore[no-any-return]


def inlined(func: F) -> F:
    """Compile a small helper that numba inlines into every kernel calling it (in its IR, before LLVM sees it)."""
    return numba.njit(inline="always", **JIT_OPTIONS)(func)  # type: ignore[no-any-return]


def parallel_kernel(func: F) -> F:
    """Compile a kernel whose outer loop is numba.prange, for batches of PARALLEL_MIN_ROWS or more."""
    return numba.njit(parallel=True, **JIT_OPTIONS)(func)  # type: ignore[no-any-return]


def parallel_enabled() -> bool:
    """Whether parallel variants run (and are compiled at load): only with more than one kernel thread, never in a forking process."""
    return THREAD_BUDGET > 1 and not _thread_pool_forbidden


def forbid_thread_pool(forbidden: bool = True) -> None:
    """Keep parallel variants from compiling or running in this process (a process that forks workers), or allow them again."""
    global _thread_pool_forbidden
    _thread_pool_forbidden = forbidden


def thread_pool_started() -> bool:
    """Whether numba's threading layer has started in this process (a process that forks must not have started it)."""
    try:
        numba.threading_layer()
    except ValueError:  # numba's answer while no threading layer is initialised
        return False
    return True


def apply_thread_budget() -> None:
    """Cap numba's thread pool at THREAD_BUDGET (call once per process, before scoring); with one thread it never starts."""
    if parallel_enabled():
        numba.set_num_threads(max(1, min(THREAD_BUDGET, numba.config.NUMBA_NUM_THREADS)))
