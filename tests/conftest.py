"""Shared fixtures: a model repository made from freshly fitted estimators, and a real server subprocess."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

SERVER_START_TIMEOUT = 120.0  # first start compiles kernels; later starts hit the numba cache


@dataclass
class RunningServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: pathlib.Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def plaintext_ready(url: str) -> bool:
    from tensorwire.client import InferenceClient, InferenceServerError

    with InferenceClient(url) as client:
        try:
            return client.server_ready(timeout=1)
        except InferenceServerError:
            return False


def start_server(repository: pathlib.Path, log_path: pathlib.Path, *extra: str, ready: Callable[[int], bool] | None = None) -> RunningServer:
    """Start `tensorwire serve` on a free loopback port and wait until `ready(port)` (default: ServerReady in plaintext)."""

    log_file = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorwire", "serve", str(repository), "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", *extra],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log_file.close()
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    port = None
    while port is None:
        match = re.search(r"(?:listening on|reserved) 127\.0\.0\.1:(\d+)", log_path.read_text(errors="replace"))
        if match:
            port = int(match.group(1))
        elif process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server did not start:\n{log_path.read_text(errors='replace')}")
        else:
            time.sleep(0.05)
    url = f"127.0.0.1:{port}"
    is_ready = ready or (lambda p: plaintext_ready(f"127.0.0.1:{p}"))
    while not is_ready(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server never became ready:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.05)
    return RunningServer(url, port, process, log_path)


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@dataclass
class Fitted:
    """A fitted estimator, the repository name it is served under, and data to query it with."""

    name: str
    estimator: Any
    X: np.ndarray
    dtype: str


def _fitted_models() -> list[Fitted]:
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(42)
    X = rng.standard_normal((300, 6))
    y3 = np.array(["setosa", "versicolor", "virginica"])[np.argmax(X[:, :3] + 0.3 * rng.standard_normal((300, 3)), axis=1)]
    y2 = (X[:, 0] - X[:, 1] > 0).astype(int)
    yr = X @ rng.standard_normal(6) + 0.1 * rng.standard_normal(300)
    return [
        Fitted("flowers", make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X * 3 + 1, y3), X * 3 + 1, "float32"),
        Fitted("binary", LogisticRegression().fit(X, y2), X, "float32"),
        Fitted("svm", LinearSVC().fit(X, y2 * 2 + 5), X, "float64"),
        Fitted("ridge", Ridge().fit(X, yr), X, "float64"),
        Fitted("ols", LinearRegression().fit(X, yr), X, "float32"),
    ]


@pytest.fixture(scope="session")
def fitted_models() -> dict[str, Fitted]:
    return {f.name: f for f in _fitted_models()}


CORRUPT_MODEL = "broken"


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory, fitted_models: dict[str, Fitted]) -> pathlib.Path:
    import tensorwire

    root = tmp_path_factory.mktemp("models")
    for fitted in fitted_models.values():
        tensorwire.export(fitted.estimator, root / fitted.name / "1", dtype=fitted.dtype)
    (root / CORRUPT_MODEL / "1").mkdir(parents=True)
    (root / CORRUPT_MODEL / "1" / "model.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    return root


ENGINES = ("aio", "sync")  # tensorwire serve --engine: every test of the shared server runs on both


@pytest.fixture(scope="session", params=ENGINES)
def server(request: pytest.FixtureRequest, model_repository: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The default server (one worker per CPU) on each gRPC engine in turn."""
    engine = request.param
    running = start_server(model_repository, tmp_path_factory.mktemp("logs") / f"server-{engine}.log", "--engine", engine)
    yield running
    stop_server(running)


@pytest.fixture()
def start_tensorwire(tmp_path: pathlib.Path) -> Iterator[Any]:
    """A factory: start_tensorwire(repository, *flags) -> RunningServer, stopped at the end of the test."""
    started: list[RunningServer] = []

    def start(repository: pathlib.Path, *extra: str, ready: Callable[[int], bool] | None = None) -> RunningServer:
        running = start_server(repository, tmp_path / f"server-{len(started)}.log", *extra, ready=ready)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            stop_server(running)


@pytest.fixture()
def client(server: RunningServer) -> Iterator[Any]:
    from tensorwire.client import InferenceClient

    with InferenceClient(server.url) as c:
        yield c


def _worker_pids(supervisor_pid: int) -> list[int]:
    """The worker processes of a supervisor: its children forked by the worker template (named tw-worker-N), or started on their own."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            forked = (entry / "comm").read_text().startswith("tw-worker-")
            spawned = b"tensorwire.server.process.worker" in (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == supervisor_pid and (forked or spawned):
            found.append(int(entry.name))
    return found


@pytest.fixture()
def worker_pids() -> Callable[[int], list[int]]:
    """worker_pids(supervisor_pid) -> the pids of its worker processes."""
    return _worker_pids


@pytest.fixture()
def client_load(tmp_path: pathlib.Path) -> Callable[..., Any]:
    """client_load(url, model, processes=2, channels=2): a context manager running tests/load_client.py.

    The clients send requests in a closed loop from the moment each has had a first
    answer (the block starts then) until the block ends; the yielded list then holds
    one {"ok": n, "failures": [[status, details], ...]} per client process.
    """

    @contextmanager
    def run(url: str, model: str, processes: int = 2, channels: int = 2, n_features: int = 5) -> Iterator[list[dict[str, Any]]]:
        stop_file = tmp_path / f"stop-{model}"
        results = [tmp_path / f"result-{model}-{i}.json" for i in range(processes)]
        script = pathlib.Path(__file__).resolve().parent / "load_client.py"
        procs = [
            subprocess.Popen([sys.executable, str(script), url, model, str(n_features), "float32", str(stop_file), str(r), str(channels)])
            for r in results
        ]
        collected: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + 60
            while not all(r.with_name(r.name + ".started").exists() for r in results):
                assert time.monotonic() < deadline, "the load clients never got an answer"
                time.sleep(0.1)
            yield collected
        finally:
            stop_file.touch()
            for proc in procs:
                proc.wait(timeout=60)
            collected.extend(json.loads(r.read_text()) for r in results)

    return run
