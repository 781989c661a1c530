"""Request plans: a ModelInfer request like one served before is answered without parsing it again.

A client sends the same envelope again and again (model name and version, the
input's name, datatype and shape, the outputs it asks for); only the tensor's
bytes change. Protobuf's wire format makes that exact: a message is its fields
one after the other, and parsing H + T gives H's fields merged with T's. So
once a request H + T, with T its only raw_input_contents entry (tag, length n,
n bytes), has been parsed, validated and answered, a request of the same size
that starts with the same bytes up to its tensor's bytes asks for the same
thing with other numbers. Its plan keeps what the full path decided (the model
version, the (rows, features) view, the outputs, the response's envelope), and
what is left per request is: view the bytes, check they are finite, score, and
write the response.

A plan holds while the repository snapshot it was made under is current: any
load, reload or unload ends every plan. Plans are made for quick requests
(scored on the event loop) without an id, to a model without a batch queue;
an id is usually new with each request, and its plan would never be used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from google.protobuf import message

from tensorwire.protos import inference_pb2 as pb
from tensorwire.protos.wire import RAW_INPUT_CONTENTS_TAG, varint
from tensorwire.server.inference.drift import DriftMonitor
from tensorwire.server.inference.statistics import VersionStatistics
from tensorwire.server.modeling.registry import ResponseWriter

if TYPE_CHECKING:  # the repository warms writers up with planned_writer
    from tensorwire.server.repository.model_repository import Model


@dataclass(frozen=True, eq=False, slots=True)
class RequestPlan:
    prefix: bytes  # the request's bytes before its tensor's bytes
    snapshot: Mapping[str, object]  # the repository snapshot the model was found in
    model: Model
    stats: VersionStatistics
    shape: tuple[int, int]  # (rows, features)
    dtype: np.dtype  # type: ignore[type-arg]
    names: Sequence[str]  # the outputs to answer
    envelope: bytes | None  # the response up to its tensors' bytes; None: an output's size varies (BYTES)
    content_heads: tuple[bytes, ...]  # the raw_output_contents tag and length of each output
    writer: ResponseWriter | None  # the scorer's whole-response kernel, where it has one
    response_size: int  # the response's size in bytes, for the writer
    drift: DriftMonitor | None  # the model's, where it counts its inputs (one attribute lookup less per request)
    output_at: int = -1  # where the main output drift counts is among `names`, -1: not asked for, or not counted
    output_bytes: tuple[int, np.dtype, int] | None = None  # type: ignore[type-arg]  # with a writer: its values, dtype and offset in the response

    def main_output(self, scored: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | None:
        """The main output drift counts, from the results (`scored`), or from the response the writer wrote; None: not asked for."""
        if self.output_at < 0:
            return None
        if self.output_bytes is None:
            return scored[self.output_at]
        count, dtype, offset = self.output_bytes
        return np.ndarray((count,), dtype, scored, offset)  # type: ignore[arg-type]

    def view(self, data: bytes) -> np.ndarray:
        """The request's tensor: a read-only view of its bytes."""
        return np.ndarray(self.shape, self.dtype, data, len(self.prefix))

    def encode(self, arrays: Sequence[np.ndarray]) -> bytes:
        """The serialised ModelInferResponse, as the model's encoder writes it."""
        if self.envelope is None:
            return self.model.response_encoder.encode("", self.names, arrays)
        parts = [self.envelope]
        for head, array in zip(self.content_heads, arrays):
            parts.append(head)
            parts.append(array.tobytes())
        return b"".join(parts)


class RequestPlans:
    """The plans of one process, found by the request's size and first bytes."""

    MAX_PLANS = 64  # a few models times a few batch sizes; more, and the set starts again

    def __init__(self) -> None:
        self._by_size: dict[int, tuple[RequestPlan, ...]] = {}
        self._count = 0

    def __len__(self) -> int:
        return sum(len(plans) for plans in self._by_size.values())

    def match(self, data: bytes, snapshot: Mapping[str, object]) -> RequestPlan | None:
        plans = self._by_size.get(len(data))
        if plans is not None:
            for plan in plans:
                if data.startswith(plan.prefix) and plan.snapshot is snapshot:
                    return plan
        return None

    def learn(
        self,
        data: bytes,
        request: pb.ModelInferRequest,
        snapshot: Mapping[str, object],
        model: Model,
        stats: VersionStatistics,
        X: np.ndarray,
        names: Sequence[str],
        results: Sequence[np.ndarray],
    ) -> None:
        """Keep a plan for requests like `request` (served: `X` its validated input, `results` its outputs), if it may have one.

        `snapshot` must be the repository snapshot read before `model` was looked up.
        """
        if request.id or model.batcher is not None or X.shape[0] > model.quick_max_rows or len(request.raw_input_contents) != 1:
            return
        tensor_bytes = request.raw_input_contents[0]
        field_head = RAW_INPUT_CONTENTS_TAG + varint(len(tensor_bytes))
        envelope_end = len(data) - len(tensor_bytes) - len(field_head)
        if data[envelope_end : len(data) - len(tensor_bytes)] != field_head or not data.endswith(tensor_bytes):
            return  # the tensor is not the last field (protobuf writes no order of fields)
        try:  # the bytes before that field must be whole fields, for H + T to split where we think
            pb.ModelInferRequest.FromString(data[:envelope_end])
        except message.DecodeError:
            return
        layout = model.response_encoder.fixed_layout(names, results)
        envelope, content_heads = layout if layout is not None else (None, ())
        writer, response_size = planned_writer(model, names, results, layout) or (None, 0)
        prefix = data[: len(data) - len(tensor_bytes)]
        output_at = -1 if model.drift is None else model.drift.output_index(names)
        output_bytes = None if writer is None or output_at < 0 or layout is None else _bytes_of(layout, results, output_at)
        plan = RequestPlan(
            prefix, snapshot, model, stats, X.shape, X.dtype, tuple(names), envelope, content_heads, writer, response_size, model.drift,
            -1 if writer is not None and output_bytes is None else output_at, output_bytes,
        )
        if self._count >= self.MAX_PLANS:
            self._by_size, self._count = {}, 0
        same_size = self._by_size.get(len(data), ())
        kept = tuple(p for p in same_size if p.snapshot is snapshot and p.prefix != plan.prefix)  # stale ones go
        self._by_size[len(data)] = (*kept, plan)
        self._count += 1 + len(kept) - len(same_size)


def _bytes_of(layout: tuple[bytes, tuple[bytes, ...]], results: Sequence[np.ndarray], index: int) -> tuple[int, np.dtype, int]:  # type: ignore[type-arg]
    """results[index]'s values, dtype and offset in a response of this fixed layout (as planned_writer lays it out)."""
    envelope, content_heads = layout
    at = len(envelope)
    for i, (head, array) in enumerate(zip(content_heads, results)):
        at += len(head)
        if i == index:
            return array.size, array.dtype, at
        at += array.nbytes
    raise IndexError(index)


def planned_writer(
    model: Model, names: Sequence[str], results: Sequence[np.ndarray], layout: tuple[bytes, tuple[bytes, ...]] | None = None
) -> tuple[ResponseWriter, int] | None:
    """The scorer's whole-response writer (its `response_writer`, if it has one) for responses whose outputs
    come out like `results`, and their size; None where the scorer has none or an output's size varies.
    `layout`: the encoder's fixed_layout for them, where the caller has it already."""
    writer_of = getattr(model.scorer, "response_writer", None)
    if layout is None:
        layout = model.response_encoder.fixed_layout(names, results)
    if writer_of is None or layout is None:
        return None
    envelope, content_heads = layout
    parts, offsets, at = [envelope], [], len(envelope)
    for head, array in zip(content_heads, results):
        at += len(head)
        offsets.append(at)
        at += array.nbytes
        parts += [head, bytes(array.nbytes)]
    template = np.frombuffer(b"".join(parts), dtype=np.uint8)
    writer: ResponseWriter | None = writer_of(names, template, offsets)
    return None if writer is None else (writer, len(template))
