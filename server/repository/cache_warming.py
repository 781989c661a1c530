"""`tensorwire warm MODEL_REPOSITORY`: compile every model's kernels into numba's cache before the server needs them.

Loading a model compiles its kernels (`cache=True`), which writes their machine code
to numba's cache: NUMBA_CACHE_DIR, or `__pycache__` beside the installed kernels. A
server started later with the same package, cache location, NUMBA_CPU_NAME and
TENSORWIRE_KERNEL_THREADS loads that code instead of compiling it. The cache is keyed
by kernel and argument types, not by model data, so it also covers other models of
the same families and precisions. The container image runs this at build time.
"""

from __future__ import annotations

import os
import pathlib
import time
from dataclasses import dataclass

from tensorwire.server.repository.model_repository import READY, ModelRepository


@dataclass(frozen=True)
class WarmReport:
    ready: int  # model versions that loaded
    failures: list[str]  # "model version N: reason" for those that did not
    seconds: float
    cache_dir: str | None  # NUMBA_CACHE_DIR, where set
    cached_kernels: int | None  # compiled kernel indexes found there (None without NUMBA_CACHE_DIR)


def warm_repository(root: os.PathLike[str] | str) -> WarmReport:
    """Load (and so compile and cache) every model version under root."""
    started = time.perf_counter()
    repository = ModelRepository(root)
    repository.load_all()
    failures = [f"{e.name} version {s.version}: {s.reason}" for e in repository.entries() for s in e.versions.values() if s.state != READY]
    cache_dir = os.environ.get("NUMBA_CACHE_DIR") or None
    cached = None if cache_dir is None else len(list(pathlib.Path(cache_dir).rglob("*.nbi")))
    return WarmReport(repository.ready_count(), failures, time.perf_counter() - started, cache_dir, cached)
