"""Hostile callers against real servers on both engines: idle streams, health watches, huge error texts, cancelled streams.

Each probe is followed by the calls an operator depends on (ModelInfer, ServerReady,
health Check) on fresh connections, within a short deadline.
"""

from __future__ import annotations

import itertools
import pathlib
import queue
import re
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from tensorwire.protos import inference_pb2 as pb

from .conftest import ENGINES, RunningServer, start_server, stop_server

TOKEN = "infer-token-3c9e1f"
AUTH = [("authorization", f"Bearer {TOKEN}")]
PROBE_DEADLINE = 3.0
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # grpc would otherwise share one connection between channels


def connect(url: str, *options: tuple[str, int]) -> grpc.Channel:
    return grpc.insecure_channel(url, options=[*OWN_CONNECTION, *options])


def infer_request(request_id: str = "", rows: int = 2) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="ols", id=request_id)
    request.inputs.add(name="input", datatype="FP32", shape=[rows, 6])
    request.raw_input_contents.append(np.ones((rows, 6), np.float32).tobytes())
    return request


def unary(channel: grpc.Channel, method: str, request: Any, response_cls: Any, *, metadata: Any = AUTH, timeout: float = PROBE_DEADLINE) -> Any:
    stub = channel.unary_unary(method, request_serializer=type(request).SerializeToString, response_deserializer=response_cls.FromString)
    return stub(request, timeout=timeout, metadata=metadata)


def health_check(channel: grpc.Channel, service: str, metadata: Any = None) -> int:
    return unary(channel, "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest(service=service), health_pb2.HealthCheckResponse, metadata=metadata).status


def operator_calls_succeed(url: str, connections: int = 6) -> None:
    """ModelInfer, ServerReady and health Check, each on fresh connections (so on every worker), within PROBE_DEADLINE."""
    for _ in range(connections):
        with connect(url) as channel:
            assert unary(channel, "/inference.GRPCInferenceService/ModelInfer", infer_request(), pb.ModelInferResponse).outputs
            assert unary(channel, "/inference.GRPCInferenceService/ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready
            assert health_check(channel, "") == health_pb2.HealthCheckResponse.SERVING


class Stream:
    """A ModelStreamInfer call on a connection of its own, fed one request at a time."""

    def __init__(self, url: str, metadata: Any = AUTH) -> None:
        self.channel = connect(url)
        self._requests: queue.Queue[pb.ModelInferRequest | None] = queue.Queue()
        method = self.channel.stream_stream(STREAM_METHOD, request_serializer=pb.ModelInferRequest.SerializeToString, response_deserializer=pb.ModelStreamInferResponse.FromString)
        self._answers = method(iter(self._requests.get, None), metadata=metadata, timeout=120)

    def ask(self, request_id: str) -> pb.ModelStreamInferResponse:
        self._requests.put(infer_request(request_id))
        return next(self._answers)

    def close(self) -> None:
        self._requests.put(None)
        self._answers.cancel()
        self.channel.close()


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text(f"infer {TOKEN}\n")
    return path


@pytest.fixture(scope="module", params=ENGINES)
def guarded(request: pytest.FixtureRequest, model_repository: pathlib.Path, tokens_file: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The default process model (2 workers, 8 threads each) with tokens, on each engine."""
    engine = request.param
    log = tmp_path_factory.mktemp("logs") / f"guarded-{engine}.log"
    running = start_server(model_repository, log, "--workers", "2", "--engine", engine, "--auth-tokens", str(tokens_file))
    yield running
    stop_server(running)


def test_idle_streams_do_not_starve_unary_calls_or_probes(guarded: RunningServer) -> None:
    streams = [Stream(guarded.url) for _ in range(20)]
    try:
        for i, stream in enumerate(streams):
            assert not stream.ask(f"open-{i}").error_message
        operator_calls_succeed(guarded.url)
        for i, stream in enumerate(streams):  # the idle streams were kept, and still answer
            answer = stream.ask(f"again-{i}")
            assert not answer.error_message and answer.infer_response.id == f"again-{i}"
    finally:
        for stream in streams:
            stream.close()


def test_open_health_watches_do_not_use_up_the_inference_budget(guarded: RunningServer) -> None:
    channels = [connect(guarded.url) for _ in range(10)]
    watches, opened, refused = [], 0, []
    try:
        for i in range(300):
            watch = channels[i % len(channels)].unary_stream(
                "/grpc.health.v1.Health/Watch", request_serializer=health_pb2.HealthCheckRequest.SerializeToString, response_deserializer=health_pb2.HealthCheckResponse.FromString
            )(health_pb2.HealthCheckRequest(service=""), timeout=60)  # no token: watches are open, like probes
            watches.append(watch)
        for watch in watches:
            try:
                assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
                opened += 1
            except grpc.RpcError as error:
                refused.append((error.code(), error.details()))
        assert 0 < opened <= 2 * 32, "at most --max-health-watches (32) per worker stay open"
        assert refused and {code for code, _ in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert "--max-health-watches" in refused[0][1]
        operator_calls_succeed(guarded.url)
    finally:
        for watch in watches:
            watch.cancel()
        for channel in channels:
            channel.close()


def test_health_without_a_token_answers_for_the_server_only(guarded: RunningServer) -> None:
    serving, listing = health_pb2.HealthCheckResponse.SERVING, "/grpc.health.v1.Health/List"
    with connect(guarded.url) as channel:
        assert health_check(channel, "") == serving
        assert health_check(channel, "inference.GRPCInferenceService") == serving
        for name in ("ols", "no-such-model"):  # the same answer whether the model exists or not
            with pytest.raises(grpc.RpcError) as info:
                health_check(channel, name)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and "token" in info.value.details()
        assert health_check(channel, "ols", AUTH) == serving
        with pytest.raises(grpc.RpcError) as info:
            health_check(channel, "no-such-model", AUTH)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        public = unary(channel, listing, health_pb2.HealthListRequest(), health_pb2.HealthListResponse, metadata=None)
        assert set(public.statuses) == {"", "inference.GRPCInferenceService"}
        private = unary(channel, listing, health_pb2.HealthListRequest(), health_pb2.HealthListResponse)
        assert {"", "ols", "flowers"} <= set(private.statuses) and private.statuses["ols"].status == serving
        assert private.statuses["broken"].status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert "Traceback" not in guarded.log()  # List used to answer UNIMPLEMENTED with an ERROR traceback


def test_error_texts_are_bounded_and_keep_their_status(guarded: RunningServer) -> None:
    many = infer_request()
    del many.inputs[:]
    del many.raw_input_contents[:]
    for i in range(10_000):
        many.inputs.add(name=f"input-{i:05d}-" + "x" * 300, datatype="FP32", shape=[1, 6])
    long_name = pb.ModelInferRequest(model_name="m" * 10_000)
    with connect(guarded.url, ("grpc.max_send_message_length", 64 << 20)) as channel:
        with pytest.raises(grpc.RpcError) as info:
            unary(channel, "/inference.GRPCInferenceService/ModelInfer", many, pb.ModelInferResponse, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = info.value.details()
        assert len(details) < 1000 and "10000 (" in details and "input-00000-" in details and "…" in details
        with pytest.raises(grpc.RpcError) as info:
            unary(channel, "/inference.GRPCInferenceService/ModelInfer", long_name, pb.ModelInferResponse)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and len(info.value.details()) <= 2000
        with pytest.raises(grpc.RpcError) as info:
            unary(channel, "/inference.GRPCInferenceService/ModelMetadata", pb.ModelMetadataRequest(name="m" * 10_000), pb.ModelMetadataResponse)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and len(info.value.details()) <= 2000
    operator_calls_succeed(guarded.url, connections=2)


def test_streams_cancelled_while_answering_leave_no_traceback(guarded: RunningServer) -> None:
    """Clients that cancel, or drop the connection, while the server is writing answers they will never read."""
    logged_before = len(guarded.log())
    for trial in range(16):
        rows = 20_000 if trial % 2 else 2  # scored in the pool or on the loop (aio)
        channel = connect(guarded.url)
        method = channel.stream_stream(STREAM_METHOD, request_serializer=pb.ModelInferRequest.SerializeToString, response_deserializer=pb.ModelStreamInferResponse.FromString)
        answers = method(itertools.repeat(infer_request(rows=rows), 100_000), metadata=AUTH, timeout=60)
        next(answers)
        time.sleep(0.05 * (trial % 4))
        if trial % 3:
            answers.cancel()
        channel.close()
    operator_calls_succeed(guarded.url, connections=2)
    time.sleep(0.5)
    logged = guarded.log()[logged_before:]
    assert "Traceback" not in logged and " ERROR " not in logged and " WARNING " not in logged, logged[-3000:]


@pytest.mark.parametrize("engine", ENGINES)
def test_streams_are_capped_and_idle_ones_closed(engine: str, model_repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    server = start_server(model_repository, tmp_path / "server.log", "--workers", "1", "--engine", engine, "--max-streams", "2", "--stream-idle-timeout", "1.5")
    try:
        first, second = Stream(server.url, None), Stream(server.url, None)
        assert not first.ask("a").error_message and not second.ask("b").error_message
        third = Stream(server.url, None)
        with pytest.raises(grpc.RpcError) as info:
            third.ask("c")
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-streams" in info.value.details()
        third.close()
        with connect(server.url) as channel:  # a full stream budget leaves unary calls alone
            assert unary(channel, "/inference.GRPCInferenceService/ModelInfer", infer_request(), pb.ModelInferResponse, metadata=None).outputs
        time.sleep(1.0)
        assert not first.ask("a2").error_message  # a request within the timeout keeps a stream open
        time.sleep(2.5)
        closed_codes = {"aio": grpc.StatusCode.DEADLINE_EXCEEDED, "sync": grpc.StatusCode.CANCELLED}  # grpcio's sync server can only cancel
        for stream in (first, second):
            with pytest.raises(grpc.RpcError) as info:
                stream.ask("late")
            assert info.value.code() == closed_codes[engine]
            stream.close()
        fresh = Stream(server.url, None)  # their slots are free again
        assert not fresh.ask("d").error_message
        fresh.close()
        assert re.search(r"idle for more than 1\.5s", server.log())
        assert "Traceback" not in server.log()
    finally:
        stop_server(server)


def test_the_sync_pool_runs_streams_apart_from_unary_calls() -> None:
    """SplitPool recognises how grpcio submits a call whose response streams; if grpcio changes that, this says so first."""
    import threading

    from tensorwire.server.transport.call_limits import SplitPool

    seen: dict[str, str] = {}

    def unary_call(request: bytes, context: Any) -> bytes:
        seen["unary"] = threading.current_thread().name
        return request

    def stream_call(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        seen["stream"] = threading.current_thread().name
        yield from requests

    pool = SplitPool(2, 2)
    server = grpc.server(pool)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary_call), "Stream": grpc.stream_stream_rpc_method_handler(stream_call),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with connect(f"127.0.0.1:{port}") as channel:
            assert channel.unary_unary("/t.S/Unary")(b"x", timeout=10) == b"x"
            assert list(channel.stream_stream("/t.S/Stream")(iter([b"a", b"b"]), timeout=10)) == [b"a", b"b"]
    finally:
        server.stop(None)
        pool.shutdown()
    assert seen["unary"].startswith("tensorwire-rpc") and seen["stream"].startswith("tensorwire-stream"), seen
