"""Reflection's comments come from the descriptor set `protoevents gen` ships in the package:
without one it still answers, without comments; a documented file that defines something else
than the served one is not sent in its place."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from protoevents.proxy.reflection import _DocumentedReflection, documented_files
from protoevents.v1 import query_service_pb2
from tests.support.grpcurl import grpcurl
from tests.support.paths import copy_generated
from tests.support.serve_process import ServeProcess

QUERY_FILE = "protoevents/v1/query_service.proto"


def test_without_a_descriptor_set_reflection_answers_without_comments_logging_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: list[ServeProcess]
) -> None:
    generated = tmp_path / "generated"  # as another generator would leave it
    copy_generated(generated)
    (generated / "protoevents" / "descriptors.binpb").unlink()
    monkeypatch.setenv("PYTHONPATH", str(generated))
    proxy = ServeProcess(tmp_path, follow_log=True)
    processes.append(proxy)

    for _ in range(2):
        described = grpcurl(proxy.address, "describe", "protoevents.v1.EventFilter")
        assert "message EventFilter {" in described
        assert "//" not in described
    assert proxy.stop(signal.SIGTERM) == 0
    warnings = [line for line in proxy.log().splitlines() if "reflection:" in line]
    assert len(warnings) == 1, warnings
    assert "no readable descriptors.binpb in protoevents" in warnings[0]
    assert "describe shows no comments" in warnings[0]


def test_a_package_without_a_descriptor_set_documents_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "undocumented").mkdir()
    (tmp_path / "undocumented" / "__init__.py").touch()
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.WARNING, "protoevents.proxy.reflection"):
        assert documented_files("undocumented") == {}
        assert documented_files("undocumented") == {}
    assert len(caplog.records) == 1


def served(name: str) -> bytes:
    """The file as reflection rebuilds it from the pool (no comments)."""
    file = descriptor_pb2.FileDescriptorProto()
    descriptor_pool.Default().FindFileByName(name).CopyToProto(file)
    return file.SerializeToString()


def test_a_documented_file_is_sent_only_when_it_defines_what_the_pool_has() -> None:
    assert query_service_pb2.DESCRIPTOR.name == QUERY_FILE
    documented = dict(documented_files())
    same = _DocumentedReflection([], descriptor_pool.Default(), documented)
    assert same._documented_form(served(QUERY_FILE)) == documented[QUERY_FILE]

    other = descriptor_pb2.FileDescriptorProto.FromString(documented[QUERY_FILE])
    other.message_type[0].field.add(name="added_later", number=999, type=9)  # string
    documented[QUERY_FILE] = other.SerializeToString()
    differs = _DocumentedReflection([], descriptor_pool.Default(), documented)
    assert differs._documented_form(served(QUERY_FILE)) == served(QUERY_FILE)
    unknown = descriptor_pb2.FileDescriptorProto(name="unknown.proto").SerializeToString()
    assert differs._documented_form(unknown) == unknown
