"""Codec round trips for every Open Inference Protocol datatype, raw and typed."""

from __future__ import annotations

import numpy as np
import pytest

from tensorwire.protos import inference_pb2 as pb
from tensorwire.protos.codec import (
    DATATYPES,
    TensorDecodeError,
    datatype_of,
    decode_tensor,
    encode_raw,
    serialize_bytes,
    to_typed_contents,
)

SHAPES = [(0,), (1,), (3, 4), (2, 3, 5)]


def sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(7)
    n = int(np.prod(shape))
    spec = DATATYPES[datatype]
    if datatype == "BYTES":
        items = [bytes(rng.integers(0, 256, size=int(rng.integers(0, 9)), dtype=np.uint8)) for _ in range(n)]
        array = np.empty(n, dtype=object)
        array[:] = items
        return array.reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    assert spec.dtype is not None
    if spec.dtype.kind == "f":
        return rng.standard_normal(shape).astype(spec.dtype)
    info = np.iinfo(spec.dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=spec.dtype, endpoint=True)


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
@pytest.mark.parametrize("shape", SHAPES)
def test_raw_round_trip(datatype: str, shape: tuple[int, ...]) -> None:
    array = sample(datatype, shape)
    decoded = decode_tensor("x", datatype, shape, encode_raw(array), None)
    assert decoded.shape == shape
    np.testing.assert_array_equal(decoded, array)
    if datatype != "BYTES":
        assert decoded.dtype == DATATYPES[datatype].dtype
        assert datatype_of(array) == datatype


@pytest.mark.parametrize("datatype", sorted(d for d, s in DATATYPES.items() if s.contents_field))
@pytest.mark.parametrize("shape", SHAPES)
def test_typed_round_trip(datatype: str, shape: tuple[int, ...]) -> None:
    array = sample(datatype, shape)
    contents = pb.InferTensorContents.FromString(to_typed_contents(array).SerializeToString())
    decoded = decode_tensor("x", datatype, shape, None, contents)
    np.testing.assert_array_equal(decoded, array)


def test_raw_decode_is_a_zero_copy_view() -> None:
    raw = np.arange(12, dtype="<f4").tobytes()
    decoded = decode_tensor("x", "FP32", (3, 4), raw, None)
    assert not decoded.flags.writeable and not decoded.flags.owndata


def test_bytes_wire_format_is_length_prefixed_little_endian() -> None:
    array = np.array([b"ab", b"", "é"], dtype=object)
    assert serialize_bytes(array) == b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x02\x00\x00\x00\xc3\xa9"


def test_big_endian_arrays_are_sent_little_endian() -> None:
    array = np.arange(4, dtype=">i4")
    assert encode_raw(array) == np.arange(4, dtype="<i4").tobytes()


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("FP32", (2, 2), b"\x00" * 15, "raw contents hold 15 bytes, but FP32 [2, 2] needs 16"),
        ("FP64", (1,), b"", "raw contents hold 0 bytes"),
        ("BYTES", (2,), b"\x01\x00\x00\x00a\x00\x00\x00", "end after 1 of 2 elements"),
        ("BYTES", (2**40,), b"\x00" * 8, "cannot hold 1099511627776 BYTES elements"),
        ("BYTES", (1,), b"\x09\x00\x00\x00a", "claims 9 bytes"),
        ("BYTES", (1,), b"\x01\x00\x00\x00ab", "1 bytes follow the last"),
        ("COMPLEX", (1,), b"", "unknown datatype 'COMPLEX'"),
        ("FP32", (-1, 2), b"", "negative dimension"),
    ],
)
def test_bad_raw_contents_are_refused(datatype: str, shape: tuple[int, ...], raw: bytes, message: str) -> None:
    with pytest.raises(TensorDecodeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_tensor("x", datatype, shape, raw, None)


def test_typed_contents_of_wrong_length_are_refused() -> None:
    contents = pb.InferTensorContents(fp32_contents=[1.0, 2.0, 3.0])
    with pytest.raises(TensorDecodeError, match="contents hold 3 FP32 values, but shape"):
        decode_tensor("x", "FP32", (2, 2), None, contents)


def test_fp16_only_travels_raw() -> None:
    with pytest.raises(TensorDecodeError, match="only be sent as raw"):
        decode_tensor("x", "FP16", (1,), None, pb.InferTensorContents())
