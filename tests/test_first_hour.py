"""What a new user meets first: the command line's help and version, errors that name their fix, an empty repository."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from .conftest import RunningServer, start_server, stop_server


def tensorwire(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tensorwire", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture()
def busy_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_version_and_help_say_what_a_user_needs() -> None:
    from tensorwire.server.version import VERSION

    version = tensorwire("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"tensorwire {VERSION}"
    help_text = " ".join(tensorwire("serve", "--help").stdout.split())
    for flag, default in (("--repository-poll-secs", "5.0"), ("--grace-period", "10.0"), ("--max-receive-mb", "64"), ("--max-rows", "1000000"), ("--max-model-mb", "4096")):
        assert f"(default: {default})" in help_text.split(flag, 2)[2][:300], flag
    assert "TENSORWIRE_<NAME>" in help_text and "TENSORWIRE_AUTH_TOKENS_FILE" in help_text
    assert "the least severe log lines" in help_text


def test_load_model_can_come_from_the_environment(model_repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    from tensorwire.client import InferenceClient

    os.environ["TENSORWIRE_LOAD_MODEL"] = "ols,ridge"
    try:
        server = start_server(model_repository, tmp_path / "server.log", "--workers", "1", "--model-control-mode", "explicit")
    finally:
        del os.environ["TENSORWIRE_LOAD_MODEL"]
    try:
        with InferenceClient(server.url) as client:
            assert {m.name for m in client.repository_index(ready_only=True).models} == {"ols", "ridge"}
    finally:
        stop_server(server)


def test_export_does_not_replace_a_version_unless_forced(tmp_path: pathlib.Path) -> None:
    import joblib
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    pickled = tmp_path / "model.joblib"
    joblib.dump(LinearRegression().fit(rng.standard_normal((20, 3)), rng.standard_normal(20)), pickled)
    version = tmp_path / "models" / "m" / "1"
    assert tensorwire("export", str(pickled), str(version), "--trust-pickle").returncode == 0
    again = tensorwire("export", str(pickled), str(version), "--trust-pickle")
    assert again.returncode == 1 and "--force" in again.stderr
    assert tensorwire("export", str(pickled), str(version), "--trust-pickle", "--force").returncode == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_busy_metrics_port_is_named_with_its_flag(model_repository: pathlib.Path, busy_port: int, workers: str) -> None:
    result = tensorwire("serve", str(model_repository), "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", str(busy_port), "--workers", workers)
    assert result.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{busy_port}" in result.stderr and "--metrics-port" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_busy_grpc_port_is_named_with_its_flag(model_repository: pathlib.Path, busy_port: int, workers: str) -> None:
    result = tensorwire("serve", str(model_repository), "--host", "127.0.0.1", "--grpc-port", str(busy_port), "--metrics-port", "0", "--workers", workers)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{busy_port}" in result.stderr and "--grpc-port" in result.stderr
    assert "add_port" not in result.stderr + result.stdout  # grpc core's own error line


@pytest.mark.parametrize("layout", ["empty", "model folder", "version folder"])
def test_a_repository_without_models_says_what_layout_was_expected(model_repository: pathlib.Path, tmp_path: pathlib.Path, layout: str) -> None:
    root = {"empty": tmp_path / "empty", "model folder": model_repository / "ols", "version folder": model_repository / "ols" / "1"}[layout]
    root.mkdir(exist_ok=True)
    server: RunningServer = start_server(root, tmp_path / "server.log", "--workers", "1")
    try:
        log = server.log()
    finally:
        stop_server(server)
    assert f"no models in {root}: expected {root}/<model name>/<version number>/model.npz" in log
    if layout == "model folder":
        assert "it looks like a model folder, give the folder above it" in log
    if layout == "version folder":
        assert "give the repository two folders above it" in log


def test_an_unknown_model_lists_the_models_there_are(client: Any) -> None:
    from tensorwire.client import ModelNotFoundError

    with pytest.raises(ModelNotFoundError) as info:
        client.infer("flower", np.ones((1, 6), np.float32))
    assert "models: " in str(info.value) and "flowers" in str(info.value)


def test_start_up_says_what_it_is_doing_and_when_it_serves(model_repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    import time

    server = start_server(model_repository, tmp_path / "server.log", "--workers", "2")
    try:
        deadline = time.monotonic() + 60
        while "ready: serving" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = server.log()
    finally:
        stop_server(server)
    reserved = log.index(f"reserved 127.0.0.1:{server.port}; starting 2 workers")
    loading = log.index("model ols version 1: loading, compiling its kernels if this machine has not cached them")
    ready = log.index(f"ready: serving 5 model versions on 127.0.0.1:{server.port} with 2 workers")
    assert reserved < loading < ready


def test_a_cold_cache_is_compiled_in_parallel_and_every_process_logs_alike(
    model_repository: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing cached, `tensorwire warm` processes compile beside the template; their lines follow --log-format."""
    import json
    import time

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty-cache"))
    server = start_server(model_repository, tmp_path / "server.log", "--workers", "2", "--log-format", "json")
    try:
        deadline = time.monotonic() + 60
        while "ready: serving" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        lines = server.log().splitlines()
    finally:
        stop_server(server)
    records = [json.loads(line) for line in lines if line.strip()]  # every line a JSON object
    messages = {(record["process"], record["message"].split(":")[0]) for record in records}
    assert ("template", "kernels are being compiled (nothing cached yet)") in messages
    assert any(process == "warm" for process, _ in messages), "no model was compiled by a warm process"
    assert any(record["message"].startswith("ready: serving 5 model versions") for record in records)
    assert list((tmp_path / "empty-cache").rglob("*.nbi")), "nothing was written to the cache"
