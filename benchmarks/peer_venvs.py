"""Virtualenvs for peers that need other pins than tensorwire (MLServer, lleaves): their python, their environment, version bounds.

Standard library only: bench_trees.py's lleaves worker imports it inside lleaves' virtualenv.
"""

from __future__ import annotations

import os
import pathlib
import sys


def venv_python(venv: pathlib.Path) -> pathlib.Path:
    return venv / "bin" / "python"


def clean_env(venv: pathlib.Path) -> dict[str, str]:
    """This environment without tensorwire's virtualenv, with the peer's first on PATH and one BLAS/OpenMP thread per process
    (parallelism comes from worker processes, as in tensorwire, or is measured on one thread)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not p.startswith(sys.prefix)]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    env["VIRTUAL_ENV"] = str(venv)
    env["PYTHONUNBUFFERED"] = "1"
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


def older(version: str, bound: str) -> bool:
    """Whether major.minor of `version` is below `bound` ("0.45"); False when it cannot be read."""
    try:
        return tuple(int(x) for x in version.split(".")[:2]) < tuple(int(x) for x in bound.split("."))
    except ValueError:
        return False
