"""The install layout: one `tensorwire` namespace, nothing generic in site-packages."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["server", "client", "kernels", "protos", "loadtest"])
def test_top_level_folders_are_not_importable_by_their_folder_names(module: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr


@pytest.mark.parametrize("module", ["tensorwire.server", "tensorwire.client", "tensorwire.kernels", "tensorwire.protos.codec"])
def test_folders_import_under_the_tensorwire_namespace(module: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_client_does_not_import_numba_or_scikit_learn(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = "import sys, tensorwire.client; print(sorted(m for m in ('numba', 'sklearn', 'scipy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_client_exports_exactly_its_public_names() -> None:
    import tensorwire.client

    public = {name for name in dir(tensorwire.client) if not name.startswith("_")}
    modules = {"client", "errors", "aio", "bench", "bench_args", "channels", "synthetic"}  # submodules, once imported
    assert public - modules == set(tensorwire.client.__all__)
