"""The Open Inference Protocol, transport-agnostic: protobuf request in, protobuf response out.

The gRPC servicer is a thin shell around this class; every domain failure is
raised as a `tensorwire.server.errors` exception and mapped to a status there.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from google.protobuf import message

from tensorwire.protos import inference_pb2 as pb
from tensorwire.protos.codec import DATATYPES, TensorDecodeError, decode_tensor
from tensorwire.server.errors import DeadlineExceededError, InvalidRequestError, TensorwireError, UnavailableError, listed, shown, undecodable
from tensorwire.server.inference.request_plans import RequestPlan, RequestPlans
from tensorwire.server.inference.statistics import StatisticsBook, VersionStatistics, merge_statistics
from tensorwire.server.process.cluster import Cluster, LocalCluster
from tensorwire.server.repository.model_repository import READY, UNAVAILABLE, Model, ModelRepository
from tensorwire.server.version import VERSION

log = logging.getLogger(__name__)

SERVER_NAME = "tensorwire"
EXTENSIONS = ("model_configuration", "statistics", "model_repository")
PLATFORM = "tensorwire_numba"
MAX_INT32 = 2**31 - 1  # ModelConfig.max_batch_size is an int32; --max-rows may be larger


class InferenceHandler:
    def __init__(self, repository: ModelRepository, cluster: Cluster | None = None, *, repository_api: bool = True, max_rows: int = 1_000_000) -> None:
        self.repository = repository
        self.max_rows = max_rows
        self.statistics = StatisticsBook()
        self.plans = RequestPlans()
        self.cluster: Cluster = cluster or LocalCluster(self.execute)
        self.repository_api = repository_api  # RepositoryModelLoad/Unload allowed (explicit model control)
        self.worker = 0  # this process's index among the workers
        self.ready = False  # set once the initial repository load is done
        self.on_repository_change: Callable[[], None] = lambda: None  # e.g. refresh health statuses

    # ---- health and metadata -------------------------------------------------

    def server_live(self, request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def server_ready(self, request: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready)

    def model_ready(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.repository.is_ready(request.name, request.version))

    def server_metadata(self, request: pb.ServerMetadataRequest) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=VERSION, extensions=EXTENSIONS)

    def model_metadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        model = self.repository.get(request.name, request.version)
        entry = self.repository.entry(request.name)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[v for v, s in entry.versions.items() if s.state == READY],
            platform=PLATFORM,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.manifest.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.manifest.outputs],
        )

    def model_config(self, request: pb.ModelConfigRequest) -> pb.ModelConfigResponse:
        """The Triton config subset clients read: a batching model, so dims exclude the batch dimension.

        max_batch_size is the most rows a request may hold (--max-rows), as in Triton, which
        refuses larger requests; perf_analyzer -b N needs it above 0. It is not config.json's
        dynamic_batching.max_batch_size: that caps the rows the batcher gathers, and a larger
        request is scored alone, not refused, so clients need not split it.

        A per-row output (shape [-1]) gets dims []: the full shape, [-1] + dims, is then [batch],
        as ModelMetadata says and the response carries. Triton's own config files cannot leave
        dims empty and write such an output as dims [1] with reshape {shape: []}, but there dims
        is the shape clients receive ([batch, 1]) and tensorwire sends [batch]. No client
        compares dims with a response: tritonclient hands the message over as it is, and
        perf_analyzer takes tensor shapes from ModelMetadata (less the first dimension when
        max_batch_size > 0) and from the config only max_batch_size and flags.
        """
        model = self.repository.get(request.name, request.version)
        manifest = model.manifest
        return pb.ModelConfigResponse(
            config=pb.ModelConfig(
                name=model.name,
                platform=PLATFORM,
                backend="tensorwire",
                max_batch_size=min(self.max_rows, MAX_INT32),
                input=[pb.ModelInput(name=t.name, data_type=DATATYPES[t.datatype].triton_enum, dims=t.shape[1:]) for t in manifest.inputs],
                output=[pb.ModelOutput(name=t.name, data_type=DATATYPES[t.datatype].triton_enum, dims=t.shape[1:]) for t in manifest.outputs],
            )
        )

    def model_statistics(self, request: pb.ModelStatisticsRequest) -> pb.ModelStatisticsResponse:
        """Statistics summed over every worker process."""
        if request.name:
            self.repository.entry(request.name)  # NOT_FOUND for an unknown model
        outcomes = self.cluster.broadcast("statistics", {"name": request.name, "version": request.version})
        failed = [o.error for o in outcomes if not o.ok]
        if failed:
            raise TensorwireError(f"statistics unavailable: {'; '.join(failed)}")
        return merge_statistics([pb.ModelStatisticsResponse.FromString(o.result) for o in outcomes])

    def local_statistics(self, name: str, version: str) -> pb.ModelStatisticsResponse:
        """This process's own statistics."""
        stats = [
            s.to_proto(n, v)
            for (n, v), s in sorted(self.statistics.snapshot().items())
            if (not name or n == name) and (not version or v == version)
        ]
        return pb.ModelStatisticsResponse(model_stats=stats)

    def metrics_snapshot(self) -> dict[str, Any]:
        """This process's counters as plain data, for the metrics endpoint."""
        return {
            "worker": self.worker,
            "pid": os.getpid(),
            "models_loaded": self.repository.ready_count(),
            "load_failures": [{"model": m, "version": v, "count": n} for (m, v), n in self.repository.load_failures.items()],
            "versions": [{"model": m, "version": v, **s.metrics_snapshot()} for (m, v), s in self.statistics.snapshot().items()],
            "drift": self.drift_snapshot(),
        }

    def drift_snapshot(self) -> list[dict[str, Any]]:
        """The live input profile of every model version served with drift monitoring (server/inference/drift.py)."""
        return [
            {"model": entry.name, "version": status.version, **status.model.drift.snapshot()}
            for entry in self.repository.entries()
            for status in entry.versions.values()
            if status.model is not None and status.model.drift is not None
        ]

    # ---- repository ------------------------------------------------------------

    def repository_index(self, request: pb.RepositoryIndexRequest) -> pb.RepositoryIndexResponse:
        index = pb.RepositoryIndexResponse()
        for entry in sorted(self.repository.entries(), key=lambda e: e.name):
            for status in entry.versions.values():
                if request.ready and status.state != READY:
                    continue
                index.models.add(name=entry.name, version=status.version, state=status.state, reason=status.reason)
        if not request.ready:
            for name in self.repository.unindexed_names():
                index.models.add(name=name, state=UNAVAILABLE, reason="unloaded")
        return index

    def repository_model_load(self, request: pb.RepositoryModelLoadRequest) -> pb.RepositoryModelLoadResponse:
        """(Re)load a model in every worker; answers once all have it ready, or with the failure."""
        self._require_repository_api("load")
        self.repository.require_model_dir(request.model_name)
        outcomes = self.cluster.broadcast("load", {"name": request.model_name})
        for outcome in outcomes:
            if not outcome.ok:
                raise TensorwireError(f"model '{request.model_name}' failed to load: {outcome.error}")
            if outcome.result["failed"]:
                serving = outcome.result["serving"]
                still = f"; version {serving} keeps serving" if serving else ""
                raise InvalidRequestError(f"model '{request.model_name}' failed to load: {'; '.join(outcome.result['failed'])}{still}")
        return pb.RepositoryModelLoadResponse()

    def repository_model_unload(self, request: pb.RepositoryModelUnloadRequest) -> pb.RepositoryModelUnloadResponse:
        self._require_repository_api("unload")
        self.repository.entry(request.model_name)  # NOT_FOUND unless loaded
        outcomes = self.cluster.broadcast("unload", {"name": request.model_name})
        problems = [o.error for o in outcomes if not o.ok]
        if problems:
            raise TensorwireError(f"model '{request.model_name}' failed to unload: {problems[0]}")
        return pb.RepositoryModelUnloadResponse()

    def _require_repository_api(self, action: str) -> None:
        if not self.repository_api:
            raise UnavailableError(f"cannot {action} models: the server runs with --model-control-mode other than explicit")

    def execute(self, op: str, args: dict[str, Any]) -> Any:
        """Apply a cluster operation to this process (the broadcast calls it in every worker)."""
        if op == "load":
            entry = self.repository.load(args["name"])
            self.on_repository_change()
            failed = [f"version {s.version}: {s.reason}" for s in entry.versions.values() if s.state != READY]
            return {"serving": entry.default_version, "failed": failed}
        if op == "unload":
            self.repository.unload(args["name"])
            self.on_repository_change()
            return {}
        if op == "statistics":
            return self.local_statistics(args["name"], args["version"]).SerializeToString()
        if op == "metrics":
            return self.metrics_snapshot()
        raise ValueError(f"unknown cluster operation '{op}'")

    # ---- inference ---------------------------------------------------------------

    def model_of(self, request: pb.ModelInferRequest) -> Model:
        """The model version a request asks for, or the error that says why there is none."""
        return self.repository.get(request.model_name, request.model_version)

    def is_quick(self, model: Model, request: pb.ModelInferRequest) -> bool:
        """Cheap enough to score without a thread hand-off: a small request to a model without a
        batch queue (which waits), or a malformed one (refused at once)."""
        inputs = request.inputs
        if len(inputs) != 1:
            return True
        shape = inputs[0].shape
        return len(shape) != 2 or shape[0] <= model.quick_max_rows

    def plan_of(self, data: bytes) -> RequestPlan | None:
        """The plan for a serialised ModelInferRequest like one served before (see server/inference/request_plans.py)."""
        return self.plans.match(data, self.repository.snapshot)

    def model_infer_bytes(self, data: bytes, deadline: float | None = None) -> bytes:
        """A serialised ModelInferRequest scored into a serialised ModelInferResponse, by its plan if it has one."""
        plan = self.plan_of(data)
        if plan is not None:
            return self.score_planned(plan, data, deadline)
        request = parse_infer_request(data)
        return self.score_request(self.model_of(request), request, deadline, data)

    def model_infer(self, request: pb.ModelInferRequest, deadline: float | None = None) -> bytes:
        """Score one request into a serialised ModelInferResponse; `deadline` (time.monotonic seconds) passed means it is not scored."""
        return self.score_request(self.model_of(request), request, deadline)

    def score_request(self, model: Model, request: pb.ModelInferRequest, deadline: float | None, data: bytes | None = None) -> bytes:
        """model_infer once the model is known; given the request's bytes, keeps a plan for requests like it."""
        stats = self.statistics.of(model.name, model.version)
        t0 = time.perf_counter_ns()
        try:
            X = _decode_input(model, request, self.max_rows)
            names = _requested_outputs(model, request.outputs)
            _require_time_left(model, deadline)
            t1 = time.perf_counter_ns()
            if model.batcher is None:
                results, queue_ns, executed = model.scorer.score(X, names), 0, True
            else:
                batch = model.batcher.score(X, names, deadline)
                results, queue_ns, executed = batch.outputs, int(batch.queue_seconds * 1e9), batch.executed
            t2 = time.perf_counter_ns()
            response = model.response_encoder.encode(request.id, names, results)
        except Exception as exc:
            stats.record_failure(time.perf_counter_ns() - t0, _status_name(exc))
            raise
        stats.record_success(X.shape[0], t1 - t0, t2 - t1 - queue_ns, time.perf_counter_ns() - t2, queue_ns, executed)
        if model.drift is not None:
            model.drift.count(X, model.drift.output_of(names, results))
        if data is not None:
            self._learn(data, request, model, stats, X, names, results)
        return response

    def score_planned(self, plan: RequestPlan, data: bytes, deadline: float | None) -> bytes:
        """score_request for a request its plan covers: the same checks, answers and statistics."""
        model, stats = plan.model, plan.stats
        t0 = time.perf_counter_ns()
        try:
            X = plan.view(data)
            if plan.writer is not None:  # the check, the scoring and the response in one kernel call
                _require_time_left(model, deadline)
                out = np.empty(plan.response_size, dtype=np.uint8)
                t1 = time.perf_counter_ns()
                bad_row = plan.writer(X, out)
                if bad_row >= 0:
                    raise _nonfinite(model, X, bad_row)
                t2 = time.perf_counter_ns()
                response = out.tobytes()
                scored: np.ndarray | list[np.ndarray] = out
            else:
                _require_finite(model, X)
                _require_time_left(model, deadline)
                t1 = time.perf_counter_ns()
                results = model.scorer.score(X, plan.names)
                t2 = time.perf_counter_ns()
                response = plan.encode(results)
                scored = results
        except Exception as exc:
            stats.record_failure(time.perf_counter_ns() - t0, _status_name(exc))
            raise
        stats.record_success(plan.shape[0], t1 - t0, t2 - t1, time.perf_counter_ns() - t2)
        if plan.drift is not None:
            plan.drift.count(X, plan.main_output(scored))
        return response

    def _learn(self, data: bytes, request: pb.ModelInferRequest, model: Model, stats: VersionStatistics, X: np.ndarray, names: Sequence[str], results: Sequence[np.ndarray]) -> None:
        snapshot = self.repository.snapshot  # read before the lookup: a swap between them leaves the plan stale, never wrong
        try:
            current = self.model_of(request)
        except TensorwireError:
            return
        if current is not model:
            return
        try:
            self.plans.learn(data, request, snapshot, model, stats, X, names, results)
        except Exception:  # a plan only saves time: failing to make one never fails the request it was made from
            log.debug("no plan for a request to %s", model.description, exc_info=True)


def parse_infer_request(data: bytes) -> pb.ModelInferRequest:
    try:
        return pb.ModelInferRequest.FromString(data)
    except message.DecodeError:
        raise undecodable(pb.ModelInferRequest.DESCRIPTOR.full_name) from None


def _status_name(exc: Exception) -> str:
    return exc.code.name if isinstance(exc, TensorwireError) else "INTERNAL"


def _require_time_left(model: Model, deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceededError(f"model '{model.name}': the request's deadline passed before it was scored")


def _require_finite(model: Model, X: np.ndarray) -> None:
    """X holds only values the model takes: finite ones, or for some tree models NaN and infinity too."""
    bad_row = model.first_refused_row(X)
    if bad_row >= 0:
        raise _nonfinite(model, X, bad_row)


def _nonfinite(model: Model, X: np.ndarray, bad_row: int) -> InvalidRequestError:
    return InvalidRequestError(f"{model.description}: input '{model.input.name}' row {bad_row} {model.refusal(X, bad_row)} (the library that trained it refuses that too)")


def _decode_input(model: Model, request: pb.ModelInferRequest, max_rows: int) -> np.ndarray:
    """The request's single input as a validated (rows, n_features) array, zero-copy for raw contents."""
    inputs = request.inputs
    spec = model.input
    if len(inputs) != 1:
        raise InvalidRequestError(f"{model.description} expects 1 input tensor named '{spec.name}', got {listed([t.name for t in inputs])}")
    tensor = inputs[0]
    if tensor.name != spec.name:
        raise InvalidRequestError(f"{model.description}: missing input '{spec.name}' (got an input named {shown(tensor.name)})")
    if tensor.datatype != spec.datatype:
        raise InvalidRequestError(
            f"{model.description}: input '{spec.name}' has datatype {shown(tensor.datatype) if tensor.datatype else '(empty)'}, expected {spec.datatype}"
        )
    shape = tensor.shape
    n_features = spec.shape[1]
    if len(shape) != 2 or shape[1] != n_features:
        raise InvalidRequestError(
            f"{model.description}: input '{spec.name}' has shape {list(shape)}, expected [-1, {n_features}] (rows, features)"
        )
    rows = shape[0]
    if rows < 1:
        raise InvalidRequestError(f"{model.description}: input '{spec.name}' is an empty batch (shape {list(shape)})")
    if rows > max_rows:
        raise InvalidRequestError(f"{model.description}: input '{spec.name}' has {rows} rows, more than this server's --max-rows {max_rows}")
    raw_contents = request.raw_input_contents
    if raw_contents and len(raw_contents) == 1 and not tensor.HasField("contents"):
        raw = raw_contents[0]
        dtype = model.input_dtype
        if len(raw) != rows * n_features * dtype.itemsize:  # the common case, without decode_tensor's generality
            raise InvalidRequestError(
                f"{model.description}: tensor '{spec.name}': raw contents hold {len(raw)} bytes, "
                f"but {spec.datatype} {list(shape)} needs {rows * n_features * dtype.itemsize}"
            )
        X = np.ndarray((rows, n_features), dtype, raw)  # a read-only view
    else:
        X = _decode_other_contents(model, tensor, raw_contents, rows)
    _require_finite(model, X)
    return X


def _decode_other_contents(model: Model, tensor: pb.ModelInferRequest.InferInputTensor, raw_contents: Sequence[bytes], rows: int) -> np.ndarray:
    """Typed contents, or raw contents sent wrongly (beside typed ones, or in several entries)."""
    spec = model.input
    if raw_contents:
        if tensor.HasField("contents"):
            raise InvalidRequestError(f"{model.description}: input '{spec.name}' has typed contents and raw_input_contents; send one")
        raise InvalidRequestError(f"{model.description}: {len(raw_contents)} raw_input_contents entries for 1 input")
    try:
        return decode_tensor(spec.name, spec.datatype, (rows, spec.shape[1]), None, tensor.contents)
    except TensorDecodeError as exc:
        raise InvalidRequestError(f"{model.description}: {exc}") from None


def _requested_outputs(model: Model, requested: Sequence[pb.ModelInferRequest.InferRequestedOutputTensor]) -> Sequence[str]:
    if not requested:
        return model.output_names
    names = [o.name for o in requested]
    for name in names:
        if name not in model.outputs:
            raise InvalidRequestError(
                f"model '{model.name}' version {model.version} has no output {shown(name)} (outputs: {list(model.outputs)})"
            )
    if len(set(names)) != len(names):
        raise InvalidRequestError(f"model '{model.name}': an output is requested twice among {listed(names)}")
    return names

