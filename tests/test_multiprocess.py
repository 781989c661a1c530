"""The multi-process server end to end: workers, restarts, hot reload under load, drain, statistics and metrics."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import threading
import time
import urllib.request
from collections import Counter
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

import tensorwire
from tensorwire.client import InferenceClient



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fit_models(root: pathlib.Path) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 5))
    models = {
        "steady": LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)),
        "churn": Ridge().fit(X, X @ np.arange(5.0)),
    }
    for name, estimator in models.items():
        tensorwire.export(estimator, root / name / "1")
    return models


def wait_for_log(server: Any, pattern: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, server.log()):
        assert time.monotonic() < deadline, f"no {pattern!r} in the log:\n{server.log()}"
        time.sleep(0.1)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def metric_values(text: str, name: str, **labels: str) -> list[float]:
    values = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                values.append(float(line.rsplit(" ", 1)[1]))
    return values


@pytest.fixture()
def repository(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "models"
    fit_models(root)
    return root


def test_requests_spread_over_every_worker(start_tensorwire: Any, client_load: Any, repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    metrics_port = free_port()
    server = start_tensorwire(repository, "--workers", "2", "--metrics-port", str(metrics_port))
    with client_load(server.url, "steady", processes=1, channels=8) as results:
        time.sleep(1.0)
    sent = sum(r["ok"] for r in results)
    assert sent > 0 and not any(r["failures"] for r in results)
    text = scrape(metrics_port)
    per_worker = {w: sum(metric_values(text, "tensorwire_requests_total", model="steady", worker=w)) for w in ("0", "1")}
    assert all(count > 0 for count in per_worker.values()), per_worker
    assert sum(per_worker.values()) == sent
    assert metric_values(text, "tensorwire_request_duration_seconds_count", model="steady") == [sent]
    assert metric_values(text, "tensorwire_batch_size_sum", model="steady") == [4 * sent]
    assert metric_values(text, "tensorwire_models_loaded", worker="0") == [2]
    with InferenceClient(server.url) as client:
        stats = client.model_statistics("steady").model_stats[0]
    assert stats.inference_stats.success.count == sent
    assert stats.inference_count == 4 * sent


def test_a_killed_worker_is_replaced_and_only_in_flight_requests_fail(start_tensorwire: Any, worker_pids: Any, client_load: Any, repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    metrics_port = free_port()
    server = start_tensorwire(repository, "--workers", "2", "--metrics-port", str(metrics_port))
    wait_for_log(server, r"worker \d ready(.|\n)*worker \d ready")
    workers = worker_pids(server.process.pid)
    assert len(workers) == 2, workers
    with client_load(server.url, "steady", processes=2, channels=4) as results:
        killed_at = time.monotonic()
        os.kill(workers[0], signal.SIGKILL)
        wait_for_log(server, r"killed by signal 9(.|\n)*worker \d ready")
        replaced_after = time.monotonic() - killed_at
        time.sleep(1.0)  # load keeps going against the replaced set of workers
    failures = [f for r in results for f in r["failures"]]
    assert sum(r["ok"] for r in results) > 0
    assert all(code == "UNAVAILABLE" for code, _ in failures), failures
    # only the requests in flight on the killed worker can fail: one per client channel at most
    assert len(failures) <= 2 * 4, failures
    print(f"kill -9: {len(failures)} failed of {sum(r['ok'] for r in results) + len(failures)}, worker replaced and ready {replaced_after:.2f}s after the kill")
    assert len(worker_pids(server.process.pid)) == 2
    assert metric_values(scrape(metrics_port), "tensorwire_worker_restarts_total") == [1]


RELOADS = 3


def test_hot_reload_under_load_fails_no_request(start_tensorwire: Any, client_load: Any, repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    server = start_tensorwire(repository, "--workers", "2", "--model-control-mode", "explicit", "--load-model", "*")
    rng = np.random.default_rng(9)
    with InferenceClient(server.url) as client, client_load(server.url, "steady", processes=2) as results:
        for version in range(2, 2 + RELOADS):
            X = rng.standard_normal((60, 5))
            tensorwire.export(LogisticRegression().fit(X, (X[:, 1] > 0).astype(int)), repository / "steady" / str(version))
            _load(server.url, "steady")
            _load(server.url, "churn")
            _unload(server.url, "churn")
            _load(server.url, "churn")
        assert client.model_metadata("steady").versions == [str(1 + RELOADS)]
    failures = [f for r in results for f in r["failures"]]
    assert sum(r["ok"] for r in results) > 0
    assert failures == []


def _repository_call(url: str, method: str, request: Any, response_cls: Any) -> Any:
    import grpc

    with grpc.insecure_channel(url) as channel:
        call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}", request_serializer=type(request).SerializeToString, response_deserializer=response_cls.FromString)
        return call(request, timeout=120)


def _load(url: str, name: str) -> None:
    from tensorwire.protos import inference_pb2 as pb

    _repository_call(url, "RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name=name), pb.RepositoryModelLoadResponse)


def _unload(url: str, name: str) -> None:
    from tensorwire.protos import inference_pb2 as pb

    _repository_call(url, "RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name=name), pb.RepositoryModelUnloadResponse)


def test_load_applies_to_every_worker_and_reports_failures(start_tensorwire: Any, repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    import grpc

    server = start_tensorwire(repository, "--workers", "2", "--model-control-mode", "explicit", "--load-model", "steady")
    with InferenceClient(server.url) as client:
        assert not client.model_ready("churn")
        _load(server.url, "churn")
        # a new connection per call lands on either worker: every one must have it
        for _ in range(8):
            with InferenceClient(server.url, options=[("grpc.use_local_subchannel_pool", 1)]) as fresh:
                assert fresh.model_ready("churn")
        (repository / "broken" / "1").mkdir(parents=True)
        (repository / "broken" / "1" / "model.npz").write_bytes(b"junk")
        with pytest.raises(grpc.RpcError) as info:
            _load(server.url, "broken")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "broken" in info.value.details() and "cannot be read" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            _load(server.url, "../steady")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # a bad new version keeps the previous good one serving
        shutil.copytree(repository / "steady" / "1", repository / "steady" / "2")
        (repository / "steady" / "2" / "model.npz").write_bytes(b"junk")
        with pytest.raises(grpc.RpcError):
            _load(server.url, "steady")
        assert client.model_ready("steady")
        assert client.infer("steady", np.zeros((1, 5), np.float32))["predict"].shape == (1,)
        index = {(m.name, m.version): m for m in client.repository_index().models}
        assert index[("steady", "2")].state == "UNAVAILABLE"
        assert index[("steady", "1")].state == "READY"


def test_repository_api_is_refused_outside_explicit_mode(server, fitted_models) -> None:  # type: ignore[no-untyped-def]
    import grpc

    with pytest.raises(grpc.RpcError) as info:
        _load(server.url, "ols")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "explicit" in info.value.details()


def test_sigterm_drains_in_flight_requests_and_leaves_no_process(start_tensorwire: Any, worker_pids: Any, repository: pathlib.Path) -> None:
    import grpc

    from tensorwire.client._requests import build_infer_request
    from tensorwire.protos import inference_pb2 as pb

    # a batching delay keeps every request in flight (accepted, waiting in its worker) for 1 s
    (repository / "steady" / "config.json").write_text(json.dumps({"dynamic_batching": {"max_batch_size": 1000, "max_queue_delay_microseconds": 1_000_000}}))
    server = start_tensorwire(repository, "--workers", "2", "--grace-period", "20")
    wait_for_log(server, r"worker \d ready(.|\n)*worker \d ready")
    workers = worker_pids(server.process.pid)
    request = build_infer_request("steady", np.ones((2, 5), np.float32))
    channels = [grpc.insecure_channel(server.url, options=[("grpc.use_local_subchannel_pool", 1), ("test.channel", i)]) for i in range(6)]
    calls = [c.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=pb.ModelInferRequest.SerializeToString, response_deserializer=pb.ModelInferResponse.FromString) for c in channels]
    futures = [call.future(request, timeout=60) for call in calls]
    time.sleep(0.3)  # every request has reached its worker and waits in the batch queue
    assert not any(f.done() for f in futures)
    server.process.send_signal(signal.SIGTERM)
    answers = [f.result() for f in futures]
    assert all(a.outputs[0].name == "predict" for a in answers)
    assert server.process.wait(timeout=60) == 0
    for channel in channels:
        channel.close()
    assert all(not pathlib.Path(f"/proc/{pid}").exists() for pid in workers)


@pytest.mark.parametrize("engine", ["aio", "sync"])
def test_sigterm_under_load_cancels_no_call(start_tensorwire: Any, repository: pathlib.Path, engine: str) -> None:
    """gRPC's own shutdown cancels the calls it has received but no handler has taken, and under load
    there always are some; the drain holds calls first so that none is left. Every call of a
    closed-loop load ends OK or UNAVAILABLE (the port closed: retryable), never CANCELLED."""
    import grpc

    from tensorwire.client._requests import build_infer_request
    from tensorwire.protos import inference_pb2 as pb

    server = start_tensorwire(repository, "--workers", "2", "--engine", engine, "--grace-period", "20")
    wait_for_log(server, r"worker \d ready(.|\n)*worker \d ready")
    request = build_infer_request("steady", np.ones((4, 5), np.float32))
    codes: Counter[grpc.StatusCode] = Counter()
    lock, stop = threading.Lock(), threading.Event()

    def load(index: int) -> None:
        with grpc.insecure_channel(server.url, options=[("grpc.use_local_subchannel_pool", 1), ("test.channel", index)]) as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=pb.ModelInferRequest.SerializeToString)
            while not stop.is_set():
                try:
                    call(request, timeout=10)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    code = error.code()
                    time.sleep(0.01)  # no spinning on a closed port
                with lock:
                    codes[code] += 1

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while codes[grpc.StatusCode.OK] < 300:
        assert time.monotonic() < deadline, f"no load: {codes}"
        time.sleep(0.05)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0
    time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes


def test_killing_the_supervisor_leaves_no_orphan_worker(start_tensorwire: Any, worker_pids: Any, repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    server = start_tensorwire(repository, "--workers", "2")
    workers = worker_pids(server.process.pid)
    server.process.kill()
    server.process.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(pathlib.Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in workers):
        time.sleep(0.1)
    assert all(not pathlib.Path(f"/proc/{pid}").exists() or "Z" in _state(pid) for pid in workers)


def test_the_supervisor_has_no_child_but_its_workers_and_their_template(start_tensorwire: Any, worker_pids: Any, repository: pathlib.Path) -> None:
    """Workers are started without multiprocessing's spawn, whose resource tracker would be one more process."""
    server = start_tensorwire(repository, "--workers", "2")
    wait_for_log(server, r"worker \d ready(.|\n)*worker \d ready")
    children = [
        int(entry.name)
        for entry in pathlib.Path("/proc").iterdir()
        if entry.name.isdigit() and _parent(int(entry.name)) == server.process.pid
    ]
    workers = worker_pids(server.process.pid)
    assert len(workers) == 2 and set(workers) < set(children)
    assert [pathlib.Path(f"/proc/{pid}/comm").read_text().strip() for pid in set(children) - set(workers)] == ["tw-template"]


def _parent(pid: int) -> int:
    try:
        return int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def _state(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_connections_closed_by_max_age_lose_no_request(start_tensorwire: Any, client_load: Any, repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    server = start_tensorwire(repository, "--workers", "2", "--grpc-max-connection-age", "0.5")
    with client_load(server.url, "steady", processes=1, channels=2) as results:
        time.sleep(2.5)  # several generations of connections come and go
    assert sum(r["ok"] for r in results) > 0
    assert [f for r in results for f in r["failures"]] == []


def test_health_follows_load_and_unload(start_tensorwire: Any, repository: pathlib.Path) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = start_tensorwire(repository, "--workers", "1", "--model-control-mode", "explicit", "--load-model", "steady")
    with grpc.insecure_channel(server.url) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def status(name: str) -> int:
            return int(health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status)

        _load(server.url, "churn")
        assert status("churn") == health_pb2.HealthCheckResponse.SERVING
        _unload(server.url, "churn")
        assert status("churn") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert status("steady") == health_pb2.HealthCheckResponse.SERVING
