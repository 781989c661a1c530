"""InferenceClient and AsyncInferenceClient: numpy in, numpy out, over the Open Inference Protocol's gRPC API.

The two share their configuration, request building and response decoding
(`_ClientBase`, `_requests`, `_retry`, `_channels`) and differ only in I/O.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
import numpy as np
from google.protobuf.message import Message

from tensorwire.client._requests import (
    InferRequest,
    Inputs,
    StreamResult,
    build_infer_request,
    decode_infer_response,
    decode_stream_response,
    prepare_inputs,
)
from tensorwire.client._retry import NO_RETRY, RETRYABLE, RetryPolicy
from tensorwire.client.channels import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ChannelOptions,
    KeepAlive,
    PemSource,
    call_metadata,
    channel_options,
    ssl_credentials,
)
from tensorwire.client.errors import InferenceServerError, InvalidInputError, ModelNotFoundError, from_rpc_error
from tensorwire.protos import inference_pb2 as pb

SERVICE = "/inference.GRPCInferenceService/"
STREAM_METHOD = "ModelStreamInfer"
RESPONSES: dict[str, type[Message]] = {
    "ServerLive": pb.ServerLiveResponse,
    "ServerReady": pb.ServerReadyResponse,
    "ModelReady": pb.ModelReadyResponse,
    "ServerMetadata": pb.ServerMetadataResponse,
    "ModelMetadata": pb.ModelMetadataResponse,
    "ModelInfer": pb.ModelInferResponse,
    "ModelConfig": pb.ModelConfigResponse,
    "ModelStatistics": pb.ModelStatisticsResponse,
    "RepositoryIndex": pb.RepositoryIndexResponse,
    "RepositoryModelLoad": pb.RepositoryModelLoadResponse,
    "RepositoryModelUnload": pb.RepositoryModelUnloadResponse,
}
DEFAULT_RETRY = RetryPolicy()

StreamItem = InferRequest | pb.ModelInferRequest


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


class _ClientBase:
    """Everything but I/O: settings, channels and their callables, the retry policy and the model metadata cache."""

    def __init__(
        self,
        url: str,
        *,
        channels: int = 1,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        keepalive: KeepAlive | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        options: Sequence[tuple[str, Any]] = (),
        ssl: bool = False,
        root_certificates: PemSource | None = None,
        private_key: PemSource | None = None,
        certificate_chain: PemSource | None = None,
        token: str | None = None,
        validate_inputs: bool = True,
    ) -> None:
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        self.url = url
        self.retry = retry or NO_RETRY
        self.validate_inputs = validate_inputs
        self._headers = call_metadata(token) or None
        use_tls = ssl or any(x is not None for x in (root_certificates, private_key, certificate_chain))
        self._credentials = (
            ssl_credentials(root_certificates=root_certificates, private_key=private_key, certificate_chain=certificate_chain)
            if use_tls
            else None
        )
        self._channel_options = [
            channel_options(i, max_message_bytes=max_message_bytes, keepalive=keepalive, extra=options) for i in range(channels)
        ]
        self._turn = itertools.count()
        self._metadata: dict[tuple[str, str], pb.ModelMetadataResponse] = {}
        self._closed = False
        self._channels = [self._open(options) for options in self._channel_options]
        self._unary = [
            {m: ch.unary_unary(SERVICE + m, request_serializer=_serialize, response_deserializer=r.FromString) for m, r in RESPONSES.items()}
            for ch in self._channels
        ]
        self._streams = [
            ch.stream_stream(
                SERVICE + STREAM_METHOD, request_serializer=_serialize, response_deserializer=pb.ModelStreamInferResponse.FromString
            )
            for ch in self._channels
        ]

    def _open(self, options: ChannelOptions) -> Any:
        """A new channel (sync or grpc.aio) with these options."""
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return self._closed

    def _next(self, n: int) -> int:
        """Round-robin over the channels (itertools.count is atomic under the GIL); refuses once closed."""
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} for {self.url} is closed")
        return next(self._turn) % n

    def _cached_metadata(self, model: str, version: str | None) -> pb.ModelMetadataResponse | None:
        return self._metadata.get((model, version or ""))

    def _remember_metadata(self, model: str, version: str | None, metadata: pb.ModelMetadataResponse) -> None:
        self._metadata[(model, version or "")] = metadata

    def forget_metadata(self, model: str | None = None) -> None:
        """Drop cached model metadata (for one model, or all), so the next call asks the server again.

        The cache is also dropped for a model when it is loaded or unloaded through
        this client, or when the server refuses a request to it as invalid or unknown.
        """
        for key in [k for k in self._metadata if model is None or k[0] == model]:
            self._metadata.pop(key, None)

    def _build(
        self,
        model: str,
        inputs: Inputs,
        metadata: pb.ModelMetadataResponse | None,
        *,
        cast: bool,
        outputs: Sequence[str] | None,
        version: str | None,
        request_id: str,
    ) -> pb.ModelInferRequest:
        named = prepare_inputs(model, inputs, metadata, cast=cast)
        return build_infer_request(model, named, outputs=outputs, version=version, request_id=request_id)

    def _stream_request(self, item: InferRequest, index: int, metadata: pb.ModelMetadataResponse | None) -> pb.ModelInferRequest:
        return self._build(
            item.model,
            item.inputs,
            metadata,
            cast=item.cast and metadata is not None,
            outputs=item.outputs,
            version=item.version,
            request_id=item.id or str(index),
        )

    def _wants_metadata(self, cast: bool) -> bool:
        return cast or self.validate_inputs

    def _forget_on(self, error: InferenceServerError, model: str) -> None:
        if isinstance(error, (InvalidInputError, ModelNotFoundError)):
            self.forget_metadata(model)


class InferenceClient(_ClientBase):
    """A synchronous client for one server address; use it as a context manager to close its channels.

        with InferenceClient("localhost:8001", channels=4) as client:
            labels = client.infer("iris", X)["predict"]

    Keyword-only settings: `channels` (connections, used round-robin, so a
    multi-process server shares out the load), `retry` (a `RetryPolicy`; None
    turns retries off), `keepalive` (a `KeepAlive`), `max_message_bytes`,
    `options` (raw gRPC channel arguments), TLS with `ssl=True` and/or
    `root_certificates`, `private_key`, `certificate_chain` (PEM bytes or file
    paths), `token` (sent as `authorization: Bearer <token>`), and
    `validate_inputs` (check arrays against the model's metadata before sending;
    the metadata is fetched once per model and version and cached).
    Every call takes `timeout`, in seconds, covering all its retries.
    """

    def _open(self, options: ChannelOptions) -> grpc.Channel:
        if self._credentials is not None:
            return grpc.secure_channel(self.url, self._credentials, options=options)
        return grpc.insecure_channel(self.url, options=options)

    def _call(self, method: str, request: Message, deadline: float | None, *, idempotent: bool = True) -> Any:
        backoffs = self.retry.backoffs() if idempotent else iter(())
        while True:
            call = self._unary[self._next(len(self._unary))][method]
            try:
                return call(request, timeout=_remaining(deadline), metadata=self._headers)
            except grpc.RpcError as error:
                delay = next(backoffs, None) if error.code() in RETRYABLE else None  # type: ignore[attr-defined]
                if delay is None or (deadline is not None and time.monotonic() + delay >= deadline):
                    raise from_rpc_error(error) from None
            time.sleep(delay)

    def _model_metadata(self, model: str, version: str | None, deadline: float | None) -> pb.ModelMetadataResponse:
        metadata = self._cached_metadata(model, version)
        if metadata is None:
            metadata = self._call("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version or ""), deadline)
            self._remember_metadata(model, version, metadata)
        return metadata

    # ---- inference -------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: Inputs,
        *,
        outputs: Sequence[str] | None = None,
        version: str | None = None,
        timeout: float | None = None,
        request_id: str = "",
        cast: bool = False,
    ) -> dict[str, np.ndarray]:
        """Score `inputs` (one array, or a dict of arrays by input name); returns every output asked for, by name.

        An array whose datatype differs from the model's is converted with
        `cast=True` and refused with InvalidInputError, before sending, otherwise.
        """
        deadline = _deadline(timeout)
        metadata = self._model_metadata(model, version, deadline) if self._wants_metadata(cast) else None
        request = self._build(model, inputs, metadata, cast=cast, outputs=outputs, version=version, request_id=request_id)
        try:
            response = self._call("ModelInfer", request, deadline, idempotent=self.retry.retry_infer)
        except InferenceServerError as error:
            self._forget_on(error, model)
            raise
        return decode_infer_response(response)

    def stream(self, requests: Iterable[StreamItem], *, timeout: float | None = None) -> Iterator[StreamResult]:
        """Send requests over one bidirectional stream; yields one result per request, in order.

        `requests` may be any iterable (a generator fed by a queue, for long-lived
        streams) of InferRequest or ready-made ModelInferRequest messages. A
        request the server refuses comes back as a result with `error` set, and
        the stream goes on. A request that fails the client-side checks (or an
        exception from `requests` itself) ends the stream: the results of the
        requests before it are yielded, then the exception is raised.
        `timeout` bounds the whole stream. Streams are never retried.
        """
        deadline = _deadline(timeout)
        failure: list[BaseException] = []

        def outgoing() -> Iterator[pb.ModelInferRequest]:
            items = iter(requests)
            for index in itertools.count():
                try:
                    item = next(items)
                    message = self._stream_message(item, index, deadline)
                except StopIteration:
                    return
                except BaseException as exc:  # re-raised in the caller's thread, after the results before it
                    failure.append(exc)
                    return
                yield message

        i = self._next(len(self._streams))
        call = self._streams[i](outgoing(), timeout=_remaining(deadline), metadata=self._headers)
        try:
            for response in call:
                yield decode_stream_response(response)
        except grpc.RpcError as error:
            if failure:
                raise failure[0] from None
            raise from_rpc_error(error) from None
        finally:
            call.cancel()  # a no-op once the stream is done; stops the server's work when the caller stops early
        if failure:
            raise failure[0]

    def _stream_message(self, item: StreamItem, index: int, deadline: float | None) -> pb.ModelInferRequest:
        if isinstance(item, pb.ModelInferRequest):
            return item
        if not isinstance(item, InferRequest):
            raise TypeError(f"stream requests must be InferRequest or ModelInferRequest, got {type(item).__name__}")
        metadata = None
        if self._wants_metadata(item.cast):
            try:
                metadata = self._model_metadata(item.model, item.version, deadline)
            except InferenceServerError:
                pass  # unchecked, so that the server's answer rides in the stream like any other error
        return self._stream_request(item, index, metadata)

    # ---- health and metadata -------------------------------------------------

    def server_live(self, *, timeout: float | None = None) -> bool:
        return bool(self._call("ServerLive", pb.ServerLiveRequest(), _deadline(timeout)).live)

    def server_ready(self, *, timeout: float | None = None) -> bool:
        return bool(self._call("ServerReady", pb.ServerReadyRequest(), _deadline(timeout)).ready)

    def model_ready(self, model: str, *, version: str | None = None, timeout: float | None = None) -> bool:
        request = pb.ModelReadyRequest(name=model, version=version or "")
        return bool(self._call("ModelReady", request, _deadline(timeout)).ready)

    def server_metadata(self, *, timeout: float | None = None) -> pb.ServerMetadataResponse:
        return self._call("ServerMetadata", pb.ServerMetadataRequest(), _deadline(timeout))

    def model_metadata(self, model: str, *, version: str | None = None, timeout: float | None = None) -> pb.ModelMetadataResponse:
        """The model's metadata, always asked of the server (and kept for the input checks)."""
        metadata = self._call("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version or ""), _deadline(timeout))
        self._remember_metadata(model, version, metadata)
        return metadata

    def model_config(self, model: str, *, version: str | None = None, timeout: float | None = None) -> pb.ModelConfigResponse:
        return self._call("ModelConfig", pb.ModelConfigRequest(name=model, version=version or ""), _deadline(timeout))

    def model_statistics(self, model: str = "", *, version: str | None = None, timeout: float | None = None) -> pb.ModelStatisticsResponse:
        request = pb.ModelStatisticsRequest(name=model, version=version or "")
        return self._call("ModelStatistics", request, _deadline(timeout))

    # ---- repository ------------------------------------------------------------

    def repository_index(self, *, ready_only: bool = False, timeout: float | None = None) -> pb.RepositoryIndexResponse:
        return self._call("RepositoryIndex", pb.RepositoryIndexRequest(ready=ready_only), _deadline(timeout))

    def repository_model_load(self, model: str, *, timeout: float | None = None) -> None:
        """Load (or reload) a model from the repository; not retried."""
        self.forget_metadata(model)
        self._call("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name=model), _deadline(timeout), idempotent=False)

    def repository_model_unload(self, model: str, *, timeout: float | None = None) -> None:
        """Unload a model; not retried."""
        self.forget_metadata(model)
        self._call("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name=model), _deadline(timeout), idempotent=False)

    # ---- lifetime --------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncInferenceClient(_ClientBase):
    """The asyncio twin of InferenceClient: the same settings and methods, awaited.

        async with AsyncInferenceClient("localhost:8001") as client:
            result = await client.infer("iris", X)
            async for answer in client.stream(requests):
                ...

    Create it inside the event loop that uses it (grpc.aio channels belong to one loop).
    """

    def _open(self, options: ChannelOptions) -> grpc.aio.Channel:
        if self._credentials is not None:
            return grpc.aio.secure_channel(self.url, self._credentials, options=options)
        return grpc.aio.insecure_channel(self.url, options=options)

    async def _call(self, method: str, request: Message, deadline: float | None, *, idempotent: bool = True) -> Any:
        backoffs = self.retry.backoffs() if idempotent else iter(())
        while True:
            call = self._unary[self._next(len(self._unary))][method]
            try:
                return await call(request, timeout=_remaining(deadline), metadata=self._headers)
            except grpc.aio.AioRpcError as error:
                delay = next(backoffs, None) if error.code() in RETRYABLE else None
                if delay is None or (deadline is not None and time.monotonic() + delay >= deadline):
                    raise from_rpc_error(error) from None
            await asyncio.sleep(delay)

    async def _model_metadata(self, model: str, version: str | None, deadline: float | None) -> pb.ModelMetadataResponse:
        metadata = self._cached_metadata(model, version)
        if metadata is None:
            metadata = await self._call("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version or ""), deadline)
            self._remember_metadata(model, version, metadata)
        return metadata

    # ---- inference -------------------------------------------------------------

    async def infer(
        self,
        model: str,
        inputs: Inputs,
        *,
        outputs: Sequence[str] | None = None,
        version: str | None = None,
        timeout: float | None = None,
        request_id: str = "",
        cast: bool = False,
    ) -> dict[str, np.ndarray]:
        """See InferenceClient.infer."""
        deadline = _deadline(timeout)
        metadata = await self._model_metadata(model, version, deadline) if self._wants_metadata(cast) else None
        request = self._build(model, inputs, metadata, cast=cast, outputs=outputs, version=version, request_id=request_id)
        try:
            response = await self._call("ModelInfer", request, deadline, idempotent=self.retry.retry_infer)
        except InferenceServerError as error:
            self._forget_on(error, model)
            raise
        return decode_infer_response(response)

    async def stream(
        self, requests: AsyncIterable[StreamItem] | Iterable[StreamItem], *, timeout: float | None = None
    ) -> AsyncIterator[StreamResult]:
        """See InferenceClient.stream; `requests` may be an async or a plain iterable."""
        deadline = _deadline(timeout)
        failure: list[BaseException] = []

        async def items() -> AsyncIterator[StreamItem]:
            if isinstance(requests, AsyncIterable):
                async for item in requests:
                    yield item
            else:
                for item in requests:
                    yield item

        async def outgoing() -> AsyncIterator[pb.ModelInferRequest]:
            index = 0
            try:
                async for item in items():
                    message = await self._stream_message(item, index, deadline)
                    yield message
                    index += 1
            except Exception as exc:  # re-raised to the caller after the results before it
                failure.append(exc)

        i = self._next(len(self._streams))
        call = self._streams[i](outgoing(), timeout=_remaining(deadline), metadata=self._headers)
        try:
            async for response in call:
                yield decode_stream_response(response)
        except grpc.aio.AioRpcError as error:
            if failure:
                raise failure[0] from None
            raise from_rpc_error(error) from None
        finally:
            call.cancel()
        if failure:
            raise failure[0]

    async def _stream_message(self, item: StreamItem, index: int, deadline: float | None) -> pb.ModelInferRequest:
        if isinstance(item, pb.ModelInferRequest):
            return item
        if not isinstance(item, InferRequest):
            raise TypeError(f"stream requests must be InferRequest or ModelInferRequest, got {type(item).__name__}")
        metadata = None
        if self._wants_metadata(item.cast):
            try:
                metadata = await self._model_metadata(item.model, item.version, deadline)
            except InferenceServerError:
                pass  # unchecked, so that the server's answer rides in the stream like any other error
        return self._stream_request(item, index, metadata)

    # ---- health and metadata -------------------------------------------------

    async def server_live(self, *, timeout: float | None = None) -> bool:
        return bool((await self._call("ServerLive", pb.ServerLiveRequest(), _deadline(timeout))).live)

    async def server_ready(self, *, timeout: float | None = None) -> bool:
        return bool((await self._call("ServerReady", pb.ServerReadyRequest(), _deadline(timeout))).ready)

    async def model_ready(self, model: str, *, version: str | None = None, timeout: float | None = None) -> bool:
        request = pb.ModelReadyRequest(name=model, version=version or "")
        return bool((await self._call("ModelReady", request, _deadline(timeout))).ready)

    async def server_metadata(self, *, timeout: float | None = None) -> pb.ServerMetadataResponse:
        return await self._call("ServerMetadata", pb.ServerMetadataRequest(), _deadline(timeout))

    async def model_metadata(self, model: str, *, version: str | None = None, timeout: float | None = None) -> pb.ModelMetadataResponse:
        metadata = await self._call("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version or ""), _deadline(timeout))
        self._remember_metadata(model, version, metadata)
        return metadata

    async def model_config(self, model: str, *, version: str | None = None, timeout: float | None = None) -> pb.ModelConfigResponse:
        return await self._call("ModelConfig", pb.ModelConfigRequest(name=model, version=version or ""), _deadline(timeout))

    async def model_statistics(self, model: str = "", *, version: str | None = None, timeout: float | None = None) -> pb.ModelStatisticsResponse:
        request = pb.ModelStatisticsRequest(name=model, version=version or "")
        return await self._call("ModelStatistics", request, _deadline(timeout))

    # ---- repository ------------------------------------------------------------

    async def repository_index(self, *, ready_only: bool = False, timeout: float | None = None) -> pb.RepositoryIndexResponse:
        return await self._call("RepositoryIndex", pb.RepositoryIndexRequest(ready=ready_only), _deadline(timeout))

    async def repository_model_load(self, model: str, *, timeout: float | None = None) -> None:
        self.forget_metadata(model)
        await self._call("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name=model), _deadline(timeout), idempotent=False)

    async def repository_model_unload(self, model: str, *, timeout: float | None = None) -> None:
        self.forget_metadata(model)
        await self._call("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name=model), _deadline(timeout), idempotent=False)

    # ---- lifetime --------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        for channel in self._channels:
            await channel.close()

    async def __aenter__(self) -> AsyncInferenceClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
