"""Workers forked from the worker template: they share its memory, restart without loading anything, and stay correct.

The template (server/process/template.py) loads every model once; the workers are
its forks. What is checked here holds without any time threshold: a worker's
memory is mostly pages it shares, a restarted worker loads no model, a model
loaded or unloaded after the fork is honoured by a restarted worker, parallel
kernels work in a forked worker, and the server outlives its template.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression

import tensorwire
from tensorwire.client import InferenceClient
from tensorwire.client.errors import InferenceServerError

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="the worker template needs Linux (pidfd_open, child subreapers)")

RNG = np.random.default_rng(11)
X_TRAIN = RNG.standard_normal((300, 6))


@pytest.fixture(scope="module")
def estimators() -> dict[str, Any]:
    return {
        "logistic": LogisticRegression().fit(X_TRAIN, (X_TRAIN[:, 0] + X_TRAIN[:, 1] > 0).astype(int)),
        "kmeans": KMeans(n_clusters=4, n_init=2, random_state=0).fit(X_TRAIN),
    }


@pytest.fixture()
def repository(tmp_path: pathlib.Path, estimators: dict[str, Any]) -> pathlib.Path:
    root = tmp_path / "models"
    for name, estimator in estimators.items():
        tensorwire.export(estimator, root / name / "1")
    return root


def wait_until(condition: Callable[[], Any], what: str, server: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} did not happen; log:\n{server.log()[-4000:]}"
        time.sleep(0.05)
    return result


def memory(pid: int) -> dict[str, int]:
    """kB figures of /proc/PID/smaps_rollup."""
    text = pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text()
    return {key: int(value) for key, value in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}


def comm(pid: int) -> str:
    return pathlib.Path(f"/proc/{pid}/comm").read_text().strip()


def children(pid: int) -> list[int]:
    return [int(p) for p in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def template_of(supervisor: int) -> int:
    (template,) = [pid for pid in children(supervisor) if comm(pid) == "tw-template"]
    return template


OUTPUT = {"logistic": "predict", "kmeans": "predict"}


def score_everywhere(url: str, model: str, rows: int = 8, calls: int = 40) -> list[np.ndarray]:
    """Enough calls over fresh connections that every worker (SO_REUSEPORT spreads connections) answers some."""
    X = np.ascontiguousarray(X_TRAIN[:rows], dtype=np.float32)
    answers = []
    for _ in range(calls):
        with InferenceClient(url) as client:
            answers.append(client.infer(model, X)[OUTPUT[model]])
    return answers


def worker_lines(server: Any, pattern: str) -> list[str]:
    return [line for line in server.log().splitlines() if re.search(r" worker-\d ", line) and re.search(pattern, line)]


def test_workers_are_forks_of_the_template_and_share_most_of_their_memory(start_tensorwire: Any, worker_pids: Any, repository: pathlib.Path, estimators: dict[str, Any]) -> None:
    server = start_tensorwire(repository, "--workers", "2")
    expected = estimators["logistic"].predict(X_TRAIN[:8].astype(np.float32))
    for answer in score_everywhere(server.url, "logistic"):
        np.testing.assert_array_equal(answer, expected)
    workers = worker_pids(server.process.pid)
    assert sorted(comm(pid) for pid in workers) == ["tw-worker-0", "tw-worker-1"]
    assert template_of(server.process.pid) not in workers
    for pid in workers:
        figures = memory(pid)
        private = figures["Private_Clean"] + figures["Private_Dirty"]
        # a worker that had imported and compiled everything itself would hold nearly all of its RSS privately
        assert private * 3 < figures["Rss"], f"worker {pid} holds {private} kB of its {figures['Rss']} kB privately"
    assert not worker_lines(server, r"model \w+ version \d+: loading"), "a forked worker loaded a model the template holds"


def test_a_killed_worker_is_replaced_by_a_fork_that_loads_nothing(start_tensorwire: Any, worker_pids: Any, repository: pathlib.Path, estimators: dict[str, Any]) -> None:
    server = start_tensorwire(repository, "--workers", "2")
    before = worker_pids(server.process.pid)
    os.kill(before[0], signal.SIGKILL)
    after = wait_until(lambda: (pids := worker_pids(server.process.pid)) and len(pids) == 2 and before[0] not in pids and pids, "the restart", server)
    (new,) = set(after) - set(before)
    assert comm(new).startswith("tw-worker-")
    wait_until(lambda: len(re.findall(r"worker \d ready in", server.log())) >= 3, "the new worker's ready report", server)
    assert not worker_lines(server, r"model \w+ version \d+: loading")
    expected = estimators["kmeans"].predict(X_TRAIN[:8].astype(np.float32).astype(np.float64))
    for answer in score_everywhere(server.url, "kmeans"):
        np.testing.assert_array_equal(answer, expected)


def test_a_restarted_worker_serves_the_models_loaded_and_unloaded_since_the_fork(
    start_tensorwire: Any, worker_pids: Any, repository: pathlib.Path, tmp_path: pathlib.Path, estimators: dict[str, Any]
) -> None:
    server = start_tensorwire(repository, "--workers", "2", "--model-control-mode", "explicit", "--load-model", "logistic")
    tensorwire.export(LogisticRegression().fit(X_TRAIN, (X_TRAIN[:, 2] > 0).astype(int)), repository / "late" / "1")
    with InferenceClient(server.url) as client:
        client.repository_model_load("late")
        client.repository_model_unload("logistic")
    for pid in worker_pids(server.process.pid):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: len(re.findall(r"worker \d ready in", server.log())) >= 4, "both restarts", server)
    for _ in range(20):
        with InferenceClient(server.url) as client:
            assert client.infer("late", X_TRAIN[:4].astype(np.float32))["predict"].shape == (4,)
            with pytest.raises(InferenceServerError, match="logistic"):
                client.infer("logistic", X_TRAIN[:4].astype(np.float32))


def test_parallel_kernels_run_in_forked_workers(start_tensorwire: Any, repository: pathlib.Path, estimators: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The template never starts numba's thread pool (GNU OpenMP aborts a child forked after it did): workers start their own."""
    monkeypatch.setenv("TENSORWIRE_KERNEL_THREADS", "2")
    monkeypatch.setenv("TENSORWIRE_PARALLEL_ROWS", "64")
    server = start_tensorwire(repository, "--workers", "2")
    X = RNG.standard_normal((3000, 6)).astype(np.float32)  # more rows than a request plan scores: the scorers' own, parallel, path
    for _ in range(10):
        with InferenceClient(server.url) as client:
            np.testing.assert_array_equal(client.infer("kmeans", X)["predict"], estimators["kmeans"].predict(X.astype(np.float64)))
            np.testing.assert_array_equal(client.infer("logistic", X)["predict"], estimators["logistic"].predict(X))
    assert "Terminating" not in server.log() and "killed by signal" not in server.log()
    assert not re.search(r"each worker loads the models itself|load the models themselves", server.log())


def test_the_server_outlives_its_template(start_tensorwire: Any, worker_pids: Any, repository: pathlib.Path, estimators: dict[str, Any]) -> None:
    """A dead template costs speed, not service: workers from then on start as processes of their own."""
    server = start_tensorwire(repository, "--workers", "2")
    os.kill(template_of(server.process.pid), signal.SIGKILL)
    (victim, _) = worker_pids(server.process.pid)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: re.search(r"workers from now on load the models themselves", server.log()), "the fallback", server)
    wait_until(lambda: len(re.findall(r"worker \d ready in", server.log())) >= 3, "the restart", server)
    expected = estimators["logistic"].predict(X_TRAIN[:8].astype(np.float32))
    for answer in score_everywhere(server.url, "logistic"):
        np.testing.assert_array_equal(answer, expected)
