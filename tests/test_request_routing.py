"""Which ModelInfer calls are scored on the event loop and which go to the thread pool (InferenceHandler.is_quick)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

import tensorwire
from tensorwire.client._requests import build_infer_request
from tensorwire.server.inference.handler import InferenceHandler
from tensorwire.server.repository.model_repository import QUICK_MAX_ROWS, QUICK_MAX_WORK, ModelRepository


@pytest.fixture(scope="module")
def handler(tmp_path_factory: pytest.TempPathFactory) -> InferenceHandler:
    root = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 10))
    y = (X[:, 0] + 0.5 * rng.standard_normal(600) > 0).astype(int)
    tensorwire.export(LogisticRegression().fit(X, y), root / "small" / "1", dtype="float32")
    tensorwire.export(SVC().fit(X, y), root / "heavy" / "1", dtype="float32")
    tensorwire.export(LogisticRegression().fit(X, y), root / "batched" / "1", dtype="float32")
    (root / "batched" / "config.json").write_text(json.dumps({"dynamic_batching": {"max_batch_size": 64, "max_queue_delay_microseconds": 100}}))
    handler = InferenceHandler(ModelRepository(root))
    handler.repository.load_all()
    return handler


def quick(handler: InferenceHandler, model: str, rows: int) -> bool:
    request = build_infer_request(model, np.zeros((rows, 10), np.float32))
    return handler.is_quick(handler.model_of(request), request)


def test_small_requests_stay_on_the_loop_and_large_ones_go_to_the_pool(handler: InferenceHandler) -> None:
    assert quick(handler, "small", 1) and quick(handler, "small", 64) and quick(handler, "small", QUICK_MAX_ROWS)
    assert not quick(handler, "small", QUICK_MAX_ROWS + 1)


def test_the_limit_scales_with_the_model_cost(handler: InferenceHandler) -> None:
    heavy = handler.repository.get("heavy")
    assert heavy.work_per_row > 100 * handler.repository.get("small").work_per_row  # support vectors x features
    largest_quick = QUICK_MAX_WORK // heavy.work_per_row
    assert quick(handler, "heavy", 1) and quick(handler, "heavy", largest_quick)
    assert not quick(handler, "heavy", largest_quick + 1)


def test_a_model_with_a_batch_queue_always_goes_to_the_pool(handler: InferenceHandler) -> None:
    assert not quick(handler, "batched", 1)


def test_malformed_requests_are_answered_on_the_loop(handler: InferenceHandler) -> None:
    request = build_infer_request("small", np.zeros((5_000, 10), np.float32))
    request.inputs[0].ClearField("shape")  # refused at once, whatever its size
    assert handler.is_quick(handler.model_of(request), request)
