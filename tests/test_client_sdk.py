"""The client SDK, sync and asyncio: against the real server, and against a scripted in-process server for
what the real one cannot be made to do on demand (fail, count calls, show connections and headers)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import pathlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest

from tensorwire.client import (
    AsyncInferenceClient,
    InferenceClient,
    InferenceServerError,
    InferRequest,
    InvalidInputError,
    KeepAlive,
    ModelNotFoundError,
    RetryPolicy,
    ServerUnavailableError,
)
from tensorwire.protos import inference_pb2 as pb

QUICK_RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.001, max_backoff_s=0.01)


# ---- against the real server ---------------------------------------------------------------------------


def test_sync_and_async_infer_match_scikit_learn_over_several_channels(server, fitted_models) -> None:  # type: ignore[no-untyped-def]
    fitted = fitted_models["flowers"]
    X = fitted.X[:9].astype(np.float32)
    want = fitted.estimator.predict_proba(X)
    with InferenceClient(server.url, channels=3, keepalive=KeepAlive()) as client:
        for _ in range(4):  # every channel serves at least one call
            np.testing.assert_allclose(client.infer("flowers", X)["predict_proba"], want, rtol=1e-5, atol=1e-6)

    async def run() -> list[dict[str, np.ndarray]]:
        async with AsyncInferenceClient(server.url, channels=3) as client:
            return list(await asyncio.gather(*(client.infer("flowers", X, outputs=["predict_proba"]) for _ in range(6))))

    for got in asyncio.run(run()):
        assert list(got) == ["predict_proba"]
        np.testing.assert_allclose(got["predict_proba"], want, rtol=1e-5, atol=1e-6)


def stream_requests(fitted_models) -> list[InferRequest]:  # type: ignore[no-untyped-def]
    X = fitted_models["ridge"].X
    return [
        InferRequest("ridge", X[:2], id="first"),
        InferRequest("no-such-model", X[:2], id="middle"),
        InferRequest("ridge", X[2:5]),  # no id: numbered by position
    ]


def check_stream_results(results, fitted_models) -> None:  # type: ignore[no-untyped-def]
    ridge = fitted_models["ridge"]
    assert [r.id for r in results] == ["first", "middle", "2"]
    assert [r.ok for r in results] == [True, False, True]
    assert "no-such-model" in str(results[1].error)
    with pytest.raises(InferenceServerError):
        results[1]["predict"]
    np.testing.assert_allclose(results[0]["predict"], ridge.estimator.predict(ridge.X[:2]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(results[2]["predict"], ridge.estimator.predict(ridge.X[2:5]), rtol=1e-9, atol=1e-12)


def test_stream_answers_in_order_and_goes_on_after_a_server_error(client: InferenceClient, fitted_models) -> None:  # type: ignore[no-untyped-def]
    results = list(client.stream(iter(stream_requests(fitted_models)), timeout=30))
    check_stream_results(results, fitted_models)


def test_async_stream_takes_an_async_iterator(server, fitted_models) -> None:  # type: ignore[no-untyped-def]
    async def requests() -> AsyncIterator[InferRequest]:
        for request in stream_requests(fitted_models):
            yield request

    async def run() -> list[Any]:
        async with AsyncInferenceClient(server.url) as client:
            return [result async for result in client.stream(requests(), timeout=30)]

    check_stream_results(asyncio.run(run()), fitted_models)


def test_a_request_failing_the_client_checks_ends_the_stream_after_the_results_before_it(client: InferenceClient, fitted_models) -> None:  # type: ignore[no-untyped-def]
    X = fitted_models["binary"].X[:3]
    requests = [InferRequest("binary", X.astype(np.float32), id="good"), InferRequest("binary", X, id="float64")]
    seen = []
    with pytest.raises(InvalidInputError, match="FP32"):
        for result in client.stream(requests, timeout=30):
            seen.append(result.id)
    assert seen == ["good"]


def test_cast_converts_and_otherwise_a_mismatch_is_refused_by_name(client: InferenceClient, fitted_models) -> None:  # type: ignore[no-untyped-def]
    fitted = fitted_models["binary"]  # an FP32 model
    X = fitted.X[:6]  # float64
    with pytest.raises(InvalidInputError) as info:
        client.infer("binary", X)
    for fragment in ("'binary'", "'input'", "float64", "FP32", "cast=True"):
        assert fragment in info.value.details
    got = client.infer("binary", X, cast=True)["predict"]
    np.testing.assert_array_equal(got, fitted.estimator.predict(X.astype(np.float32)))
    integers = np.arange(12, dtype=np.int64).reshape(2, 6)
    np.testing.assert_array_equal(client.infer("binary", integers, cast=True)["predict"], fitted.estimator.predict(integers.astype(np.float32)))
    with pytest.raises(InvalidInputError, match="same_kind"):
        client.infer("binary", np.full((1, 6), "1.5"), cast=True)
    with pytest.raises(InvalidInputError, match=r"shape \[2, 5\]"):
        client.infer("binary", np.zeros((2, 5), np.float32))


def test_every_unary_method_of_the_async_client(server) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        async with AsyncInferenceClient(server.url) as client:
            assert await client.server_live() and await client.server_ready()
            assert await client.model_ready("ridge")
            assert (await client.server_metadata()).name == "tensorwire"
            assert (await client.model_metadata("ridge")).inputs[0].datatype == "FP64"
            assert (await client.model_config("ridge")).config.name == "ridge"
            assert "ridge" in {m.name for m in (await client.repository_index(ready_only=True)).models}
            await client.infer("ridge", np.zeros((1, 6)))
            assert any(s.name == "ridge" for s in (await client.model_statistics("ridge")).model_stats)
            with pytest.raises(ModelNotFoundError):
                await client.model_metadata("no-such-model")

    asyncio.run(run())


def test_context_managers_close_every_channel(server) -> None:  # type: ignore[no-untyped-def]
    with InferenceClient(server.url, channels=2) as client:
        assert client.server_live()
    assert client.closed
    with pytest.raises(RuntimeError, match="closed"):
        client.server_live()

    async def run() -> AsyncInferenceClient:
        async with AsyncInferenceClient(server.url, channels=2) as client:
            assert await client.server_live()
        with pytest.raises(RuntimeError, match="closed"):
            await client.server_live()
        for channel in client._channels:  # closed for grpc too, not just flagged
            with pytest.raises(grpc.aio.UsageError):
                await channel.unary_unary("/inference.GRPCInferenceService/ServerLive")(b"")
        return client

    assert asyncio.run(run()).closed
    for channel in client._channels:
        with pytest.raises(ValueError, match="closed"):
            channel.unary_unary("/inference.GRPCInferenceService/ServerLive")(b"")


# ---- against a scripted server ---------------------------------------------------------------------------


@dataclass
class Scripted:
    """An Open Inference Protocol server in this process: one FP32 model 'double' with input 'x' [-1, 2]."""

    port: int
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # method, peer, metadata
    unavailable: dict[str, int] = field(default_factory=dict)  # method -> how many more calls to refuse
    server: Any = None

    def count(self, method: str) -> int:
        return sum(1 for m, _, _ in self.calls if m == method)

    def start(self, credentials: grpc.ServerCredentials | None = None) -> Scripted:
        def handler(method: str, response_cls: Any, answer: Any) -> grpc.RpcMethodHandler:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                self.calls.append((method, context.peer(), dict(context.invocation_metadata())))
                if self.unavailable.get(method, 0) > 0:
                    self.unavailable[method] -= 1
                    context.abort(grpc.StatusCode.UNAVAILABLE, "scripted outage")
                return answer(request)

            request_cls = getattr(pb, f"{method}Request")
            return grpc.unary_unary_rpc_method_handler(call, request_cls.FromString, response_cls.SerializeToString)

        def infer(request: pb.ModelInferRequest) -> pb.ModelInferResponse:
            x = np.frombuffer(request.raw_input_contents[0], "<f4").reshape(tuple(request.inputs[0].shape))
            response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
            response.outputs.add(name="y", datatype="FP32", shape=x.shape)
            response.raw_output_contents.append((2 * x).astype("<f4").tobytes())
            return response

        tensor = pb.ModelMetadataResponse.TensorMetadata
        metadata = pb.ModelMetadataResponse(name="double", inputs=[tensor(name="x", datatype="FP32", shape=[-1, 2])])
        methods = {
            "ServerReady": handler("ServerReady", pb.ServerReadyResponse, lambda r: pb.ServerReadyResponse(ready=True)),
            "ModelMetadata": handler("ModelMetadata", pb.ModelMetadataResponse, lambda r: metadata),
            "ModelInfer": handler("ModelInfer", pb.ModelInferResponse, infer),
            "RepositoryModelLoad": handler("RepositoryModelLoad", pb.RepositoryModelLoadResponse, lambda r: pb.RepositoryModelLoadResponse()),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("inference.GRPCInferenceService", methods),))
        if credentials is None:
            self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        else:
            self.server.add_secure_port(f"127.0.0.1:{self.port}", credentials)
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def scripted() -> Iterator[Scripted]:
    running = Scripted(free_port()).start()
    yield running
    running.stop()


def url(scripted: Scripted) -> str:
    return f"127.0.0.1:{scripted.port}"


def test_channels_are_separate_connections_used_round_robin(scripted: Scripted) -> None:
    with InferenceClient(url(scripted), channels=3) as client:
        for _ in range(6):
            client.server_ready()
    peers = [peer for _, peer, _ in scripted.calls]
    assert len(set(peers)) == 3
    assert all(peers.count(peer) == 2 for peer in peers)
    assert peers[:3] == peers[3:]


def test_unavailable_is_retried_for_idempotent_calls_but_not_for_load(scripted: Scripted) -> None:
    scripted.unavailable = {"ServerReady": 2, "ModelInfer": 3, "RepositoryModelLoad": 1}
    with InferenceClient(url(scripted), retry=QUICK_RETRY) as client:
        assert client.server_ready()
        np.testing.assert_array_equal(client.infer("double", np.ones((1, 2), np.float32))["y"], [[2, 2]])
        with pytest.raises(ServerUnavailableError, match="scripted outage"):
            client.repository_model_load("double")
    assert (scripted.count("ServerReady"), scripted.count("ModelInfer"), scripted.count("RepositoryModelLoad")) == (3, 4, 1)


def test_inference_retries_can_be_turned_off_and_attempts_are_bounded(scripted: Scripted) -> None:
    scripted.unavailable = {"ModelInfer": 1, "ServerReady": 10}
    X = np.ones((1, 2), np.float32)
    with InferenceClient(url(scripted), retry=RetryPolicy(retry_infer=False, initial_backoff_s=0.001)) as client:
        with pytest.raises(ServerUnavailableError):
            client.infer("double", X)
        with pytest.raises(ServerUnavailableError):
            client.server_ready()
    assert scripted.count("ModelInfer") == 1
    assert scripted.count("ServerReady") == 5  # RetryPolicy().max_attempts

    async def run() -> None:
        async with AsyncInferenceClient(url(scripted), retry=None) as client:
            with pytest.raises(ServerUnavailableError):
                await client.server_ready()

    asyncio.run(run())
    assert scripted.count("ServerReady") == 6


def test_async_client_retries_too(scripted: Scripted) -> None:
    scripted.unavailable = {"ModelInfer": 2}

    async def run() -> dict[str, np.ndarray]:
        async with AsyncInferenceClient(url(scripted), retry=QUICK_RETRY, channels=2) as client:
            return await client.infer("double", np.ones((3, 2), np.float32))

    assert asyncio.run(run())["y"].shape == (3, 2)
    assert scripted.count("ModelInfer") == 3


@dataclass(frozen=True, kw_only=True)
class SignallingRetry(RetryPolicy):
    """A policy that tells the test when the client first backs off."""

    backed_off: threading.Event = field(default_factory=threading.Event)

    def backoffs(self) -> Iterator[float]:
        for delay in super().backoffs():
            self.backed_off.set()
            yield delay


def test_a_client_started_before_its_server_retries_until_it_answers() -> None:
    port = free_port()
    policy = SignallingRetry(max_attempts=1000, initial_backoff_s=0.01, max_backoff_s=0.05)
    fast_reconnect = [("grpc.initial_reconnect_backoff_ms", 20), ("grpc.min_reconnect_backoff_ms", 20), ("grpc.max_reconnect_backoff_ms", 50)]
    outcome: list[Any] = []
    with InferenceClient(f"127.0.0.1:{port}", retry=policy, options=fast_reconnect) as client:
        caller = threading.Thread(target=lambda: outcome.append(client.server_ready(timeout=60)))
        caller.start()
        assert policy.backed_off.wait(60), "the client never met an UNAVAILABLE"
        scripted = Scripted(port).start()
        try:
            caller.join(60)
        finally:
            scripted.stop()
    assert outcome == [True]
    assert scripted.count("ServerReady") == 1


def test_nothing_listening_gives_server_unavailable_within_the_deadline() -> None:
    with InferenceClient(f"127.0.0.1:{free_port()}", retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.001)) as client:
        with pytest.raises(ServerUnavailableError):
            client.server_ready()
    with InferenceClient(f"127.0.0.1:{free_port()}", retry=RetryPolicy(max_attempts=10**6, initial_backoff_s=0.01)) as client:
        with pytest.raises(ServerUnavailableError):  # the deadline ends the retries
            client.server_ready(timeout=0.2)


def test_metadata_is_fetched_once_per_model_and_version(scripted: Scripted) -> None:
    X = np.ones((2, 2), np.float32)
    with InferenceClient(url(scripted)) as client:
        client.infer("double", X)
        client.infer("double", X.astype(np.float64), cast=True)
        assert scripted.count("ModelMetadata") == 1
        client.infer("double", X, version="1")
        assert scripted.count("ModelMetadata") == 2
        client.repository_model_load("double")  # a reload may change the model: ask again
        client.infer("double", X)
        assert scripted.count("ModelMetadata") == 3
        client.forget_metadata()
        client.infer("double", X, version="1")
        assert scripted.count("ModelMetadata") == 4
    with InferenceClient(url(scripted), validate_inputs=False) as client:
        client.infer("double", {"x": X})
    assert scripted.count("ModelMetadata") == 4


def test_a_refused_dtype_is_never_sent_and_a_bare_array_takes_the_declared_input_name(scripted: Scripted) -> None:
    with InferenceClient(url(scripted)) as client:
        with pytest.raises(InvalidInputError, match="float64"):
            client.infer("double", np.ones((1, 2)))
        assert scripted.count("ModelInfer") == 0
        with pytest.raises(InvalidInputError, match="no input 'input'"):
            client.infer("double", {"input": np.ones((1, 2), np.float32)})
        assert client.infer("double", np.ones((1, 2), np.float16), cast=True)["y"].dtype == np.float32
    assert scripted.count("ModelInfer") == 1


def test_the_token_rides_as_bearer_metadata(scripted: Scripted) -> None:
    with InferenceClient(url(scripted), token="s3cret") as client:
        client.server_ready()
    assert scripted.calls[0][2]["authorization"] == "Bearer s3cret"
    with pytest.raises(ValueError, match="token"):
        InferenceClient(url(scripted), token="bad\ntoken")


def make_certificates(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    """A throwaway CA, a certificate for 127.0.0.1 and a client certificate, as PEM files."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())

    def issue(subject: str, key: Any, *, ca: bool = False, san: list[Any] | None = None) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    files = {}
    keys = {"server": ec.generate_private_key(ec.SECP256R1()), "client": ec.generate_private_key(ec.SECP256R1())}
    certificates = {
        "ca": issue("test CA", ca_key, ca=True),
        "server": issue("server", keys["server"], san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        "client": issue("client", keys["client"]),
    }
    for label, certificate in certificates.items():
        files[f"{label}.crt"] = directory / f"{label}.crt"
        files[f"{label}.crt"].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    for label, key in keys.items():
        files[f"{label}.key"] = directory / f"{label}.key"
        files[f"{label}.key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return files


def test_mutual_tls_with_certificates_as_paths_or_bytes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pem = make_certificates(tmp_path)
    credentials = grpc.ssl_server_credentials(
        [(pem["server.key"].read_bytes(), pem["server.crt"].read_bytes())], root_certificates=pem["ca.crt"].read_bytes(), require_client_auth=True
    )
    scripted = Scripted(free_port()).start(credentials)
    try:
        tls = dict(root_certificates=pem["ca.crt"], private_key=pem["client.key"], certificate_chain=pem["client.crt"].read_bytes())
        with InferenceClient(url(scripted), token="t", **tls) as client:  # type: ignore[arg-type]
            assert client.server_ready()

        async def run() -> bool:
            async with AsyncInferenceClient(url(scripted), **tls) as client:  # type: ignore[arg-type]
                return await client.server_ready()

        assert asyncio.run(run())
        with InferenceClient(url(scripted), retry=None, root_certificates=pem["ca.crt"]) as client:  # no client certificate
            with pytest.raises(ServerUnavailableError):
                client.server_ready(timeout=10)
    finally:
        scripted.stop()
    assert scripted.count("ServerReady") == 2
    assert scripted.calls[0][2]["authorization"] == "Bearer t"


def test_tls_settings_are_checked_at_construction(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="root certificates"):
        InferenceClient("localhost:1", root_certificates=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="both private_key and certificate_chain"):
        InferenceClient("localhost:1", ssl=True, private_key=b"key")
    with pytest.raises(ValueError, match="channels"):
        InferenceClient("localhost:1", channels=0)
