"""`tensorwire warm MODEL_REPOSITORY`: compile every model's kernels into numba's cache before the server needs them.

Loading a model compiles its kernels (`cache=True`), which writes their machine code
to numba's cache: NUMBA_CACHE_DIR, or `__pycache__` beside the installed kernels. A
server started later with the same package, cache location, NUMBA_CPU_NAME and
TENSORWIRE_KERNEL_THREADS loads that code instead of compiling it. The cache is keyed
by kernel and argument types, not by model data, so it also covers other models of
the same families and precisions. The container image runs this at build time.
"""

from __future__ import annotations

import logging
import os
import pathlib
import subprocess
import sys
import time
from dataclasses import dataclass

from tensorwire.server.repository.layout import model_names
from tensorwire.server.repository.model_repository import READY, ModelRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmReport:
    ready: int  # model versions that loaded
    failures: list[str]  # "model version N: reason" for those that did not
    seconds: float
    cache_dir: str | None  # NUMBA_CACHE_DIR, where set
    cached_kernels: int | None  # compiled kernel indexes found there (None without NUMBA_CACHE_DIR)


def warm_repository(root: os.PathLike[str] | str, names: list[str] | None = None, processes: int = 1) -> WarmReport:
    """Load (and so compile and cache) every model version under root, or of the named models; `processes` compile at once."""
    started = time.perf_counter()
    repository = ModelRepository(pathlib.Path(root))
    load_compiling_in_parallel(repository, names, processes)
    failures = [f"{e.name} version {s.version}: {s.reason}" for e in repository.entries() for s in e.versions.values() if s.state != READY]
    cache_dir = os.environ.get("NUMBA_CACHE_DIR") or None
    cached = None if cache_dir is None else len(list(pathlib.Path(cache_dir).rglob("*.nbi")))
    return WarmReport(repository.ready_count(), failures, time.perf_counter() - started, cache_dir, cached)


COLD_LOAD_SECONDS = 1.0  # a first model that took longer was compiled, not read from the cache: compile the rest in parallel


def load_compiling_in_parallel(repository: ModelRepository, names: list[str] | None, processes: int) -> None:
    """repository.load_all(names), with a cold cache compiled by `processes` processes at once.

    The first model tells whether the cache is warm (it loads in well under COLD_LOAD_SECONDS).
    If it is not, the other models are shared out: `tensorwire warm` processes compile their
    shares into the cache while this one loads its own, then it loads theirs from the cache.
    """
    requested = names  # None: every model, and load_all explains a repository laid out wrong
    if names is None and not repository.root.is_dir():
        repository.load_all(None)  # which says what is wrong with the root
        return
    names = model_names(repository.root) if names is None else list(names)
    started = time.perf_counter()
    rest = names[1:]
    if names:
        repository.load_all(names[:1])
    if processes < 2 or len(rest) < 2 or time.perf_counter() - started < COLD_LOAD_SECONDS:
        repository.load_all(requested)
        return
    shares = [rest[i::processes] for i in range(min(processes, len(rest)))]
    log.info("kernels are being compiled (nothing cached yet): %d more models, in %d processes at once", len(rest), len(shares))
    helpers = [
        subprocess.Popen([sys.executable, "-m", "tensorwire", "warm", str(repository.root), "--processes=1", *(f"--model={name}" for name in share)], stdout=subprocess.DEVNULL)
        for share in shares[1:]
    ]
    repository.load_all(shares[0])
    for helper in helpers:
        helper.wait()  # a helper that failed only leaves its models to be compiled below
    repository.load_all(requested)
