"""Property-based fuzzing of the request path: every request gets a well-formed status, and the server stays healthy."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tensorwire.protos import inference_pb2 as pb

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
DATATYPES = ["FP32", "FP64", "FP16", "INT8", "INT32", "INT64", "UINT8", "BOOL", "BYTES", "", "fp32", "COMPLEX64", "\x00"]
MODELS = ["ols", "ridge", "binary", "flowers", "svm", "broken", "", "nope", "../ols", "ols\x00"]

names = st.one_of(st.sampled_from(["input", "INPUT", "", "predict"]), st.text(max_size=12))
shapes = st.lists(st.integers(min_value=-3, max_value=2**40), max_size=4) | st.lists(st.integers(min_value=0, max_value=8), min_size=2, max_size=2).map(lambda s: [s[0], 6])
parameters = st.dictionaries(st.text(max_size=8), st.one_of(st.booleans().map(lambda b: pb.InferParameter(bool_param=b)), st.integers(-5, 5).map(lambda i: pb.InferParameter(int64_param=i)), st.text(max_size=8).map(lambda t: pb.InferParameter(string_param=t))), max_size=3)


@st.composite
def infer_requests(draw: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=draw(st.sampled_from(MODELS)), model_version=draw(st.sampled_from(["", "1", "2", "x", "-1"])), id=draw(st.text(max_size=8)))
    for key, value in draw(parameters).items():
        request.parameters[key].CopyFrom(value)
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(name=draw(names), datatype=draw(st.sampled_from(DATATYPES)), shape=draw(shapes))
        if draw(st.booleans()):
            field = draw(st.sampled_from(["fp32_contents", "fp64_contents", "int_contents", "bytes_contents", "bool_contents"]))
            values = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=20))
            target = getattr(tensor.contents, field)
            if field == "bytes_contents":
                target.extend(str(v).encode() for v in values)
            elif field == "bool_contents":
                target.extend(bool(v == v and v) for v in values)
            elif field == "int_contents":
                target.extend(int(v) if v == v and abs(v) < 2**31 else 0 for v in values)
            else:
                target.extend(values)
    for _ in range(draw(st.integers(0, 3))):
        raw = draw(st.one_of(st.binary(max_size=200), st.builds(lambda n: np.random.default_rng(n).standard_normal((n, 6)).astype(np.float32).tobytes(), st.integers(0, 8))))
        request.raw_input_contents.append(raw)
    for name in draw(st.lists(st.sampled_from(["predict", "predict_proba", "decision_function", "transform", "", "x"]), max_size=3)):
        request.outputs.add(name=name)
    return request


@pytest.fixture(scope="module")
def infer_call(server):  # type: ignore[no-untyped-def]
    channel = grpc.insecure_channel(server.url)
    yield channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=pb.ModelInferRequest.SerializeToString, response_deserializer=pb.ModelInferResponse.FromString)
    channel.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=infer_requests())
def test_random_requests_get_a_well_formed_status(infer_call, request: pb.ModelInferRequest) -> None:  # type: ignore[no-untyped-def]
    try:
        infer_call(request, timeout=10)
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
        assert error.details(), "a refusal must say why"
    assert code in ALLOWED, (code, request)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=300))
def test_random_bytes_on_the_wire_get_a_status(server, payload: bytes) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(server.url) as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        try:
            raw(payload, timeout=10)
        except grpc.RpcError as error:
            assert error.code() in ALLOWED, error


def test_the_server_is_healthy_after_the_fuzzing(server, fitted_models) -> None:  # type: ignore[no-untyped-def]
    from tensorwire.client import InferenceClient

    X = fitted_models["binary"].X[:5].astype(np.float32)
    with InferenceClient(server.url) as client:
        for _ in range(4):  # several connections: every worker answers
            assert client.server_ready()
            np.testing.assert_array_equal(client.infer("binary", X)["predict"], fitted_models["binary"].estimator.predict(X))
    log = server.log()
    assert "killed by signal" not in log and "exited with code" not in log and "Traceback" not in log
