"""Event ids against a `serve` process: only the canonical UUID text is stored, every other
spelling of it is refused with the canonical one named, and GetEvent finds any spelling."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import grpc
import pytest

from protoevents.v1 import proxy_service_pb2, query_service_pb2, query_service_pb2_grpc
from tests.support.ingest_helpers import make_events
from tests.support.polling import poll
from tests.support.serve_process import ServeProcess, serve
from tests.support.stored import stored_counts

R = proxy_service_pb2
ID = uuid.UUID("0194d5c1-7e2a-7b3c-8d4e-5f60718293a4")
CANONICAL = str(ID)
SPELLINGS = [
    CANONICAL.upper(),
    "{" + CANONICAL + "}",
    ID.urn,
    ID.hex,
]
# Not UUIDs, though uuid.UUID reads them (its int() skips whitespace around the digits).
WHITESPACE = [ID.hex[:31] + "\n", " " + ID.hex[1:], CANONICAL[:35] + "\n"]


def test_one_uuid_in_five_spellings_is_stored_once_under_its_canonical_text(
    database_url: str, tmp_path: Path, processes: list[ServeProcess]
) -> None:
    proxy = serve(processes, tmp_path / "data", database_url)
    batch = make_events(len(SPELLINGS) + 1)  # distinct messages: dedup merges none
    for event, spelling in zip(batch, [*SPELLINGS[:2], CANONICAL, *SPELLINGS[2:]], strict=True):
        event.id = spelling
    result = proxy.stub.RecordBatch(R.RecordBatchRequest(events=batch), timeout=10).result
    assert (result.accepted_count, result.duplicate_count) == (1, 0)
    rejected = {r.event_id: (r.reason, r.detail) for r in result.rejections}
    assert rejected == {
        spelling: (
            R.REJECTION_REASON_INVALID_ID,
            f"id {spelling!r} is not canonical: use {CANONICAL!r} (lower case, hyphenated)",
        )
        for spelling in SPELLINGS
    }
    poll(lambda: CANONICAL in stored_counts(database_url), 30, "the event to be stored")
    assert stored_counts(database_url) == {CANONICAL: 1}

    query = query_service_pb2_grpc.EventQueryServiceStub(proxy.channel)
    for spelling in [CANONICAL, *SPELLINGS]:
        found = query.GetEvent(query_service_pb2.GetEventRequest(id=spelling), timeout=10)
        assert found.event.id == CANONICAL, spelling
        assert found.event.message == batch[2].message, spelling
    assert proxy.stop(signal.SIGTERM) == 0


def test_ids_with_whitespace_are_refused_and_not_looked_up(
    database_url: str, tmp_path: Path, processes: list[ServeProcess]
) -> None:
    for text in WHITESPACE:
        uuid.UUID(text)  # reads as a UUID: ingest accepted these before
    proxy = serve(processes, tmp_path / "data", database_url)
    batch = make_events(len(WHITESPACE) + 1)
    for event, text in zip(batch, WHITESPACE, strict=False):
        event.id = text
    result = proxy.stub.RecordBatch(R.RecordBatchRequest(events=batch), timeout=10).result
    assert result.accepted_count == 1
    assert [(r.event_id, r.reason) for r in result.rejections] == [
        (text, R.REJECTION_REASON_INVALID_ID) for text in WHITESPACE
    ]
    assert all("is not a UUID: expected the canonical" in r.detail for r in result.rejections)
    stored = batch[-1].id
    poll(lambda: stored in stored_counts(database_url), 30, "the good event to be stored")
    assert stored_counts(database_url) == {stored: 1}

    query = query_service_pb2_grpc.EventQueryServiceStub(proxy.channel)
    for text in WHITESPACE:
        with pytest.raises(grpc.RpcError) as refused:
            query.GetEvent(query_service_pb2.GetEventRequest(id=text), timeout=10)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == f"id: {text!r} is not a UUID"
    assert proxy.stop(signal.SIGTERM) == 0
