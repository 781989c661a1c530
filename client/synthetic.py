"""Random valid requests for a model, made from its metadata: what `tensorwire bench` and the Locust scenarios send."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tensorwire.client._requests import build_infer_request
from tensorwire.protos import inference_pb2 as pb
from tensorwire.protos.codec import DATATYPES


@dataclass(frozen=True)
class InputSpec:
    """One declared input; -1 marks a variable dimension (the first one is the batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def input_specs(metadata: pb.ModelMetadataResponse) -> list[InputSpec]:
    return [InputSpec(t.name, t.datatype, tuple(t.shape)) for t in metadata.inputs]


def concrete_shape(spec: InputSpec, rows: int) -> tuple[int, ...]:
    """The declared shape with a variable first dimension set to `rows` and any other variable one to 1."""
    return tuple(rows if (i == 0 and d < 0) else (1 if d < 0 else d) for i, d in enumerate(spec.shape))


def rows_per_request(specs: Sequence[InputSpec], rows: int) -> int:
    """Rows a request of `rows` really carries: a model with a fixed first dimension ignores the batch size."""
    if not specs or not specs[0].shape:
        return 1
    first = specs[0].shape[0]
    return rows if first < 0 else first


def random_array(datatype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Finite random values of a datatype: normal floats, small integers, booleans, short digit strings."""
    spec = DATATYPES.get(datatype)
    if spec is None:
        raise ValueError(f"unknown datatype '{datatype}'")
    if spec.dtype is None:  # BYTES
        return rng.integers(0, 10**6, size=shape).astype(str).astype(object)
    if spec.dtype.kind == "f":
        return rng.standard_normal(shape).astype(spec.dtype)
    if spec.dtype.kind == "b":
        return rng.random(shape) < 0.5
    return rng.integers(0, 10, size=shape).astype(spec.dtype)


def random_request(
    model: str, version: str, specs: Sequence[InputSpec], rows: int, rng: np.random.Generator, request_id: str = ""
) -> pb.ModelInferRequest:
    inputs = {s.name: random_array(s.datatype, concrete_shape(s, rows), rng) for s in specs}
    return build_infer_request(model, inputs, version=version, request_id=request_id)


def serialized_requests(model: str, version: str, specs: Sequence[InputSpec], rows: int, count: int, seed: int = 0) -> list[bytes]:
    """`count` distinct serialised ModelInferRequests, so that a client can send them without encoding anything."""
    rng = np.random.default_rng(seed)
    return [random_request(model, version, specs, rows, rng).SerializeToString() for _ in range(count)]
