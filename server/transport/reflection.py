"""Server reflection under both names clients ask for, grpc.reflection.v1 and v1alpha, from one descriptor pool.

grpcio-reflection implements only v1alpha, but newer grpcurl, grpcui, Postman and Evans
ask for v1 first. v1's proto is v1alpha's with another package (the same messages and
field numbers, so the same bytes on the wire), hence one servicer answers both: v1's
method is registered beside v1alpha's, parsing and writing with v1alpha's message
classes. v1's file descriptor is v1alpha's with the package renamed, built here from
grpcio-reflection's own rather than generated from a copy of the proto (nothing to
regenerate or keep in step), and added to the pool, so reflection describes the v1
service it lists. Should grpcio-reflection ship v1 one day, its module replaces this one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection as v1alpha_reflection
from grpc_reflection.v1alpha import reflection_pb2

V1ALPHA_PACKAGE = reflection_pb2.DESCRIPTOR.package
V1_PACKAGE = "grpc.reflection.v1"
V1_FILE = "grpc/reflection/v1/reflection.proto"  # where grpc/grpc-proto keeps it
SERVICE = "ServerReflection"
METHOD = "ServerReflectionInfo"
V1ALPHA_SERVICE_NAME = f"{V1ALPHA_PACKAGE}.{SERVICE}"
V1_SERVICE_NAME = f"{V1_PACKAGE}.{SERVICE}"


def _v1_type(name: str) -> str:
    """A fully-qualified v1alpha type reference (`.grpc.reflection.v1alpha.X`) as v1's."""
    prefix = f".{V1ALPHA_PACKAGE}."
    return f".{V1_PACKAGE}.{name.removeprefix(prefix)}" if name.startswith(prefix) else name


def _rename_fields(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        if field.HasField("type_name"):  # scalar fields have none; one set even to "" breaks the file
            field.type_name = _v1_type(field.type_name)
    for nested in message.nested_type:
        _rename_fields(nested)


def v1_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto: v1alpha's file under v1's package and options (v1alpha's marks it deprecated)."""
    file = descriptor_pb2.FileDescriptorProto.FromString(reflection_pb2.DESCRIPTOR.serialized_pb)
    file.name = V1_FILE
    file.package = V1_PACKAGE
    file.options.Clear()
    file.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    file.options.java_multiple_files = True
    file.options.java_package = "io.grpc.reflection.v1"
    file.options.java_outer_classname = "ServerReflectionProto"
    for message in file.message_type:
        _rename_fields(message)
    for service in file.service:
        for method in service.method:
            method.input_type = _v1_type(method.input_type)
            method.output_type = _v1_type(method.output_type)
    return file


def add_file_once(pool: descriptor_pool.DescriptorPool, name: str, serialized: bytes) -> None:
    """Add a serialised file descriptor to the pool unless an earlier server of this process did."""
    try:
        pool.FindFileByName(name)
    except KeyError:
        pool.AddSerializedFile(serialized)


def serve_reflection(server: Any, service_names: Iterable[str], pool: descriptor_pool.DescriptorPool) -> None:
    """Serve reflection v1 and v1alpha on a grpc.Server or grpc.aio.Server (before it starts): both list
    service_names (whose files pool must hold) and the two reflection services, and describe them from pool."""
    add_file_once(pool, reflection_pb2.DESCRIPTOR.name, reflection_pb2.DESCRIPTOR.serialized_pb)
    add_file_once(pool, V1_FILE, v1_file().SerializeToString())
    names = (*service_names, V1ALPHA_SERVICE_NAME, V1_SERVICE_NAME)
    servicer_class = v1alpha_reflection.aio.ReflectionServicer if isinstance(server, grpc.aio.Server) else v1alpha_reflection.ReflectionServicer
    servicer = servicer_class(names, pool=pool)
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo, reflection_pb2.ServerReflectionRequest.FromString, reflection_pb2.ServerReflectionResponse.SerializeToString
    )
    server.add_generic_rpc_handlers(tuple(grpc.method_handlers_generic_handler(name, {METHOD: method}) for name in (V1ALPHA_SERVICE_NAME, V1_SERVICE_NAME)))
