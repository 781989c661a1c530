"""Image build step: compile every model's numba kernels into NUMBA_CACHE_DIR, so a new container starts warm.

    NUMBA_CACHE_DIR=/var/cache/tensorwire/numba python warm_cache.py /models

Loading a model compiles and warms its kernels (`cache=True`), which writes the
machine code under NUMBA_CACHE_DIR. A server started later with the same
package files, NUMBA_CACHE_DIR and NUMBA_CPU_NAME loads that code instead of
compiling it. The cache is keyed by kernel and argument types, not by model
data, so it also covers other models of the same families and precisions.

Fails (exit 1) when a model does not load, when there is no model, or when
nothing was cached (for instance an unwritable cache folder, which numba
silently skips): a broken image must not build.
"""

from __future__ import annotations

import logging
import os
import pathlib
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: warm_cache.py MODEL_REPOSITORY", file=sys.stderr)
        return 2
    cache_dir = os.environ.get("NUMBA_CACHE_DIR")
    if not cache_dir:
        # without it numba caches beside the installed sources, where the server's user cannot look it up
        print("warm_cache.py: set NUMBA_CACHE_DIR to the folder the server will read", file=sys.stderr)
        return 2
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    import numba

    from tensorwire.server.repository.model_repository import READY, ModelRepository

    started = time.perf_counter()
    repository = ModelRepository(argv[0])
    repository.load_all()
    failed = [f"{e.name} version {s.version}: {s.reason}" for e in repository.entries() for s in e.versions.values() if s.state != READY]
    ready = repository.ready_count()
    cached = sorted(pathlib.Path(cache_dir).rglob("*.nbi"))
    print(
        f"warmed {ready} model versions in {time.perf_counter() - started:.1f}s: "
        f"{len(cached)} kernels cached in {cache_dir} for CPU {numba.config.CPU_NAME or 'host'}"
    )
    for failure in failed:
        print(f"warm_cache.py: {failure}", file=sys.stderr)
    if failed or ready == 0 or not cached:
        if ready == 0:
            print(f"warm_cache.py: no model loaded from {argv[0]}", file=sys.stderr)
        if not cached:
            print(f"warm_cache.py: nothing was written to {cache_dir} (is it writable by this user?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
