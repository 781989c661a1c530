"""numpy <-> Open Inference Protocol tensors, for client and server alike.

Raw contents are little-endian, row-major bytes; BYTES elements are a 4-byte
little-endian length followed by the bytes. Decoding raw contents never copies:
the array is a read-only view of the message's bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensorwire.protos import inference_pb2 as pb

__all__ = [
    "DATATYPES",
    "Datatype",
    "TensorDecodeError",
    "datatype_of",
    "decode_tensor",
    "deserialize_bytes",
    "encode_raw",
    "expected_raw_size",
    "serialize_bytes",
    "to_typed_contents",
]


class TensorDecodeError(ValueError):
    """A tensor's declared datatype, shape and contents do not agree."""


@dataclass(frozen=True)
class Datatype:
    """One Open Inference Protocol datatype and how it maps to numpy and protobuf."""

    name: str
    dtype: np.dtype[Any] | None  # None for BYTES, whose elements have no fixed size
    contents_field: str | None  # the InferTensorContents field; None where only raw is allowed
    triton_enum: pb.DataType  # for ModelConfig


def _dt(name: str, dtype: str | None, field: str | None, triton_enum: pb.DataType) -> Datatype:
    return Datatype(name, None if dtype is None else np.dtype(dtype), field, triton_enum)


DATATYPES: dict[str, Datatype] = {
    d.name: d
    for d in (
        _dt("BOOL", "?", "bool_contents", pb.TYPE_BOOL),
        _dt("UINT8", "<u1", "uint_contents", pb.TYPE_UINT8),
        _dt("UINT16", "<u2", "uint_contents", pb.TYPE_UINT16),
        _dt("UINT32", "<u4", "uint_contents", pb.TYPE_UINT32),
        _dt("UINT64", "<u8", "uint64_contents", pb.TYPE_UINT64),
        _dt("INT8", "<i1", "int_contents", pb.TYPE_INT8),
        _dt("INT16", "<i2", "int_contents", pb.TYPE_INT16),
        _dt("INT32", "<i4", "int_contents", pb.TYPE_INT32),
        _dt("INT64", "<i8", "int64_contents", pb.TYPE_INT64),
        _dt("FP16", "<f2", None, pb.TYPE_FP16),
        _dt("FP32", "<f4", "fp32_contents", pb.TYPE_FP32),
        _dt("FP64", "<f8", "fp64_contents", pb.TYPE_FP64),
        _dt("BYTES", None, "bytes_contents", pb.TYPE_STRING),
    )
}

_BY_NUMPY_KIND: dict[tuple[str, int], str] = {
    (d.dtype.kind, d.dtype.itemsize): d.name for d in DATATYPES.values() if d.dtype is not None
}
_LENGTH = struct.Struct("<I")


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype name for a numpy array (strings and bytes map to BYTES)."""
    if array.dtype.kind in "SUO":
        return "BYTES"
    try:
        return _BY_NUMPY_KIND[(array.dtype.kind, array.dtype.itemsize)]
    except KeyError:
        raise TensorDecodeError(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype") from None


def element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        if dim < 0:
            raise TensorDecodeError(f"shape {list(shape)} has a negative dimension")
        count *= dim
    return count


def expected_raw_size(datatype: str, shape: Sequence[int]) -> int | None:
    """Bytes that raw contents of this datatype and shape must hold (None for BYTES)."""
    dtype = DATATYPES[datatype].dtype
    return None if dtype is None else element_count(shape) * dtype.itemsize


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES elements as length-prefixed raw contents (str elements are UTF-8 encoded)."""
    parts = []
    for item in array.reshape(-1).tolist():
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(raw: bytes, count: int, name: str = "tensor") -> np.ndarray:
    """Length-prefixed raw contents as an object array of `count` bytes elements."""
    if count * 4 > len(raw):  # before allocating: a hostile shape must not cost memory
        raise TensorDecodeError(f"{name}: {len(raw)} bytes cannot hold {count} BYTES elements (4-byte length each)")
    out = np.empty(count, dtype=object)
    view = memoryview(raw)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise TensorDecodeError(f"{name}: BYTES contents end after {i} of {count} elements")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise TensorDecodeError(f"{name}: BYTES element {i} claims {length} bytes, only {len(view) - offset} remain")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise TensorDecodeError(f"{name}: {len(view) - offset} bytes follow the last of {count} BYTES elements")
    return out


def decode_tensor(
    name: str, datatype: str, shape: Sequence[int], raw: bytes | None, contents: pb.InferTensorContents | None
) -> np.ndarray:
    """One tensor as a numpy array, from raw bytes (zero copy) or typed contents."""
    spec = DATATYPES.get(datatype)
    if spec is None:
        raise TensorDecodeError(f"tensor '{name}' has unknown datatype '{datatype}'")
    shape = tuple(shape)
    count = element_count(shape)
    if raw is not None:
        if spec.dtype is None:
            return deserialize_bytes(raw, count, f"tensor '{name}'").reshape(shape)
        expected = count * spec.dtype.itemsize
        if len(raw) != expected:
            raise TensorDecodeError(
                f"tensor '{name}': raw contents hold {len(raw)} bytes, but {datatype} {list(shape)} needs {expected}"
            )
        return np.ndarray(shape, spec.dtype, raw)  # a read-only view, as np.frombuffer's (and twice as quick)
    if spec.contents_field is None:
        raise TensorDecodeError(f"tensor '{name}': {datatype} can only be sent as raw contents")
    values = getattr(contents, spec.contents_field) if contents is not None else ()
    if len(values) != count:
        raise TensorDecodeError(
            f"tensor '{name}': contents hold {len(values)} {datatype} values, but shape {list(shape)} needs {count}"
        )
    if spec.dtype is None:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    return np.array(values, dtype=spec.dtype).reshape(shape)


def encode_raw(array: np.ndarray) -> bytes:
    """An array as raw contents bytes."""
    if array.dtype.kind in "SUO":
        return serialize_bytes(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.tobytes()  # C order whatever the array's layout


def to_typed_contents(array: np.ndarray) -> pb.InferTensorContents:
    """An array as typed InferTensorContents (the slow, portable representation)."""
    spec = DATATYPES[datatype_of(array)]
    if spec.contents_field is None:
        raise TensorDecodeError(f"{spec.name} can only be sent as raw contents")
    contents = pb.InferTensorContents()
    flat = array.reshape(-1)
    if spec.dtype is None:
        values: list[Any] = [v.encode() if isinstance(v, str) else bytes(v) for v in flat.tolist()]
    else:
        values = flat.tolist()
    getattr(contents, spec.contents_field).extend(values)
    return contents
