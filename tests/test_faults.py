"""Faults under load: a paused worker, a failing model, model files removed while served, and a short soak.

Each test drives a real multi-worker server with client processes and checks
that requests on unaffected paths keep succeeding.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import grpc
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

import tensorwire
from tensorwire.client import InferenceClient
from tensorwire.client._requests import build_infer_request
from tensorwire.protos import inference_pb2 as pb

HERE = pathlib.Path(__file__).resolve().parent
SOAK_SECONDS = float(os.environ.get("TENSORWIRE_SOAK_SECONDS", "8"))  # raise it for the long, opt-in run


def export_models(root: pathlib.Path) -> None:
    rng = np.random.default_rng(11)
    X = rng.standard_normal((200, 5))
    tensorwire.export(LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)), root / "steady" / "1")
    tensorwire.export(Ridge().fit(X, X @ np.arange(5.0)), root / "other" / "1")


def workers_of(pid: int) -> list[int]:
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            spawned = b"spawn_main" in (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == pid and spawned:
            found.append(int(entry.name))
    return found


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def start_load(url: str, model: str, tmp: pathlib.Path, tag: str, processes: int = 2) -> tuple[list[subprocess.Popen[bytes]], pathlib.Path, list[pathlib.Path]]:
    stop = tmp / f"stop-{tag}"
    results = [tmp / f"result-{tag}-{i}.json" for i in range(processes)]
    procs = [subprocess.Popen([sys.executable, str(HERE / "load_client.py"), url, model, "5", "float32", str(stop), str(r), "2"]) for r in results]
    wait_for(lambda: all(r.with_name(r.name + ".started").exists() for r in results), what="the load clients to get going")
    return procs, stop, results


def finish_load(procs: list[subprocess.Popen[bytes]], stop: pathlib.Path, results: list[pathlib.Path]) -> tuple[int, list[Any]]:
    stop.touch()
    for proc in procs:
        proc.wait(timeout=60)
    loaded = [json.loads(r.read_text()) for r in results]
    return sum(r["ok"] for r in loaded), [f for r in loaded for f in r["failures"]]


@pytest.fixture()
def repository(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "models"
    export_models(root)
    return root


def test_a_paused_worker_costs_only_its_own_requests(start_tensorwire: Any, repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    server = start_tensorwire(repository, "--workers", "2")
    wait_for(lambda: len(workers_of(server.process.pid)) == 2, what="two workers")
    paused = workers_of(server.process.pid)[0]
    request = build_infer_request("steady", np.ones((1, 5), np.float32))
    channels = [grpc.insecure_channel(server.url, options=[("grpc.use_local_subchannel_pool", 1), ("test.channel", i)]) for i in range(8)]
    calls = [c.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=pb.ModelInferRequest.SerializeToString, response_deserializer=pb.ModelInferResponse.FromString) for c in channels]
    for call in calls:
        call(request, timeout=10)  # every channel connected, to one worker or the other
    os.kill(paused, signal.SIGSTOP)
    try:
        outcomes = []
        for call in calls:
            try:
                call(request, timeout=0.5)
                outcomes.append("ok")
            except grpc.RpcError as error:
                outcomes.append(error.code().name)
    finally:
        os.kill(paused, signal.SIGCONT)
    assert set(outcomes) <= {"ok", "DEADLINE_EXCEEDED"}, outcomes
    assert "ok" in outcomes  # the other worker kept serving
    for call in calls:  # and after SIGCONT everyone is served again
        call(request, timeout=10)
    for channel in channels:
        channel.close()


def test_a_failing_model_and_removed_files_leave_other_models_serving(start_tensorwire: Any, repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    server = start_tensorwire(repository, "--workers", "2", "--model-control-mode", "poll", "--repository-poll-secs", "0.3")
    load = start_load(server.url, "steady", tmp_path, "steady")
    # a model that cannot load appears in the repository
    (repository / "rotten" / "1").mkdir(parents=True)
    (repository / "rotten" / "1" / "model.npz").write_bytes(b"PK\x03\x04 rotten")
    # the files of a served model disappear: the poller unloads it, everything else goes on
    with InferenceClient(server.url) as client:
        wait_for(lambda: any(m.name == "rotten" and m.state == "UNAVAILABLE" for m in client.repository_index().models), what="the rotten model to be reported")
        shutil.rmtree(repository / "other")
        wait_for(lambda: not client.model_ready("other"), what="the removed model to be unloaded")
    ok, failures = finish_load(*load)
    assert ok > 0 and failures == []


def test_soak_mixed_load_stays_error_free_and_bounded(start_tensorwire: Any, repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    server = start_tensorwire(repository, "--workers", "2", "--model-control-mode", "explicit", "--load-model", "*")
    wait_for(lambda: len(workers_of(server.process.pid)) == 2, what="two workers")
    time.sleep(1.0)
    loads = [start_load(server.url, "steady", tmp_path, "a"), start_load(server.url, "other", tmp_path, "b", processes=1)]
    time.sleep(1.0)  # warm: memory and descriptors measured once every connection exists
    before = {pid: process_footprint(pid) for pid in workers_of(server.process.pid)}
    streamed = 0
    deadline = time.monotonic() + SOAK_SECONDS
    rng = np.random.default_rng(4)
    with InferenceClient(server.url) as client, grpc.insecure_channel(server.url) as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer", request_serializer=pb.ModelInferRequest.SerializeToString, response_deserializer=pb.ModelStreamInferResponse.FromString)
        version = 1
        while time.monotonic() < deadline:
            requests = [build_infer_request("steady", rng.standard_normal((3, 5)).astype(np.float32), request_id=str(i)) for i in range(50)]
            answers = list(stream(iter(requests), timeout=30))
            assert [a.infer_response.id for a in answers] == [str(i) for i in range(50)]
            assert not any(a.error_message for a in answers)
            streamed += len(answers)
            version += 1
            X = rng.standard_normal((100, 5))
            tensorwire.export(Ridge().fit(X, X @ rng.standard_normal(5)), repository / "other" / str(version))
            _repository(channel, "RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="other"))
        assert client.model_metadata("other").versions == [str(version)]
    results = [finish_load(*load) for load in loads]
    assert all(ok > 0 and failures == [] for ok, failures in results), results
    time.sleep(0.5)
    after = {pid: process_footprint(pid) for pid in workers_of(server.process.pid)}
    assert set(after) == set(before), "no worker died or was replaced"
    for pid, (rss_before, fds_before, threads_before) in before.items():
        rss_after, fds_after, threads_after = after[pid]
        assert rss_after - rss_before < 64 << 20, f"worker {pid} grew by {(rss_after - rss_before) >> 20} MiB"
        assert fds_after <= fds_before + 8, f"worker {pid}: {fds_before} -> {fds_after} descriptors"
        assert threads_after <= threads_before + 4, f"worker {pid}: {threads_before} -> {threads_after} threads"
    print(f"soak: {SOAK_SECONDS}s, unary {sum(ok for ok, _ in results)} + streamed {streamed} requests, 0 errors, footprint before {before} after {after}")


def process_footprint(pid: int) -> tuple[int, int, int]:
    """Resident bytes, open descriptors, threads."""
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"])


def _repository(channel: grpc.Channel, method: str, request: Any) -> None:
    call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}", request_serializer=type(request).SerializeToString, response_deserializer=lambda b: b)
    call(request, timeout=120)
