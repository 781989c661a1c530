"""protos/wire.py writes exactly the bytes protobuf writes for the same ModelInferResponse."""

from __future__ import annotations

import numpy as np
import pytest

from tensorwire.protos import inference_pb2 as pb
from tensorwire.protos.codec import datatype_of, encode_raw
from tensorwire.protos.wire import InferResponseEncoder, stream_infer_response, varint

CASES = [
    ("logistic", "1", "", {"predict": np.array([3], dtype=np.int64), "proba": np.ones((1, 4), np.float32)}),
    ("m", "12", "request-7", {"y": np.arange(6, dtype=np.float64).reshape(3, 2)}),
    ("", "", "", {"empty": np.zeros((0, 3), np.float32)}),
    ("big", "3", "x" * 300, {"y": np.zeros((200_000, 1), np.float32)}),  # multi-byte varints: lengths and dims
    ("modèle", "2", "identité", {"étiquette": np.array(["a", "bé", ""], dtype=object)}),  # UTF-8 names, BYTES output
    ("scalar", "1", "", {"s": np.float64(2.5) * np.ones(())}),  # no shape at all
    ("flags", "1", "", {"b": np.array([True, False]), "u": np.array([1, 2], dtype=np.uint8)}),
    # raw contents are little-endian whatever the array's byte order; a column view is written in C order
    ("endian", "1", "", {"be": np.arange(5, dtype=">f8"), "column": np.arange(12, dtype=np.float32).reshape(3, 4)[:, 1:3]}),
    ("sizes", "1", "", {"y127": np.zeros(127, np.uint8), "y128": np.zeros(128, np.uint8)}),  # one- and two-byte lengths
]


def expected_bytes(name: str, version: str, request_id: str, outputs: dict[str, np.ndarray]) -> bytes:
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=request_id)
    for output, array in outputs.items():
        response.outputs.add(name=output, datatype=datatype_of(array), shape=array.shape)
        response.raw_output_contents.append(encode_raw(array))
    return response.SerializeToString()


@pytest.mark.parametrize(("name", "version", "request_id", "outputs"), CASES, ids=[c[0] or "empty-names" for c in CASES])
def test_encoder_matches_protobuf(name: str, version: str, request_id: str, outputs: dict[str, np.ndarray]) -> None:
    encoder = InferResponseEncoder(name, version, {output: datatype_of(array) for output, array in outputs.items()})
    encoded = encoder.encode(request_id, list(outputs), list(outputs.values()))
    assert encoded == expected_bytes(name, version, request_id, outputs)
    stream = pb.ModelStreamInferResponse.FromString(stream_infer_response(encoded))
    assert stream.error_message == "" and stream.infer_response.SerializeToString() == encoded


def test_encoder_writes_a_subset_of_outputs_in_the_order_asked() -> None:
    outputs = {"a": np.zeros(2, np.float32), "b": np.ones((2, 3), np.float64), "c": np.array([1, 2], np.int32)}
    encoder = InferResponseEncoder("m", "1", {output: datatype_of(array) for output, array in outputs.items()})
    chosen = {"c": outputs["c"], "a": outputs["a"]}
    assert encoder.encode("", list(chosen), list(chosen.values())) == expected_bytes("m", "1", "", chosen)


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16_383, 16_384, 2**31, 2**63 - 1])
def test_varint_matches_protobuf(n: int) -> None:
    encoded = pb.ModelInferResponse.InferOutputTensor(shape=[n]).SerializeToString()  # tag, packed length, varint
    assert encoded[2:] == varint(n)


def test_encoder_stays_exact_past_its_shape_cache() -> None:
    encoder = InferResponseEncoder("m", "1", {"y": "FP32"})
    for rows in range(1, InferResponseEncoder.MAX_CACHED_SHAPES + 50, 7):
        array = np.zeros((rows, 2), np.float32)
        assert encoder.encode("", ["y"], [array]) == expected_bytes("m", "1", "", {"y": array})
