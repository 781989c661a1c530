"""InferenceClient: numpy in, numpy out, over the Open Inference Protocol's gRPC API."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import grpc
import numpy as np

from tensorwire.client._requests import Inputs, build_infer_request, decode_infer_response
from tensorwire.client.errors import from_rpc_error
from tensorwire.protos import inference_pb2 as pb

SERVICE = "/inference.GRPCInferenceService/"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class InferenceClient:
    """A synchronous client for one server address; use it as a context manager to close its channel.

        with InferenceClient("localhost:8001") as client:
            labels = client.infer("iris", X)["predict"]
    """

    def __init__(self, url: str, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, options: Sequence[tuple[str, Any]] = ()) -> None:
        self.url = url
        self._channel = grpc.insecure_channel(
            url,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                *options,
            ],
        )
        self._calls: dict[str, grpc.UnaryUnaryMultiCallable] = {}

    def _call(self, method: str, request: Any, response_cls: Any, timeout: float | None) -> Any:
        call = self._calls.get(method)
        if call is None:
            call = self._channel.unary_unary(SERVICE + method, request_serializer=type(request).SerializeToString, response_deserializer=response_cls.FromString)
            self._calls[method] = call
        try:
            return call(request, timeout=timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def infer(
        self,
        model: str,
        inputs: Inputs,
        *,
        outputs: Sequence[str] | None = None,
        version: str | None = None,
        timeout: float | None = None,
        request_id: str = "",
    ) -> dict[str, np.ndarray]:
        """Score `inputs` (one array, or a dict of arrays by input name); returns every output asked for, by name."""
        request = build_infer_request(model, inputs, outputs=outputs, version=version, request_id=request_id)
        return decode_infer_response(self._call("ModelInfer", request, pb.ModelInferResponse, timeout))

    def server_live(self, *, timeout: float | None = None) -> bool:
        return bool(self._call("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse, timeout).live)

    def server_ready(self, *, timeout: float | None = None) -> bool:
        return bool(self._call("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse, timeout).ready)

    def model_ready(self, model: str, *, version: str | None = None, timeout: float | None = None) -> bool:
        request = pb.ModelReadyRequest(name=model, version=version or "")
        return bool(self._call("ModelReady", request, pb.ModelReadyResponse, timeout).ready)

    def server_metadata(self, *, timeout: float | None = None) -> pb.ServerMetadataResponse:
        return self._call("ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse, timeout)

    def model_metadata(self, model: str, *, version: str | None = None, timeout: float | None = None) -> pb.ModelMetadataResponse:
        request = pb.ModelMetadataRequest(name=model, version=version or "")
        return self._call("ModelMetadata", request, pb.ModelMetadataResponse, timeout)

    def repository_index(self, *, ready_only: bool = False, timeout: float | None = None) -> pb.RepositoryIndexResponse:
        return self._call("RepositoryIndex", pb.RepositoryIndexRequest(ready=ready_only), pb.RepositoryIndexResponse, timeout)

    def model_statistics(self, model: str = "", *, version: str | None = None, timeout: float | None = None) -> pb.ModelStatisticsResponse:
        request = pb.ModelStatisticsRequest(name=model, version=version or "")
        return self._call("ModelStatistics", request, pb.ModelStatisticsResponse, timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
