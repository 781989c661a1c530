"""The generated protocol module: fresh, wire-compatible with Triton's, and importable beside it."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_generated_module_is_not_stale() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_protos.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_our_messages_live_in_a_private_pool() -> None:
    from google.protobuf import descriptor_pool

    from tensorwire.protos import inference_pb2 as pb

    assert pb.ModelInferRequest.DESCRIPTOR.file.pool is not descriptor_pool.Default()


def test_importable_beside_a_default_pool_registration_of_the_same_names() -> None:
    """What MLServer does: register inference.* messages in the default pool, under another file name."""
    result = run_python(
        """
        from google.protobuf import descriptor_pb2, descriptor_pool
        from tensorwire.protos import inference_pb2 as ours
        proto = descriptor_pb2.FileDescriptorProto()
        ours.DESCRIPTOR.CopyToProto(proto)
        proto.name = "dataplane.proto"
        descriptor_pool.Default().Add(proto)
        import tensorwire.client
        print(ours.ModelInferRequest(model_name="m").model_name)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "m"


@pytest.mark.parametrize("first", ["tritonclient.grpc", "tensorwire.client"])
def test_importable_beside_tritonclient_in_either_order(first: str) -> None:
    pytest.importorskip("tritonclient.grpc")
    second = "tensorwire.client" if first == "tritonclient.grpc" else "tritonclient.grpc"
    result = run_python(
        f"""
        import {first}
        import {second}
        from tritonclient.grpc import service_pb2
        from tensorwire.protos import inference_pb2
        theirs = service_pb2.ModelInferRequest(model_name="m", raw_input_contents=[b"x"]).SerializeToString()
        print(inference_pb2.ModelInferRequest.FromString(theirs).model_name)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "m"


def test_field_numbers_match_tritons() -> None:
    """Every field we declare has the same number and type as in tritonclient's own descriptors."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from tensorwire.protos import inference_pb2 as pb

    theirs = {**service_pb2.DESCRIPTOR.message_types_by_name, **model_config_pb2.DESCRIPTOR.message_types_by_name}

    def compare(ours, their) -> None:  # type: ignore[no-untyped-def]
        for field in ours.fields:
            other = their.fields_by_name[field.name]
            assert (field.number, field.type) == (other.number, other.type), f"{ours.full_name}.{field.name}"
        for nested in ours.nested_types:
            compare(nested, their.nested_types_by_name[nested.name])

    for name, descriptor in pb.DESCRIPTOR.message_types_by_name.items():
        compare(descriptor, theirs[name])
    their_service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        other = their_service.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (other.input_type.full_name, other.output_type.full_name)
