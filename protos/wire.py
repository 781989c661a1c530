"""ModelInferResponse written straight to protobuf wire format, byte for byte what protobuf would write.

Building the response as protobuf objects (a message per output tensor, its
shape and strings set field by field) and serialising it costs the request path
more than scoring a small batch does. Everything in a response but the shapes,
the id and the tensor bytes is the same for every request to one model version,
so an encoder built once per version keeps those fields pre-encoded and joins
bytes per request. Tests hold the output equal to `SerializeToString` of the
same message; the field numbers come from protos/inference.proto.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tensorwire.protos.codec import encode_raw

# (field number << 3) | wire type 2 (length-delimited), for the fields written here
_MODEL_NAME, _MODEL_VERSION, _ID, _OUTPUTS, _RAW_OUTPUT_CONTENTS = 0x0A, 0x12, 0x1A, 0x2A, 0x32  # ModelInferResponse
_TENSOR_NAME, _TENSOR_DATATYPE, _TENSOR_SHAPE = 0x0A, 0x12, 0x1A  # InferOutputTensor
_STREAM_INFER_RESPONSE = 0x12  # ModelStreamInferResponse.infer_response
RAW_INPUT_CONTENTS_TAG = b"\x3a"  # ModelInferRequest.raw_input_contents

_SMALL_VARINTS = [bytes((n,)) for n in range(0x80)]
_RAW_OUTPUT_HEAD = _SMALL_VARINTS[_RAW_OUTPUT_CONTENTS]
_RAW_OUTPUT_HEADS = [_RAW_OUTPUT_HEAD + _SMALL_VARINTS[n] for n in range(0x80)]  # the tag and a one-byte length


def varint(n: int) -> bytes:
    """A non-negative integer as a protobuf varint."""
    if n < 0x80:
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_delimited(tag: int, payload: bytes) -> bytes:
    return _SMALL_VARINTS[tag] + varint(len(payload)) + payload


def _string(tag: int, text: str) -> bytes:
    """A proto3 string field; an empty string is not written, as protobuf does."""
    return length_delimited(tag, text.encode()) if text else b""


class InferResponseEncoder:
    """Serialised ModelInferResponses of one model version: its name, version and output datatypes fixed.

    Each output tensor's description is encoded once per shape seen (a few
    batch sizes, in practice; the cache is bounded).
    """

    MAX_CACHED_SHAPES = 1024

    def __init__(self, model_name: str, model_version: str, datatypes: Mapping[str, str]) -> None:
        self._head = _string(_MODEL_NAME, model_name) + _string(_MODEL_VERSION, model_version)
        self._tensor_heads = {name: _string(_TENSOR_NAME, name) + _string(_TENSOR_DATATYPE, datatype) for name, datatype in datatypes.items()}
        self._numeric = frozenset(name for name, datatype in datatypes.items() if datatype != "BYTES")  # raw bytes: tobytes()
        self._tensors: dict[tuple[str, tuple[int, ...]], bytes] = {}

    def encode(self, request_id: str, names: Sequence[str], arrays: Sequence[np.ndarray]) -> bytes:
        """The response carrying `arrays` as raw_output_contents, described by output tensors `names`."""
        parts = [self._head]
        if request_id:
            parts.append(length_delimited(_ID, request_id.encode()))
        tensors, numeric = self._tensors, self._numeric
        contents = []
        for name, array in zip(names, arrays):
            key = (name, array.shape)
            tensor = tensors.get(key)
            parts.append(self._tensor(key) if tensor is None else tensor)
            # tobytes() writes C order whatever the layout; encode_raw also handles BYTES and big-endian arrays
            contents.append(array.tobytes() if name in numeric and array.dtype.byteorder != ">" else encode_raw(array))
        for raw in contents:
            size = len(raw)
            parts.append(_RAW_OUTPUT_HEADS[size] if size < 0x80 else _RAW_OUTPUT_HEAD + varint(size))
            parts.append(raw)  # joined once, never copied twice
        return b"".join(parts)

    def fixed_layout(self, names: Sequence[str], arrays: Sequence[np.ndarray]) -> tuple[bytes, tuple[bytes, ...]] | None:
        """For responses (without id) whose outputs are shaped and typed like `arrays`: the bytes before
        the tensors' bytes, and each raw_output_contents entry's tag and length. None when an output's
        size varies with its values (BYTES) or is written otherwise than by tobytes()."""
        if any(name not in self._numeric or array.dtype.byteorder == ">" for name, array in zip(names, arrays)):
            return None
        envelope = self._head + b"".join(self._tensor((name, array.shape)) for name, array in zip(names, arrays))
        return envelope, tuple(_RAW_OUTPUT_HEAD + varint(array.nbytes) for array in arrays)

    def _tensor(self, key: tuple[str, tuple[int, ...]]) -> bytes:
        name, shape = key
        tensor = self._tensor_heads[name]
        if shape:  # protobuf writes no empty packed field
            tensor += length_delimited(_TENSOR_SHAPE, b"".join([varint(dim) for dim in shape]))
        encoded = length_delimited(_OUTPUTS, tensor)
        if len(self._tensors) >= self.MAX_CACHED_SHAPES:
            self._tensors.clear()
        self._tensors[key] = encoded
        return encoded


def stream_infer_response(infer_response: bytes) -> bytes:
    """A ModelStreamInferResponse around a serialised ModelInferResponse (no error message)."""
    return length_delimited(_STREAM_INFER_RESPONSE, infer_response)
