"""Faults under load: a paused worker, a failing model, model files removed while served, and a short soak.

Each test drives a real multi-worker server with client processes and checks
that requests on unaffected paths keep succeeding.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
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

SOAK_SECONDS = float(os.environ.get("TENSORWIRE_SOAK_SECONDS", "8"))  # raise it for the long, opt-in run


def export_models(root: pathlib.Path) -> None:
    rng = np.random.default_rng(11)
    X = rng.standard_normal((200, 5))
    tensorwire.export(LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)), root / "steady" / "1")
    tensorwire.export(Ridge().fit(X, X @ np.arange(5.0)), root / "other" / "1")


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture()
def repository(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "models"
    export_models(root)
    return root


def test_a_paused_worker_costs_only_its_own_requests(start_tensorwire: Any, worker_pids: Any, repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    server = start_tensorwire(repository, "--workers", "2")
    wait_for(lambda: len(worker_pids(server.process.pid)) == 2, what="two workers")
    paused = worker_pids(server.process.pid)[0]
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


def test_a_failing_model_and_removed_files_leave_other_models_serving(start_tensorwire: Any, client_load: Any, repository: pathlib.Path) -> None:
    server = start_tensorwire(repository, "--workers", "2", "--model-control-mode", "poll", "--repository-poll-secs", "0.3")
    with client_load(server.url, "steady") as results, InferenceClient(server.url) as client:
        # a model that cannot load appears in the repository
        (repository / "rotten" / "1").mkdir(parents=True)
        (repository / "rotten" / "1" / "model.npz").write_bytes(b"PK\x03\x04 rotten")
        wait_for(lambda: any(m.name == "rotten" and m.state == "UNAVAILABLE" for m in client.repository_index().models), what="the rotten model to be reported")
        # the files of a served model disappear: the poller unloads it, everything else goes on
        shutil.rmtree(repository / "other")
        wait_for(lambda: not client.model_ready("other"), what="the removed model to be unloaded")
    assert sum(r["ok"] for r in results) > 0
    assert [f for r in results for f in r["failures"]] == []


def test_soak_mixed_load_stays_error_free_and_bounded(start_tensorwire: Any, client_load: Any, worker_pids: Any, repository: pathlib.Path) -> None:
    server = start_tensorwire(repository, "--workers", "2", "--model-control-mode", "explicit", "--load-model", "*")
    wait_for(lambda: len(worker_pids(server.process.pid)) == 2, what="two workers")
    streamed = 0
    rng = np.random.default_rng(4)
    with contextlib.ExitStack() as loads:
        results = [loads.enter_context(client_load(server.url, "steady")), loads.enter_context(client_load(server.url, "other", processes=1))]
        time.sleep(1.0)  # warm: memory and descriptors measured once every connection exists
        before = {pid: process_footprint(pid) for pid in worker_pids(server.process.pid)}
        deadline = time.monotonic() + SOAK_SECONDS
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
                client.repository_model_load("other")
            assert client.model_metadata("other").versions == [str(version)]
    sent = [sum(r["ok"] for r in per_model) for per_model in results]
    failures = [f for per_model in results for r in per_model for f in r["failures"]]
    assert all(count > 0 for count in sent) and failures == [], (sent, failures)
    time.sleep(0.5)
    after = {pid: process_footprint(pid) for pid in worker_pids(server.process.pid)}
    assert set(after) == set(before), "no worker died or was replaced"
    for pid, (rss_before, fds_before, threads_before) in before.items():
        rss_after, fds_after, threads_after = after[pid]
        assert rss_after - rss_before < 64 << 20, f"worker {pid} grew by {(rss_after - rss_before) >> 20} MiB"
        assert fds_after <= fds_before + 8, f"worker {pid}: {fds_before} -> {fds_after} descriptors"
        assert threads_after <= threads_before + 4, f"worker {pid}: {threads_before} -> {threads_after} threads"
    print(f"soak: {SOAK_SECONDS}s, unary {sum(sent)} + streamed {streamed} requests, 0 errors, footprint before {before} after {after}")


def process_footprint(pid: int) -> tuple[int, int, int]:
    """Resident bytes, open descriptors, threads."""
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"])
