"""The directory where every process of one server writes its Prometheus samples.

Kept apart from `metrics`: the directory must be chosen before prometheus_client
creates any metric, that is, before `tensorwire.server.metrics` is imported.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_metrics_directory() -> pathlib.Path:
    """A fresh directory for this server's samples, exported to the processes it starts."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="tensorwire-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def remove_metrics_directory(path: pathlib.Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
