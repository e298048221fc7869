"""Server reflection, v1 and v1alpha, for grpcurl and other tools that have no .proto files."""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha
from grpc_tools import protoc

from server.codegen import builtin_proto_root, wellknown_root

log = logging.getLogger(__name__)

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
def documented_files(root: Path | None = None) -> Mapping[str, bytes]:
    """Serialized FileDescriptorProtos of the built-in .proto files and their imports, with
    their comments (the generated modules leave comments out), by file name. Compiled once
    with grpcio-tools; empty, and logged, when that fails."""
    root = root or builtin_proto_root()
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.proto"))
    with tempfile.TemporaryDirectory(prefix="protoevents-reflection-") as tmp:
        out = Path(tmp) / "descriptors.binpb"
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{root}",
                f"-I{wellknown_root()}",
                "--include_source_info",
                "--include_imports",
                f"--descriptor_set_out={out}",
                *files,
            ]
        )
        if status != 0 or not out.exists():
            log.warning("reflection: cannot compile %s; describe shows no comments", root)
            return {}
        descriptors = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {f.name: f.SerializeToString() for f in descriptors.file}


class _DocumentedReflection(reflection.aio.ReflectionServicer):  # type: ignore[misc]
    """grpcio-reflection's servicer, answering with the documented form of the files it
    has one of (it rebuilds files from the pool, which holds no comments)."""

    def __init__(self, names: list[str], pool: Any, documented: Mapping[str, bytes]) -> None:
        super().__init__(names, pool=pool)
        self._documented = documented

    def _with_comments(self, response: Any) -> Any:
        files = response.file_descriptor_response.file_descriptor_proto
        for index, blob in enumerate(files):
            name = descriptor_pb2.FileDescriptorProto.FromString(blob).name
            if name in self._documented:
                files[index] = self._documented[name]
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
