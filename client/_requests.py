"""Request building and response decoding shared by the sync and async clients (no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from tensorwire.client.errors import InferenceServerError, InvalidInputError
from tensorwire.protos import inference_pb2 as pb
from tensorwire.protos.codec import DATATYPES, TensorDecodeError, datatype_of, decode_tensor, encode_raw

DEFAULT_INPUT = "input"
Inputs = np.ndarray | Mapping[str, np.ndarray]


@dataclass(frozen=True, eq=False)  # arrays inside: equality would be ambiguous
class InferRequest:
    """One request of a stream: what `infer` takes, as a value.

    `id` comes back on the request's result; left empty, the stream numbers
    requests "0", "1", ... in the order they are sent.
    """

    model: str
    inputs: Inputs
    outputs: Sequence[str] | None = None
    version: str | None = None
    id: str = ""
    cast: bool = False


@dataclass(frozen=True, eq=False)  # arrays inside: equality would be ambiguous
class StreamResult:
    """One answer of a stream: the outputs of the request with this `id`, or the error it met.

    Indexing a result (`result["predict"]`) raises its error when it has one.
    """

    id: str
    model: str
    version: str
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    error: InferenceServerError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __getitem__(self, name: str) -> np.ndarray:
        if self.error is not None:
            raise self.error
        return self.outputs[name]


def _invalid(message: str) -> InvalidInputError:
    return InvalidInputError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _datatype(name: str, array: np.ndarray) -> str:
    try:
        return datatype_of(array)
    except TensorDecodeError as exc:
        raise _invalid(f"input '{name}': {exc}") from None


def prepare_inputs(
    model: str, inputs: Inputs, metadata: pb.ModelMetadataResponse | None = None, *, cast: bool = False
) -> dict[str, np.ndarray]:
    """The inputs as arrays by input name, checked against the model's metadata when it is given.

    A bare array takes the model's one declared input name. An array whose
    datatype differs from the declared one is converted when `cast` is true
    (within numpy's "same_kind" rule: float64 -> float32, int64 -> float32, ...)
    and refused otherwise, before anything is sent.
    """
    declared = {t.name: t for t in metadata.inputs} if metadata is not None else {}
    if cast and not declared:
        raise _invalid(f"model '{model}': cast=True needs the model's declared inputs, and the server declares none")
    if isinstance(inputs, Mapping):
        named = {name: np.asarray(array) for name, array in inputs.items()}
    else:
        if len(declared) > 1:
            raise _invalid(f"model '{model}' has {len(declared)} inputs {sorted(declared)}: pass a dict of arrays by input name")
        named = {next(iter(declared), DEFAULT_INPUT): np.asarray(inputs)}
    if not declared:
        return named
    for name, array in named.items():
        spec = declared.get(name)
        if spec is None:
            raise _invalid(f"model '{model}' has no input '{name}' (inputs: {sorted(declared)})")
        received = _datatype(name, array)
        if received != spec.datatype:
            named[name] = _convert(model, name, array, received, spec.datatype, cast)
        _check_shape(model, name, array.shape, list(spec.shape))
    return named


def _convert(model: str, name: str, array: np.ndarray, received: str, expected: str, cast: bool) -> np.ndarray:
    where = f"model '{model}': input '{name}' is {array.dtype} ({received}), but the model declares {expected}"
    spec = DATATYPES.get(expected)
    target = spec.dtype if spec is not None else None
    if not cast:
        hint = f"send {target.name} or pass cast=True" if target is not None else "send matching data"
        raise _invalid(f"{where}; {hint}")
    if target is None or not np.can_cast(array.dtype, target, "same_kind"):
        raise _invalid(f"{where}; cast=True converts only within numpy's 'same_kind' rule, so convert it yourself")
    return array.astype(target)


def _check_shape(model: str, name: str, shape: Sequence[int], declared: list[int]) -> None:
    if not declared:  # the server declares no shape
        return
    if len(shape) != len(declared) or any(d >= 0 and d != s for s, d in zip(shape, declared)):
        raise _invalid(f"model '{model}': input '{name}' has shape {list(shape)}, expected {declared} (-1: any size)")


def build_infer_request(
    model: str,
    inputs: Inputs,
    *,
    outputs: Sequence[str] | None = None,
    version: str | None = None,
    request_id: str = "",
) -> pb.ModelInferRequest:
    """A ModelInferRequest carrying each array as raw contents (a bare array is the input named 'input')."""
    named = inputs if isinstance(inputs, Mapping) else {DEFAULT_INPUT: inputs}
    request = pb.ModelInferRequest(model_name=model, model_version=version or "", id=request_id)
    for name, array in named.items():
        array = np.asarray(array)
        request.inputs.add(name=name, datatype=_datatype(name, array), shape=array.shape)
        request.raw_input_contents.append(encode_raw(array))
    for name in outputs or ():
        request.outputs.add(name=name)
    return request


def decode_infer_response(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """The response's outputs as numpy arrays, by name (zero-copy views of raw contents)."""
    raw = response.raw_output_contents
    result = {}
    try:
        for i, tensor in enumerate(response.outputs):
            data = raw[i] if raw else None
            result[tensor.name] = decode_tensor(tensor.name, tensor.datatype, tensor.shape, data, None if raw else tensor.contents)
    except TensorDecodeError as exc:
        raise InferenceServerError(grpc.StatusCode.INTERNAL, f"model '{response.model_name}' sent an undecodable answer: {exc}") from None
    return result


def decode_stream_response(response: pb.ModelStreamInferResponse) -> StreamResult:
    """A stream message as a result; an error message keeps the request's id and loses no other result.

    The protocol carries a stream error as text only, so its code is UNKNOWN.
    """
    answer = response.infer_response
    if response.error_message:
        error = InferenceServerError(grpc.StatusCode.UNKNOWN, response.error_message)
        return StreamResult(answer.id, answer.model_name, answer.model_version, error=error)
    try:
        outputs = decode_infer_response(answer)
    except InferenceServerError as error:
        return StreamResult(answer.id, answer.model_name, answer.model_version, error=error)
    return StreamResult(answer.id, answer.model_name, answer.model_version, outputs)
