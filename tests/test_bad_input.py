"""Bad requests get a status naming the problem, and the server keeps answering correctly."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from tensorwire.client import InferenceClient, InferenceServerError
from tensorwire.protos import inference_pb2 as pb
from tensorwire.protos.codec import to_typed_contents


def raw_request(model: str, X: np.ndarray, *, datatype: str | None = None, shape: list[int] | None = None, name: str = "input") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype or {4: "FP32", 8: "FP64"}[X.dtype.itemsize], shape=shape if shape is not None else X.shape)
    request.raw_input_contents.append(X.tobytes())
    return request


def send(server, request: pb.ModelInferRequest) -> pb.ModelInferResponse:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(server.url) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        return call(request, timeout=10)


def mixed_request() -> pb.ModelInferRequest:
    X = np.zeros((1, 6), np.float32)
    request = raw_request("binary", X)
    request.inputs[0].contents.CopyFrom(to_typed_contents(X))
    return request


def two_inputs() -> pb.ModelInferRequest:
    request = raw_request("binary", np.zeros((1, 6), np.float32))
    request.inputs.add(name="extra", datatype="FP32", shape=[1])
    request.raw_input_contents.append(b"\x00" * 4)
    return request


def unknown_output() -> pb.ModelInferRequest:
    request = raw_request("binary", np.zeros((1, 6), np.float32))
    request.outputs.add(name="predict_log_proba")
    return request


def nonfinite(value: float) -> pb.ModelInferRequest:
    X = np.zeros((3, 6), np.float32)
    X[2, 4] = value
    return raw_request("binary", X)


CASES = {
    "unknown model": (lambda: raw_request("nope", np.zeros((1, 6), np.float32)), grpc.StatusCode.NOT_FOUND, ["unknown model 'nope'"]),
    "unknown version": (
        lambda: pb.ModelInferRequest(model_name="binary", model_version="9", inputs=[pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 6])], raw_input_contents=[b"\x00" * 24]),
        grpc.StatusCode.NOT_FOUND,
        ["model 'binary' has no version '9'"],
    ),
    "corrupt model": (lambda: raw_request("broken", np.zeros((1, 6), np.float32)), grpc.StatusCode.UNAVAILABLE, ["broken", "not a zip", "cannot be read"]),
    "wrong datatype": (lambda: raw_request("binary", np.zeros((1, 6), np.float64)), grpc.StatusCode.INVALID_ARGUMENT, ["'binary'", "'input'", "FP64", "expected FP32"]),
    "wrong feature count": (lambda: raw_request("binary", np.zeros((2, 5), np.float32)), grpc.StatusCode.INVALID_ARGUMENT, ["'binary'", "'input'", "[2, 5]", "expected [-1, 6]"]),
    "wrong rank": (lambda: raw_request("binary", np.zeros(6, np.float32)), grpc.StatusCode.INVALID_ARGUMENT, ["shape [6]", "expected [-1, 6]"]),
    "raw length disagrees with shape": (
        lambda: raw_request("binary", np.zeros((2, 6), np.float32), shape=[3, 6]),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["'binary'", "'input'", "48 bytes", "needs 72"],
    ),
    "raw and typed mixed": (mixed_request, grpc.StatusCode.INVALID_ARGUMENT, ["typed contents and raw_input_contents"]),
    "missing input": (lambda: raw_request("binary", np.zeros((1, 6), np.float32), name="features"), grpc.StatusCode.INVALID_ARGUMENT, ["missing input 'input'", "'features'"]),
    "no input at all": (lambda: pb.ModelInferRequest(model_name="binary"), grpc.StatusCode.INVALID_ARGUMENT, ["expects 1 input", "got 0"]),
    "two inputs": (two_inputs, grpc.StatusCode.INVALID_ARGUMENT, ["expects 1 input", "'extra'"]),
    "unknown output": (unknown_output, grpc.StatusCode.INVALID_ARGUMENT, ["no output 'predict_log_proba'"]),
    "empty batch": (lambda: raw_request("binary", np.zeros((0, 6), np.float32)), grpc.StatusCode.INVALID_ARGUMENT, ["empty batch"]),
    "NaN value": (lambda: nonfinite(np.nan), grpc.StatusCode.INVALID_ARGUMENT, ["'binary'", "'input'", "row 2", "NaN"]),
    "inf value": (lambda: nonfinite(np.inf), grpc.StatusCode.INVALID_ARGUMENT, ["row 2", "infinity"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_request_gets_a_clear_status(server, fitted_models, case: str) -> None:  # type: ignore[no-untyped-def]
    build, code, fragments = CASES[case]
    with pytest.raises(grpc.RpcError) as info:
        send(server, build())
    assert info.value.code() == code, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details(), (fragment, info.value.details())
    # the server still answers correctly afterwards
    X = fitted_models["binary"].X[:4].astype(np.float32)
    with InferenceClient(server.url) as client:
        np.testing.assert_array_equal(client.infer("binary", X)["predict"], fitted_models["binary"].estimator.predict(X))


def test_client_errors_are_typed_and_carry_the_status(client: InferenceClient) -> None:
    from tensorwire.client import ModelNotFoundError

    with pytest.raises(ModelNotFoundError) as info:
        client.infer("nope", np.zeros((1, 6), np.float32))
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert "nope" in info.value.details
    assert isinstance(info.value, InferenceServerError)


def test_garbage_bytes_on_the_wire_get_a_status(server) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(server.url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            call(b"\xff\xff\xff\xff not protobuf", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid inference.ModelInferRequest" in info.value.details()
