"""Token-file and bearer-header rules, and the metrics endpoint's address and TLS, in units and against real servers."""

from __future__ import annotations

import http.client
import importlib.util
import logging
import os
import pathlib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from tensorwire.protos import inference_pb2 as pb
from tensorwire.server.config import ServerConfig
from tensorwire.server.process.metrics import ServerCollector, serve_metrics
from tensorwire.server.transport.security import refusal_of
from tensorwire.server.transport.tokens import TOKENS_ENV, TokenFileError, TokenStore, check_security_files, parse_env_tokens, parse_tokens


def _sibling(name: str) -> Any:
    """A module beside this one: pytest's importlib mode puts tests/ on no import path."""
    loaded = sys.modules.get(f"tests.{name}")
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(f"_hardening_{name}", pathlib.Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


conftest = _sibling("conftest")
security_tests = _sibling("test_security")

METRICS_HOST = "127.0.0.2"  # a loopback address other than the gRPC --host, so the test tells the two apart
INFER = "/inference.GRPCInferenceService/ModelInfer"
LOAD = "/inference.GRPCInferenceService/RepositoryModelLoad"


# --- token files and the environment variable ---------------------------------------------


def test_a_hash_inside_a_token_is_part_of_it() -> None:
    assert parse_tokens("admin abc#def\n", "tokens") == {"abc#def": "admin"}


def test_a_comment_is_a_whole_line_and_may_be_indented() -> None:
    assert parse_tokens("# scope token\n   # indented comment\ninfer t1\n\n", "tokens") == {"t1": "infer"}


def test_a_trailing_comment_is_refused_not_silently_dropped() -> None:
    with pytest.raises(TokenFileError) as info:
        parse_tokens("infer t1\ninfer s3cret # the dashboard's token\n", "tokens")
    message = str(info.value)
    assert "tokens line 2" in message and "start of a line" in message and "s3cret" not in message


def test_a_semicolon_in_a_file_is_part_of_the_token() -> None:
    assert parse_tokens("infer a;b\n", "tokens") == {"a;b": "infer"}
    with pytest.raises(TokenFileError, match="line 1"):
        parse_tokens("infer a;admin b\n", "tokens")  # one line, three words: not two entries


def test_the_environment_variable_separates_entries_with_semicolons(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_env_tokens("infer a;admin b#c\n# comment;infer d") == {"a": "infer", "b#c": "admin", "d": "infer"}
    monkeypatch.setenv(TOKENS_ENV, "infer a; admin b")
    assert TokenStore.load(None).tokens == {"a": "infer", "b": "admin"}
    check_security_files(None, "")
    monkeypatch.setenv(TOKENS_ENV, "infer a;root b")
    with pytest.raises(TokenFileError, match=f"{TOKENS_ENV} line 2"):
        check_security_files(None, "")


def test_the_token_file_is_read_with_the_file_rules(tmp_path: pathlib.Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("  # comment\nadmin a;b#c\n")
    check_security_files(None, str(tokens))
    assert TokenStore.load(str(tokens)).tokens == {"a;b#c": "admin"}


# --- the authorization metadata ---------------------------------------------------------


STORE = TokenStore(None, {"infer-tok": "infer", "admin-tok": "admin"})


def refusal(method: str, *values: str) -> tuple[grpc.StatusCode, str] | None:
    details = SimpleNamespace(method=method, invocation_metadata=[("user-agent", "test"), *(("authorization", v) for v in values)])
    return refusal_of(STORE, details)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["Bearer infer-tok", "bearer infer-tok", "BEARER infer-tok", "bEaReR   infer-tok  "])
def test_the_bearer_scheme_matches_in_any_case(value: str) -> None:
    assert refusal(INFER, value) is None


@pytest.mark.parametrize("values", [("Bearer infer-tok", "Bearer admin-tok"), ("Bearer admin-tok", "Bearer admin-tok"), ("Basic dXNlcg==", "Bearer admin-tok")])
def test_more_than_one_authorization_value_is_refused(values: tuple[str, ...]) -> None:
    refused = refusal(LOAD, *values)
    assert refused is not None
    code, message = refused
    assert code == grpc.StatusCode.UNAUTHENTICATED and "2 'authorization' metadata values" in message
    assert "admin-tok" not in message and "infer-tok" not in message


@pytest.mark.parametrize("values", [(), ("Basic dXNlcg==",), ("Bearer",), ("Bearer ",), ("Bearerinfer-tok",), ("infer-tok",)])
def test_a_call_without_a_bearer_token_is_refused(values: tuple[str, ...]) -> None:
    assert refusal(INFER, *values) == (grpc.StatusCode.UNAUTHENTICATED, "missing 'authorization: Bearer <token>' metadata")


def test_unknown_tokens_and_scopes_are_still_refused() -> None:
    assert refusal(INFER, "bearer admin-to") == (grpc.StatusCode.UNAUTHENTICATED, "unknown token")
    refused = refusal(LOAD, "bearer infer-tok")
    assert refused is not None and refused[0] == grpc.StatusCode.PERMISSION_DENIED
    assert refusal(LOAD, "bearer admin-tok") is None


def test_probes_stay_open_whatever_the_authorization_metadata() -> None:
    assert refusal("/grpc.health.v1.Health/Check", "Bearer a", "Bearer b") is None
    assert refusal("/inference.GRPCInferenceService/ServerLive", "Basic x") is None


# --- bearer rules against a real server, on each engine ---------------------------------------


HASH_TOKEN = "admin-#-token-3c9e"
SEMICOLON_TOKEN = "infer;token;41d0"


@pytest.fixture(scope="module", params=("aio", "sync"))
def authed(request: pytest.FixtureRequest, model_repository: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A one-worker server whose token file holds a token with '#' and one with ';', on each gRPC engine."""
    folder = tmp_path_factory.mktemp(f"auth-{request.param}")
    tokens = folder / "tokens"
    tokens.write_text(f"  # scope token\nadmin {HASH_TOKEN}\ninfer {SEMICOLON_TOKEN}\n")
    server = conftest.start_server(model_repository, folder / "server.log", "--workers", "1", "--engine", request.param, "--auth-tokens", str(tokens))
    yield server
    conftest.stop_server(server)


def infer(channel: grpc.Channel, *authorization: str) -> pb.ModelInferResponse:
    stub = channel.unary_unary(INFER, request_serializer=pb.ModelInferRequest.SerializeToString, response_deserializer=pb.ModelInferResponse.FromString)
    return stub(security_tests.infer_request(), timeout=10, metadata=[("authorization", value) for value in authorization])


def test_real_server_applies_the_token_and_header_rules(authed: Any) -> None:
    with grpc.insecure_channel(authed.url) as channel:
        assert infer(channel, f"Bearer {HASH_TOKEN}").outputs
        assert infer(channel, f"bearer {SEMICOLON_TOKEN}").outputs
        assert infer(channel, f"BEARER {HASH_TOKEN}").outputs
        for sent in [(f"Bearer {HASH_TOKEN}", f"Bearer {SEMICOLON_TOKEN}"), ("Bearer nope", f"Bearer {HASH_TOKEN}"), (f"Bearer {HASH_TOKEN}", f"Bearer {HASH_TOKEN}")]:
            with pytest.raises(grpc.RpcError) as info:
                infer(channel, *sent)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, sent
            assert "2 'authorization' metadata values" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            infer(channel, "Bearer admin-")  # what the old rule cut the '#' token down to
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and info.value.details() == "unknown token"
    assert HASH_TOKEN not in authed.log() and SEMICOLON_TOKEN not in authed.log()


# --- the metrics endpoint ---------------------------------------------------------------------


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def scrape(host: str, port: int, context: ssl.SSLContext | None = None) -> str:
    """GET /metrics, over TLS when given a context; the certificate is checked against the name it carries, localhost."""
    connection = http.client.HTTPConnection(host, port, timeout=10)
    if context is not None:
        connection.sock = context.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname="localhost")
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        connection.close()


def client_context(certs: dict[str, pathlib.Path], *, client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs["ca.crt"]))
    if client_cert:
        context.load_cert_chain(str(certs["client.crt"]), str(certs["client.key"]))
    return context


def assert_refused(host: str, port: int, context: ssl.SSLContext | None = None) -> None:
    with pytest.raises((OSError, http.client.HTTPException)):
        scrape(host, port, context)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    return dict(security_tests.make_ca_and_certs(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def tls_single(model_repository: pathlib.Path, certs: dict[str, pathlib.Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """--workers 1 (this process serves its own metrics), TLS on gRPC and on metrics, metrics on their own host, by flags."""
    port = free_port(METRICS_HOST)
    server = conftest.start_server(
        model_repository, tmp_path_factory.mktemp("single") / "server.log", "--workers", "1", "--metrics-port", str(port), "--metrics-host", METRICS_HOST,
        "--grpc-use-ssl", "--grpc-server-cert", str(certs["server.crt"]), "--grpc-server-key", str(certs["server.key"]), "--metrics-use-ssl",
        ready=lambda p: security_tests.tls_ready(p, certs),
    )
    server.metrics_port = port
    yield server
    conftest.stop_server(server)


@pytest.fixture(scope="module")
def mtls_supervised(model_repository: pathlib.Path, certs: dict[str, pathlib.Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """--workers 2 (the supervisor serves every worker's metrics), mutual TLS, metrics host and TLS from the environment."""
    port = free_port(METRICS_HOST)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TENSORWIRE_METRICS_HOST", METRICS_HOST)
        patch.setenv("TENSORWIRE_METRICS_USE_SSL", "1")
        server = conftest.start_server(
            model_repository, tmp_path_factory.mktemp("supervised") / "server.log", "--workers", "2", "--metrics-port", str(port),
            "--grpc-use-ssl-mutual", "--grpc-server-cert", str(certs["server.crt"]), "--grpc-server-key", str(certs["server.key"]), "--grpc-root-cert", str(certs["ca.crt"]),
            ready=lambda p: security_tests.tls_ready(p, certs, client_cert=True),
        )
    server.metrics_port = port
    yield server
    conftest.stop_server(server)


def test_single_process_serves_metrics_over_https_on_the_metrics_host(tls_single: Any, certs: dict[str, pathlib.Path]) -> None:
    text = scrape(METRICS_HOST, tls_single.metrics_port, client_context(certs))
    assert 'tensorwire_models_loaded{worker="0"}' in text
    assert_refused(METRICS_HOST, tls_single.metrics_port)  # plain HTTP
    assert_refused("127.0.0.1", tls_single.metrics_port, client_context(certs))  # the gRPC --host
    assert f"metrics on https://{METRICS_HOST}:{tls_single.metrics_port}/metrics" in tls_single.log()


def test_a_client_that_never_handshakes_does_not_stall_the_metrics(tls_single: Any, certs: dict[str, pathlib.Path]) -> None:
    with socket.create_connection((METRICS_HOST, tls_single.metrics_port)) as silent:
        time.sleep(0.2)
        started = time.monotonic()
        assert "tensorwire_models_loaded" in scrape(METRICS_HOST, tls_single.metrics_port, client_context(certs))
        assert time.monotonic() - started < 5
        silent.settimeout(30)
        assert silent.recv(1) == b""  # the server gives up on it rather than holding a thread for ever


def test_supervisor_serves_metrics_over_mutual_tls_on_the_metrics_host(mtls_supervised: Any, certs: dict[str, pathlib.Path]) -> None:
    text = scrape(METRICS_HOST, mtls_supervised.metrics_port, client_context(certs, client_cert=True))
    assert 'tensorwire_models_loaded{worker="0"}' in text and 'tensorwire_models_loaded{worker="1"}' in text
    assert "tensorwire_worker_restarts_total" in text
    assert_refused(METRICS_HOST, mtls_supervised.metrics_port, client_context(certs))  # no client certificate
    assert_refused(METRICS_HOST, mtls_supervised.metrics_port)  # plain HTTP
    assert_refused("127.0.0.1", mtls_supervised.metrics_port, client_context(certs, client_cert=True))


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_serve_refuses_metrics_tls_without_a_certificate(how: str, model_repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    flags = ["--metrics-use-ssl"] if how == "flag" else []
    env = {**os.environ, "TENSORWIRE_METRICS_USE_SSL": "1"} if how == "environment" else dict(os.environ)
    command = [sys.executable, "-m", "tensorwire", "serve", str(model_repository), "--host", "127.0.0.1", "--grpc-port", "0", "--workers", "1", *flags]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert "--metrics-use-ssl" in result.stderr and "--grpc-server-cert" in result.stderr and "--grpc-server-key" in result.stderr


def test_metrics_tls_needs_the_grpc_certificate() -> None:
    with pytest.raises(ValueError, match="--metrics-use-ssl"):
        ServerConfig(model_repository=".", metrics_tls=True)
    assert ServerConfig(model_repository=".", metrics_tls=True, tls_cert="c", tls_key="k").metrics_tls


def test_plain_metrics_beside_tls_grpc_warn_unless_on_loopback(certs: dict[str, pathlib.Path], caplog: pytest.LogCaptureFixture) -> None:
    tls = {"tls_cert": str(certs["server.crt"]), "tls_key": str(certs["server.key"])}

    def serve_and_stop(**fields: Any) -> None:
        server = serve_metrics(ServerConfig(model_repository=".", host="127.0.0.1", metrics_port=0, **tls, **fields), ServerCollector(lambda: []))
        server.shutdown()
        server.server_close()

    with caplog.at_level(logging.WARNING, logger="tensorwire.server.process.metrics"):
        serve_and_stop()
        serve_and_stop(metrics_host="0.0.0.0", metrics_tls=True)
        assert not caplog.records
        serve_and_stop(metrics_host="0.0.0.0")
    assert "--metrics-use-ssl" in caplog.text
