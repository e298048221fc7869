"""Server reflection, v1 and v1alpha, for grpcurl and other tools that have no .proto files."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import DecodeError
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

log = logging.getLogger(__name__)

# The descriptor set, with comments, that `protoevents gen` writes in a generated package.
DESCRIPTOR_SET = "descriptors.binpb"

V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """Add grpc/reflection/v1/reflection.proto to `pool`: the v1alpha file under the v1
    package (the two are the same messages on the wire), so that v1 can be described."""
    try:
        pool.FindServiceByName(V1_SERVICE_NAME)
        return
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    v1alpha.DESCRIPTOR.CopyToProto(file)
    old, new = f".{file.package}.", f".{V1_PACKAGE}."
    file.name = "grpc/reflection/v1/reflection.proto"
    file.package = V1_PACKAGE
    for message in file.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name.removeprefix(old)
    for service in file.service:
        for method in service.method:
            method.input_type = new + method.input_type.removeprefix(old)
            method.output_type = new + method.output_type.removeprefix(old)
    file.options.Clear()
    pool.Add(file)


@functools.cache
def documented_files(package: str = "protoevents") -> Mapping[str, bytes]:
    """Serialized FileDescriptorProtos with their comments (the generated modules leave them
    out), by file name: the descriptor set shipped in `package`. Empty, logged once, when
    there is none (a package generated some other way)."""
    try:
        blob = resources.files(package).joinpath(DESCRIPTOR_SET).read_bytes()
        files = descriptor_pb2.FileDescriptorSet.FromString(blob).file
    except (OSError, ImportError, DecodeError) as exc:
        log.warning(
            "reflection: no readable %s in %s (%s); describe shows no comments",
            DESCRIPTOR_SET,
            package,
            exc,
        )
        return {}
    return {f.name: f.SerializeToString() for f in files}


def _definitions(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """`file` without what protoc adds beyond the pool's form: comments and JSON names."""
    bare = descriptor_pb2.FileDescriptorProto()
    bare.CopyFrom(file)
    bare.ClearField("source_code_info")
    messages = list(bare.message_type)
    for field in bare.extension:
        field.ClearField("json_name")
    while messages:
        message = messages.pop()
        for field in (*message.field, *message.extension):
            field.ClearField("json_name")
        messages.extend(message.nested_type)
    return bare


class _DocumentedReflection(reflection.aio.ReflectionServicer):  # type: ignore[misc]
    """grpcio-reflection's servicer, answering with the documented form of the files it
    has one of (it rebuilds files from the pool, which holds no comments), when that form
    defines what the pool's does (not, say, another protobuf version's descriptor.proto)."""

    def __init__(self, names: list[str], pool: Any, documented: Mapping[str, bytes]) -> None:
        super().__init__(names, pool=pool)
        self._documented = documented
        self._matches: dict[str, bool] = {}

    def _documented_form(self, blob: bytes) -> bytes:
        served = descriptor_pb2.FileDescriptorProto.FromString(blob)
        documented = self._documented.get(served.name)
        if documented is None:
            return blob
        if served.name not in self._matches:
            file = descriptor_pb2.FileDescriptorProto.FromString(documented)
            self._matches[served.name] = _definitions(file) == _definitions(served)
            if not self._matches[served.name]:
                log.debug("reflection: %s differs from its documented form", served.name)
        return documented if self._matches[served.name] else blob

    def _with_comments(self, response: Any) -> Any:
        files = response.file_descriptor_response.file_descriptor_proto
        for index, blob in enumerate(files):
            files[index] = self._documented_form(blob)
        return response

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        return self._with_comments(super()._file_by_filename(request, filename))

    def _file_containing_symbol(self, request: Any, name: str) -> Any:
        return self._with_comments(super()._file_containing_symbol(request, name))

    def _file_containing_extension(self, request: Any, containing: str, number: int) -> Any:
        return self._with_comments(super()._file_containing_extension(request, containing, number))


def enable(
    server: grpc.aio.Server,
    service_names: Iterable[str],
    documented: Mapping[str, bytes] | None = None,
) -> list[str]:
    """Serve reflection v1alpha and v1 on `server` for the given services (and reflection
    itself), with the comments of the `documented` files; returns every name listed."""
    pool = descriptor_pool.Default()
    _add_v1_descriptor(pool)
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME]
    servicer = _DocumentedReflection(names, pool, documented or {})
    reflection_handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha.ServerReflectionRequest.FromString,
        response_serializer=v1alpha.ServerReflectionResponse.SerializeToString,
    )
    for service in (reflection.SERVICE_NAME, V1_SERVICE_NAME):
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    service, {"ServerReflectionInfo": reflection_handler}
                ),
            )
        )
    return names
