"""TLS, mutual TLS, bearer tokens with scopes, and the request and model limits, against real servers."""

from __future__ import annotations

import datetime
import pathlib
import time
from typing import Any

import grpc
import numpy as np
import pytest

from tensorwire.protos import inference_pb2 as pb

INFER_TOKEN = "infer-token-5f0c2a"
ADMIN_TOKEN = "admin-token-9b1d7e"


def make_ca_and_certs(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    """A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate, as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def certificate(subject: str, public: Any, issuer: str, signer: Any, *, ca: bool = False, san: list[Any] | None = None) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key, client_key = key(), key(), key()
    ca = certificate("tensorwire test CA", ca_key.public_key(), "tensorwire test CA", ca_key, ca=True)
    server = certificate("localhost", server_key.public_key(), "tensorwire test CA", ca_key, san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client = certificate("client", client_key.public_key(), "tensorwire test CA", ca_key)
    files = {}
    for label, value in (("ca", ca), ("server", server), ("client", client)):
        files[f"{label}.crt"] = directory / f"{label}.crt"
        files[f"{label}.crt"].write_bytes(value.public_bytes(serialization.Encoding.PEM))
    for label, private in (("server", server_key), ("client", client_key)):
        files[f"{label}.key"] = directory / f"{label}.key"
        files[f"{label}.key"].write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return files


def call(channel: grpc.Channel, method: str, request: Any, response_cls: Any, token: str | None = None) -> Any:
    stub = channel.unary_unary(f"/inference.GRPCInferenceService/{method}", request_serializer=type(request).SerializeToString, response_deserializer=response_cls.FromString)
    metadata = [("authorization", f"Bearer {token}")] if token else None
    return stub(request, timeout=10, metadata=metadata)


def infer_request(n_features: int = 6, rows: int = 2) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="ols")
    request.inputs.add(name="input", datatype="FP32", shape=[rows, n_features])
    request.raw_input_contents.append(np.zeros((rows, n_features), np.float32).tobytes())
    return request


def tls_channel(server: Any, certs: dict[str, pathlib.Path], *, client_cert: bool = False) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs["ca.crt"].read_bytes(),
        private_key=certs["client.key"].read_bytes() if client_cert else None,
        certificate_chain=certs["client.crt"].read_bytes() if client_cert else None,
    )
    return grpc.secure_channel(f"localhost:{server.port}", credentials)


def tls_ready(port: int, certs: dict[str, pathlib.Path], client_cert: bool = False) -> bool:
    class Port:
        pass

    server = Port()
    server.port = port  # type: ignore[attr-defined]
    try:
        with tls_channel(server, certs, client_cert=client_cert) as channel:
            return bool(call(channel, "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready)
    except grpc.RpcError:
        return False


def test_tls_serves_encrypted_and_refuses_plaintext(start_tensorwire: Any, model_repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    certs = make_ca_and_certs(tmp_path)
    server = start_tensorwire(
        model_repository, "--workers", "1", "--grpc-use-ssl", "--grpc-server-cert", str(certs["server.crt"]), "--grpc-server-key", str(certs["server.key"]),
        ready=lambda port: tls_ready(port, certs),
    )
    with tls_channel(server, certs) as channel:
        response = call(channel, "ModelInfer", infer_request(), pb.ModelInferResponse)
        assert response.outputs[0].name == "predict"
    with grpc.insecure_channel(server.url) as plain, pytest.raises(grpc.RpcError) as info:
        call(plain, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate(start_tensorwire: Any, model_repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    certs = make_ca_and_certs(tmp_path)
    server = start_tensorwire(
        model_repository, "--workers", "1", "--grpc-use-ssl-mutual", "--grpc-server-cert", str(certs["server.crt"]),
        "--grpc-server-key", str(certs["server.key"]), "--grpc-root-cert", str(certs["ca.crt"]),
        ready=lambda port: tls_ready(port, certs, client_cert=True),
    )
    with tls_channel(server, certs, client_cert=True) as channel:
        assert call(channel, "ModelInfer", infer_request(), pb.ModelInferResponse).outputs
    with tls_channel(server, certs) as channel, pytest.raises(grpc.RpcError) as info:
        call(channel, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.fixture(params=("aio", "sync"))
def authed(request: pytest.FixtureRequest, start_tensorwire: Any, model_repository: pathlib.Path, tmp_path: pathlib.Path) -> Any:
    """A server requiring tokens, on each gRPC engine (each has its own auth interceptor)."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# scope token\ninfer {INFER_TOKEN}\nadmin {ADMIN_TOKEN}\n")
    server = start_tensorwire(
        model_repository, "--workers", "2", "--engine", request.param, "--auth-tokens", str(tokens), "--model-control-mode", "explicit", "--load-model", "*"
    )
    server.tokens = tokens
    return server


def test_tokens_and_scopes(authed: Any) -> None:
    with grpc.insecure_channel(authed.url) as channel:
        # probes stay open
        assert call(channel, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live
        assert call(channel, "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready
        # infer scope: inference and metadata, not repository changes
        assert call(channel, "ModelInfer", infer_request(), pb.ModelInferResponse, INFER_TOKEN).outputs
        assert call(channel, "ModelMetadata", pb.ModelMetadataRequest(name="ols"), pb.ModelMetadataResponse, INFER_TOKEN).name == "ols"
        load = pb.RepositoryModelLoadRequest(model_name="ols")
        cases = [
            (None, "ModelInfer", infer_request(), grpc.StatusCode.UNAUTHENTICATED),
            ("not-a-token", "ModelInfer", infer_request(), grpc.StatusCode.UNAUTHENTICATED),
            (INFER_TOKEN[:-1], "ModelMetadata", pb.ModelMetadataRequest(name="ols"), grpc.StatusCode.UNAUTHENTICATED),
            (INFER_TOKEN, "RepositoryModelLoad", load, grpc.StatusCode.PERMISSION_DENIED),
        ]
        for token, method, request, code in cases:
            with pytest.raises(grpc.RpcError) as info:
                call(channel, method, request, pb.ModelInferResponse, token)
            assert info.value.code() == code, (token, method)
            assert INFER_TOKEN not in info.value.details() and "not-a-token" not in info.value.details()
        # admin includes infer
        call(channel, "RepositoryModelLoad", load, pb.RepositoryModelLoadResponse, ADMIN_TOKEN)
        assert call(channel, "ModelInfer", infer_request(), pb.ModelInferResponse, ADMIN_TOKEN).outputs
    assert INFER_TOKEN not in authed.log() and ADMIN_TOKEN not in authed.log() and "not-a-token" not in authed.log()


def test_health_service_needs_no_token(authed: Any) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(authed.url) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_a_new_token_file_takes_effect_without_restart(authed: Any) -> None:
    fresh = "fresh-token-77aa01"
    authed.tokens.write_text(f"admin {fresh}\n")
    deadline = time.monotonic() + 20
    with grpc.insecure_channel(authed.url, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        while True:
            try:
                call(channel, "ModelInfer", infer_request(), pb.ModelInferResponse, fresh)
                call(channel, "ModelInfer", infer_request(), pb.ModelInferResponse, fresh)
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "the new token never took effect"
                time.sleep(0.2)
        time.sleep(1.5)  # every worker has re-read the file by now
        with pytest.raises(grpc.RpcError) as info:
            call(channel, "ModelInfer", infer_request(), pb.ModelInferResponse, INFER_TOKEN)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_serve_refuses_a_malformed_token_file_at_start(tmp_path: pathlib.Path, model_repository: pathlib.Path) -> None:
    import subprocess
    import sys

    tokens = tmp_path / "tokens"
    tokens.write_text("superuser s3cret-value\n")
    result = subprocess.run([sys.executable, "-m", "tensorwire", "serve", str(model_repository), "--auth-tokens", str(tokens), "--grpc-port", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "line 1" in result.stderr and "s3cret-value" not in result.stderr


def test_request_limits(start_tensorwire: Any, model_repository: pathlib.Path) -> None:
    server = start_tensorwire(model_repository, "--workers", "1", "--max-rows", "100", "--max-receive-mb", "1")
    with grpc.insecure_channel(server.url) as channel:
        with pytest.raises(grpc.RpcError) as info:
            call(channel, "ModelInfer", infer_request(rows=101), pb.ModelInferResponse)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "--max-rows 100" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            call(channel, "ModelInfer", infer_request(rows=50_000), pb.ModelInferResponse)  # 1.2 MB
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert call(channel, "ModelInfer", infer_request(rows=100), pb.ModelInferResponse).outputs


@pytest.mark.parametrize("engine", ["aio", "sync"])
def test_in_flight_limit_answers_resource_exhausted_at_once(start_tensorwire: Any, model_repository: pathlib.Path, engine: str) -> None:
    """aio refuses the third concurrent call; sync queues calls for its threads and refuses past the worker's whole
    budget (--max-inflight + --max-streams + --max-health-watches + the probes' reserve of 8: 12 here)."""
    server = start_tensorwire(
        model_repository, "--workers", "1", "--engine", engine, "--threads", "2", "--max-inflight", "2", "--max-streams", "1", "--max-health-watches", "1"
    )
    big = infer_request(rows=50_000)
    with grpc.insecure_channel(server.url, options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=pb.ModelInferRequest.SerializeToString, response_deserializer=pb.ModelInferResponse.FromString)
        # many at once, so that they overlap on a busy machine too (40 were sometimes each done before the 13th arrived)
        futures = [stub.future(big, timeout=120) for _ in range(160)]
        codes = []
        for future in futures:
            try:
                future.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
    assert grpc.StatusCode.OK in codes
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}


def test_model_file_limits(start_tensorwire: Any, tmp_path: pathlib.Path) -> None:
    import zipfile

    from sklearn.linear_model import LinearRegression

    import tensorwire
    from tensorwire.client import InferenceClient

    rng = np.random.default_rng(2)
    root = tmp_path / "models"
    tensorwire.export(LinearRegression().fit(rng.standard_normal((50, 3)), rng.standard_normal(50)), root / "small" / "1")
    tensorwire.export(LinearRegression().fit(rng.standard_normal((3000, 600)), rng.standard_normal((3000, 300))), root / "huge" / "1")
    compressed = root / "squeezed" / "1" / "model.npz"
    compressed.parent.mkdir(parents=True)
    with zipfile.ZipFile(root / "small" / "1" / "model.npz") as source, zipfile.ZipFile(compressed, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            target.writestr(item.filename, source.read(item))
    server = start_tensorwire(root, "--workers", "1", "--max-model-mb", "1")
    with InferenceClient(server.url) as client:
        assert client.model_ready("small")
        index = {m.name: m for m in client.repository_index().models}
    assert index["huge"].state == "UNAVAILABLE" and "--max-model-mb" in index["huge"].reason
    assert index["squeezed"].state == "UNAVAILABLE" and "compressed" in index["squeezed"].reason
