"""Request plans (server/inference/request_plans.py): a request like one served before is answered exactly as the full path answers it."""

from __future__ import annotations

import json
import pathlib
import shutil
import time

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import tensorwire
from tensorwire.client._requests import build_infer_request
from tensorwire.protos import inference_pb2 as pb
from tensorwire.protos.wire import length_delimited
from tensorwire.server.errors import DeadlineExceededError, InvalidRequestError, ModelNotFoundError
from tensorwire.server.inference.handler import InferenceHandler
from tensorwire.server.inference.request_plans import RequestPlans
from tensorwire.server.repository.model_repository import QUICK_MAX_ROWS, ModelRepository

N_FEATURES = 6  # the width of conftest's fitted models


@pytest.fixture(scope="module")
def handler(model_repository: pathlib.Path) -> InferenceHandler:
    handler = InferenceHandler(ModelRepository(model_repository))
    handler.repository.load_all()
    return handler


def request_bytes(model: str, X: np.ndarray, **kwargs: object) -> bytes:
    return build_infer_request(model, X, **kwargs).SerializeToString()  # type: ignore[arg-type]


def rows(n: int, seed: int, dtype: str = "float32") -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, N_FEATURES)).astype(dtype)


def full_path(handler: InferenceHandler, data: bytes) -> bytes:
    """The answer of the path that parses and validates every request."""
    return handler.model_infer(pb.ModelInferRequest.FromString(data))


CASES = [
    ("flowers", "float32", None),  # string labels: a BYTES output, written by the model's encoder
    ("flowers", "float32", ["predict_proba", "predict"]),
    ("binary", "float32", None),
    ("binary", "float32", ["decision_function"]),
    ("svm", "float64", None),
    ("ridge", "float64", None),
    ("ols", "float32", None),
]


@pytest.mark.parametrize(("model", "dtype", "outputs"), CASES)
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_a_planned_answer_is_byte_for_byte_the_full_paths(handler: InferenceHandler, model: str, dtype: str, outputs: list[str] | None, batch: int) -> None:
    first = request_bytes(model, rows(batch, 0, dtype), outputs=outputs)
    handler.model_infer_bytes(first)  # served in full, and planned
    for seed in (1, 2, 3):
        data = request_bytes(model, rows(batch, seed, dtype), outputs=outputs)
        assert handler.plan_of(data) is not None
        assert handler.model_infer_bytes(data) == full_path(handler, data)


@pytest.fixture(scope="module")
def label_kinds(tmp_path_factory: pytest.TempPathFactory) -> InferenceHandler:
    """Linear models whose whole-response kernels write other label and output types."""
    from sklearn.linear_model import Ridge, SGDClassifier

    root = tmp_path_factory.mktemp("label-kinds")
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, N_FEATURES))
    classes = np.argmax(X[:, :3], axis=1)
    estimators = {
        "bools": (LogisticRegression().fit(X, X[:, 0] > 0), "float32"),
        "floats": (LogisticRegression().fit(X, classes * 1.0 + 2.0), "float64"),
        "huber": (SGDClassifier(loss="modified_huber", random_state=0).fit(X, classes), "float32"),
        "multi": (Ridge().fit(X, X[:, :2] @ np.ones((2, 3))), "float32"),
    }
    for name, (estimator, dtype) in estimators.items():
        tensorwire.export(estimator, root / name / "1", dtype=dtype)
    handler = InferenceHandler(ModelRepository(root))
    handler.repository.load_all()
    return handler


@pytest.mark.parametrize(("model", "dtype"), [("bools", "float32"), ("floats", "float64"), ("huber", "float32"), ("multi", "float32")])
@pytest.mark.parametrize("batch", [1, 5, 64])
def test_whole_response_kernels_write_what_the_full_path_writes(label_kinds: InferenceHandler, model: str, dtype: str, batch: int) -> None:
    handler = label_kinds
    handler.model_infer_bytes(request_bytes(model, rows(batch, 0, dtype)))
    for seed in (1, 2):
        data = request_bytes(model, rows(batch, seed, dtype) * 3)
        plan = handler.plan_of(data)
        assert plan is not None and plan.writer is not None  # linear models answer planned requests in one kernel call
        assert handler.model_infer_bytes(data) == full_path(handler, data)


def test_string_labels_are_written_by_the_encoder(handler: InferenceHandler) -> None:
    data = request_bytes("flowers", rows(2, 0))
    handler.model_infer_bytes(data)
    plan = handler.plan_of(data)
    assert plan is not None and plan.writer is None


def test_a_plan_answers_only_requests_with_its_envelope(handler: InferenceHandler) -> None:
    handler.model_infer_bytes(request_bytes("ridge", rows(4, 0, "float64")))
    other_model = request_bytes("ridgf", rows(4, 0, "float64"))  # same size, one byte apart
    other_outputs = request_bytes("ridge", rows(4, 0, "float64"), outputs=["predict"])
    other_version = request_bytes("ridge", rows(4, 0, "float64"), version="1")
    assert handler.plan_of(other_model) is None and handler.plan_of(other_outputs) is None and handler.plan_of(other_version) is None
    with pytest.raises(ModelNotFoundError, match="unknown model 'ridgf'"):
        handler.model_infer_bytes(other_model)
    assert handler.model_infer_bytes(other_outputs) == full_path(handler, other_outputs)


def test_requests_with_an_id_are_not_planned(handler: InferenceHandler) -> None:
    data = request_bytes("binary", rows(2, 0), request_id="req-1")
    for _ in range(2):
        response = pb.ModelInferResponse.FromString(handler.model_infer_bytes(data))
        assert response.id == "req-1"
    assert handler.plan_of(data) is None


def test_a_request_whose_tensor_is_not_its_last_field_is_not_planned(handler: InferenceHandler) -> None:
    """Protobuf fields may come in any order; a plan needs the tensor's bytes last."""
    request = build_infer_request("binary", rows(3, 0))
    tensor_first = b"".join(
        [length_delimited(0x3A, request.raw_input_contents[0]), pb.ModelInferRequest(model_name="binary", inputs=request.inputs).SerializeToString()]
    )
    assert pb.ModelInferRequest.FromString(tensor_first) == request
    for _ in range(2):
        assert handler.model_infer_bytes(tensor_first) == full_path(handler, request.SerializeToString())
    assert handler.plan_of(tensor_first) is None


def test_bytes_that_only_look_like_a_trailing_tensor_are_not_planned(handler: InferenceHandler) -> None:
    """The tensor's field, then an unknown field whose bytes end like it: splitting at the look-alike would be wrong."""
    request = build_infer_request("binary", rows(1, 0))
    tensor_field = length_delimited(0x3A, request.raw_input_contents[0])
    envelope = pb.ModelInferRequest(model_name="binary", inputs=request.inputs).SerializeToString()
    data = envelope + tensor_field + length_delimited(0x7A, tensor_field)  # field 15: unknown, kept as bytes
    parsed = pb.ModelInferRequest.FromString(data)
    assert list(parsed.raw_input_contents) == list(request.raw_input_contents) and data.endswith(tensor_field)
    for _ in range(2):
        assert handler.model_infer_bytes(data) == full_path(handler, data)
    assert handler.plan_of(data) is None


def test_a_large_request_and_a_batch_queue_are_not_planned(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "models"
    X = rows(200, 0, "float64")
    y = (X[:, 0] > 0).astype(int)
    for name in ("plain", "queued"):
        tensorwire.export(LogisticRegression().fit(X, y), root / name / "1", dtype="float32")
    (root / "queued" / "config.json").write_text(json.dumps({"dynamic_batching": {"max_batch_size": 8, "max_queue_delay_microseconds": 100}}))
    handler = InferenceHandler(ModelRepository(root))
    handler.repository.load_all()
    try:
        large = request_bytes("plain", rows(QUICK_MAX_ROWS + 1, 0))
        queued = request_bytes("queued", rows(1, 0))
        for data in (large, queued, large, queued):
            assert handler.model_infer_bytes(data) == full_path(handler, data)
        assert handler.plan_of(large) is None and handler.plan_of(queued) is None
    finally:
        handler.repository.unload("queued")


def test_planned_requests_are_checked_and_counted_like_the_others(handler: InferenceHandler) -> None:
    handler.model_infer_bytes(request_bytes("ols", rows(3, 0)))
    stats = handler.statistics.of("ols", "1")
    before_success, before_fail = _counts(handler)
    bad = rows(3, 1)
    bad[2, 4] = np.nan
    data = request_bytes("ols", bad)
    assert handler.plan_of(data) is not None
    with pytest.raises(InvalidRequestError, match=r"model 'ols' version 1: input 'input' row 2 holds NaN or infinity"):
        handler.model_infer_bytes(data)
    good = request_bytes("ols", rows(3, 2))
    with pytest.raises(DeadlineExceededError, match="deadline passed"):
        handler.model_infer_bytes(good, deadline=time.monotonic() - 1)
    handler.model_infer_bytes(good)
    assert _counts(handler) == (before_success + 1, before_fail + 2)
    assert stats.failures["INVALID_ARGUMENT"] >= 1 and stats.failures["DEADLINE_EXCEEDED"] >= 1


def _counts(handler: InferenceHandler) -> tuple[int, int]:
    (stats,) = handler.local_statistics("ols", "1").model_stats
    return stats.inference_stats.success.count, stats.inference_stats.fail.count


def test_a_reload_or_unload_ends_the_plans_made_before_it(tmp_path: pathlib.Path, model_repository: pathlib.Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(model_repository / "binary", root / "binary")
    handler = InferenceHandler(ModelRepository(root))
    handler.repository.load_all()
    data = request_bytes("binary", rows(2, 0))
    handler.model_infer_bytes(data)
    assert handler.plan_of(data) is not None
    shutil.copytree(root / "binary" / "1", root / "binary" / "2")  # version 2 becomes the default
    handler.repository.load("binary")
    assert handler.plan_of(data) is None
    assert pb.ModelInferResponse.FromString(handler.model_infer_bytes(data)).model_version == "2"
    assert pb.ModelInferResponse.FromString(handler.model_infer_bytes(data)).model_version == "2"  # planned again, on version 2
    handler.repository.unload("binary")
    with pytest.raises(ModelNotFoundError):
        handler.model_infer_bytes(data)


def test_plans_start_again_past_their_limit(handler: InferenceHandler) -> None:
    assert isinstance(handler.plans, RequestPlans)
    for batch in range(1, RequestPlans.MAX_PLANS + 10):
        handler.model_infer_bytes(request_bytes("binary", rows(batch, 0)))
    assert 0 < len(handler.plans) <= RequestPlans.MAX_PLANS
    for batch in (1, RequestPlans.MAX_PLANS + 5):
        data = request_bytes("binary", rows(batch, 9))
        assert handler.model_infer_bytes(data) == full_path(handler, data)


def test_undecodable_bytes_are_refused_clearly(handler: InferenceHandler) -> None:
    with pytest.raises(InvalidRequestError, match="not a valid inference.ModelInferRequest message"):
        handler.model_infer_bytes(b"\xff\xff\xff")


def test_a_plan_that_cannot_be_made_never_fails_its_request(handler: InferenceHandler, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("planning broke")

    monkeypatch.setattr(handler.plans, "learn", broken)
    data = request_bytes("ridge", rows(11, 0, "float64"))
    assert handler.model_infer_bytes(data) == full_path(handler, data)
    assert handler.plan_of(data) is None


@pytest.fixture(scope="module")
def tree_handler(tmp_path_factory: pytest.TempPathFactory) -> InferenceHandler:
    from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingClassifier

    root = tmp_path_factory.mktemp("tree-plans")
    X = rows(400, 0, "float64")
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    X[::5, 2] = np.nan
    # 300 trees: many more nodes than a quick request's work allows if every node counted as a parameter
    tensorwire.export(HistGradientBoostingClassifier(max_iter=300, early_stopping=False, random_state=0).fit(X, y), root / "hgb" / "1", dtype="float32")
    tensorwire.export(GradientBoostingRegressor(n_estimators=20, random_state=0).fit(np.nan_to_num(X), X[:, 0]), root / "gbr" / "1", dtype="float64")
    handler = InferenceHandler(ModelRepository(root))
    handler.repository.load_all()
    return handler


@pytest.mark.parametrize("batch", [1, 32])
def test_tree_models_are_answered_by_plans_nan_and_all(tree_handler: InferenceHandler, batch: int) -> None:
    tree_handler.model_infer_bytes(request_bytes("hgb", rows(batch, 0)))
    for seed in (1, 2):
        X = rows(batch, seed)
        X[0, 2] = np.nan  # the model learned missing values: NaN is an answer's input, not an error
        data = request_bytes("hgb", X)
        assert tree_handler.plan_of(data) is not None
        assert tree_handler.model_infer_bytes(data) == full_path(tree_handler, data)


def test_a_planned_tree_request_still_refuses_nan_where_the_library_does(tree_handler: InferenceHandler) -> None:
    tree_handler.model_infer_bytes(request_bytes("gbr", rows(3, 0, "float64")))
    X = rows(3, 1, "float64")
    X[1, 4] = np.nan
    data = request_bytes("gbr", X)
    assert tree_handler.plan_of(data) is not None
    with pytest.raises(InvalidRequestError, match=r"model 'gbr' version 1: input 'input' row 1 holds NaN"):
        tree_handler.model_infer_bytes(data)
