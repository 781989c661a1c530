"""Dynamic batching: concurrent requests share kernel calls, each gets its own rows back, deadlines hold."""

from __future__ import annotations

import json
import pathlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import tensorwire
from tensorwire.client import InferenceClient
from tensorwire.server.errors import DeadlineExceededError
from tensorwire.server.inference.batcher import DynamicBatcher
from tensorwire.server.repository.model_config import DynamicBatching, ModelConfigError, read_model_config


class RecordingScorer:
    """A unit-test stand-in for a scorer: doubles the input, remembers every batch it saw."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        with self.lock:
            self.batches.append(X.shape[0])
        time.sleep(self.delay)
        return [X * (2 if name == "double" else 3) for name in outputs]


def test_concurrent_requests_share_a_kernel_call_and_get_their_own_rows() -> None:
    scorer = RecordingScorer()
    batcher = DynamicBatcher(scorer, DynamicBatching(max_batch_size=64, max_queue_delay_microseconds=50_000), "t")
    inputs = [np.full((2, 3), float(i)) for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda X: batcher.score(X, ["double", "triple"] if X[0, 0] % 2 else ["double"], None), inputs))
    for X, result in zip(inputs, results):
        np.testing.assert_array_equal(result.outputs[0], X * 2)
        if X[0, 0] % 2:
            np.testing.assert_array_equal(result.outputs[1], X * 3)
    assert sum(scorer.batches) == 32
    assert len(scorer.batches) < 16, scorer.batches  # some requests were scored together
    assert sum(r.executed for r in results) == len(scorer.batches)
    batcher.close()


class RefusingScorer(RecordingScorer):
    """Refuses any batch holding a negative value, naming its row (as a model refuses a row it cannot score)."""

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        bad = np.flatnonzero((X < 0).any(axis=1))
        if bad.size:
            with self.lock:
                self.batches.append(X.shape[0])
            raise ValueError(f"row {bad[0]} is negative")
        return super().score(X, outputs)


def test_a_request_the_model_refuses_fails_alone_with_its_own_row_numbers() -> None:
    scorer = RefusingScorer()
    batcher = DynamicBatcher(scorer, DynamicBatching(max_batch_size=64, max_queue_delay_microseconds=200_000), "t")
    inputs = [np.full((3, 2), float(i)) for i in range(1, 8)]
    inputs[4][2, 1] = -1.0  # the fifth request's last row

    def score(X: np.ndarray) -> Any:
        try:
            return batcher.score(X, ["double"], None).outputs[0]
        except ValueError as exc:
            return str(exc)

    with ThreadPoolExecutor(len(inputs)) as pool:
        results = list(pool.map(score, inputs))
    assert results[4] == "row 2 is negative"
    for i, (X, result) in enumerate(zip(inputs, results)):
        if i != 4:
            np.testing.assert_array_equal(result, X * 2)
    assert max(scorer.batches) > 3, scorer.batches  # they were batched together before the refusal split them
    batcher.close()


def test_a_full_preferred_batch_is_scored_without_waiting_for_the_delay() -> None:
    scorer = RecordingScorer()
    batcher = DynamicBatcher(scorer, DynamicBatching(max_batch_size=8, max_queue_delay_microseconds=5_000_000, preferred_batch_size=(4,)), "t")
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: batcher.score(np.ones((1, 2)), ["double"], None), range(4)))
    assert time.monotonic() - started < 5.0  # far below the 5 s delay: the preferred size flushed it
    batcher.close()


def test_an_expired_request_is_not_scored() -> None:
    scorer = RecordingScorer()
    batcher = DynamicBatcher(scorer, DynamicBatching(max_batch_size=64, max_queue_delay_microseconds=200_000), "t")
    with pytest.raises(DeadlineExceededError):
        batcher.score(np.ones((1, 2)), ["double"], deadline=time.monotonic() + 0.01)
    assert scorer.batches == []
    batcher.close()


def test_requests_after_close_are_scored_unbatched() -> None:
    scorer = RecordingScorer()
    batcher = DynamicBatcher(scorer, DynamicBatching(), "t")
    batcher.close()
    result = batcher.score(np.ones((1, 2)), ["double"], None)
    np.testing.assert_array_equal(result.outputs[0], [[2.0, 2.0]])


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"dynamic_batching": {"max_batch_size": 0}}, "max_batch_size must be a positive integer"),
        ({"dynamic_batching": {"max_queue_delay_microseconds": -1}}, "max_queue_delay_microseconds"),
        ({"dynamic_batching": {"preferred_batch_size": [128], "max_batch_size": 64}}, "preferred_batch_size"),
        ({"dynamic_batching": {"max_batch": 3}}, "unknown dynamic_batching settings"),
        ({"batching": {}}, "unknown settings"),
    ],
)
def test_bad_batching_config_is_refused(tmp_path: pathlib.Path, config: dict[str, Any], message: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelConfigError, match=message):
        read_model_config(tmp_path)


def test_served_with_batching_matches_scikit_learn_and_counts_executions(start_tensorwire: Any, tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((400, 6))
    estimator = LogisticRegression().fit(X, (X[:, 0] + X[:, 1] > 0).astype(int))
    root = tmp_path / "models"
    tensorwire.export(estimator, root / "batched" / "1", dtype="float64")
    # a full batch is 8 requests of 3 rows; a partial one waits up to a second for company
    (root / "batched" / "config.json").write_text(json.dumps({"dynamic_batching": {"max_batch_size": 24, "max_queue_delay_microseconds": 1_000_000}}))
    server = start_tensorwire(root, "--workers", "1")
    with InferenceClient(server.url) as client, ThreadPoolExecutor(8) as pool:
        client.model_metadata("batched")  # cached before the burst: every request goes out at once
        chunks = [X[i : i + 3] for i in range(0, 48, 3)]
        answers = list(pool.map(lambda chunk: client.infer("batched", chunk), chunks))
        for chunk, answer in zip(chunks, answers):
            np.testing.assert_allclose(answer["predict_proba"], estimator.predict_proba(chunk), rtol=1e-9, atol=1e-12)
            np.testing.assert_array_equal(answer["predict"], estimator.predict(chunk))
        stats = client.model_statistics("batched").model_stats[0]
    assert stats.inference_stats.success.count == len(chunks)
    assert stats.inference_count == 48
    assert 1 <= stats.execution_count < len(chunks)  # requests shared kernel calls
    assert stats.inference_stats.queue.count == len(chunks)


def test_a_request_past_its_deadline_is_not_scored(start_tensorwire: Any, tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(6)
    X = rng.standard_normal((50, 4))
    root = tmp_path / "models"
    tensorwire.export(LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)), root / "slow" / "1")
    # a long queue delay: the lone request waits past its deadline and must come back unscored
    (root / "slow" / "config.json").write_text(json.dumps({"dynamic_batching": {"max_batch_size": 64, "max_queue_delay_microseconds": 500000}}))
    server = start_tensorwire(root, "--workers", "1")
    with InferenceClient(server.url) as client:
        with pytest.raises(Exception) as info:
            client.infer("slow", X[:1].astype(np.float32), timeout=0.1)
        assert getattr(info.value, "code", None) == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.6)
        stats = client.model_statistics("slow").model_stats[0]
    assert stats.execution_count == 0
