"""Request building and response decoding shared by the sync and async clients (no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
import numpy as np

from tensorwire.client.errors import InvalidInputError
from tensorwire.protos import inference_pb2 as pb
from tensorwire.protos.codec import TensorDecodeError, datatype_of, decode_tensor, encode_raw

DEFAULT_INPUT = "input"
Inputs = np.ndarray | Mapping[str, np.ndarray]


def build_infer_request(
    model: str,
    inputs: Inputs,
    *,
    outputs: Sequence[str] | None = None,
    version: str | None = None,
    request_id: str = "",
) -> pb.ModelInferRequest:
    """A ModelInferRequest carrying each array as raw contents."""
    named = {DEFAULT_INPUT: inputs} if isinstance(inputs, np.ndarray) else dict(inputs)
    request = pb.ModelInferRequest(model_name=model, model_version=version or "", id=request_id)
    for name, array in named.items():
        array = np.asarray(array)
        try:
            datatype = datatype_of(array)
        except TensorDecodeError as exc:
            raise InvalidInputError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}': {exc}") from None
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(encode_raw(array))
    for name in outputs or ():
        request.outputs.add(name=name)
    return request


def decode_infer_response(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """The response's outputs as numpy arrays, by name."""
    raw = response.raw_output_contents
    result = {}
    for i, tensor in enumerate(response.outputs):
        data = raw[i] if raw else None
        result[tensor.name] = decode_tensor(tensor.name, tensor.datatype, tensor.shape, data, None if raw else tensor.contents)
    return result
