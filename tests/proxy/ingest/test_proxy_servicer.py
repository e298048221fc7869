"""EventProxyServicer driven by grpcio-testing: status codes, acks in order, ack after persist."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc_testing
import pytest

from protoevents.proxy.dedup import Deduplicator
from protoevents.proxy.ingest import Ingest
from protoevents.proxy.proxy_service import EventProxyServicer
from protoevents.proxy.validation import Limits, Validator
from protoevents.proxy.wal import WriteAheadLog
from protoevents.recorder.registry import Registry
from protoevents.v1 import event_pb2, proxy_service_pb2
from tests.support.aio_servicer import AioBridge, method
from tests.support.ingest_helpers import make_event, make_events

SERVICE = proxy_service_pb2.DESCRIPTOR.services_by_name["EventProxyService"]
RECORD = method(SERVICE, "Record")
RECORD_BATCH = method(SERVICE, "RecordBatch")
R = proxy_service_pb2


@pytest.fixture
def bridge() -> Iterator[AioBridge]:
    bridge = AioBridge()
    yield bridge
    bridge.close()


def open_ingest(bridge: AioBridge, folder: Path, **wal_options: int) -> Ingest:
    async def open_() -> Ingest:
        wal = await WriteAheadLog.open(folder, **wal_options)
        bridge.cleanups.append(wal.close)
        validator = Validator(Registry.builtin(), Limits(max_batch_events=100))
        return Ingest(wal, validator, Deduplicator())

    return bridge.run(open_())


def serve(bridge: AioBridge, ingest: Ingest) -> grpc_testing.Server:
    return bridge.server(SERVICE, EventProxyServicer(ingest, max_inflight_batches=4))


def test_record_batch_answers_accepted_rejected_and_duplicate_counts(
    bridge: AioBridge, tmp_path: Path
) -> None:
    server = serve(bridge, open_ingest(bridge, tmp_path))
    good = make_events(2)
    bad = make_event(type="")
    request = R.RecordBatchRequest(events=[*good, bad, good[0]])
    response, _, code, _ = server.invoke_unary_unary(RECORD_BATCH, (), request, None).termination()
    assert code is grpc.StatusCode.OK
    assert response.result.accepted_count == 2
    assert response.result.duplicate_count == 1
    assert [(r.index, r.reason) for r in response.result.rejections] == [
        (2, R.REJECTION_REASON_MISSING_TYPE)
    ]


def test_the_ack_names_the_events_merged_as_repeats_and_the_id_they_were_merged_into(
    bridge: AioBridge, tmp_path: Path
) -> None:
    server = serve(bridge, open_ingest(bridge, tmp_path))

    def record(*events: event_pb2.Event) -> R.BatchResult:
        request = R.RecordBatchRequest(events=events)
        response, _, code, _ = server.invoke_unary_unary(
            RECORD_BATCH, (), request, None
        ).termination()
        assert code is grpc.StatusCode.OK
        return response.result

    a, b, c = (make_event(message=m) for m in ("a", "b", "c"))
    a2, b2, a3 = (make_event(message=m) for m in ("a", "b", "a"))
    result = record(a, b, a2, make_event(type=""), c, b2, a3)
    assert (result.accepted_count, result.duplicate_count) == (6, 0)
    assert [(m.into_event_id, list(m.indexes)) for m in result.merges] == [
        (a.id, [2, 6]),
        (b.id, [5]),
    ]
    later = record(make_event(message="b"), make_event(message="d"), make_event(message="b"))
    assert [(m.into_event_id, list(m.indexes)) for m in later.merges] == [(b.id, [0, 2])]
    again = record(a2)  # a resent repeat is a duplicate of its id, not merged again
    assert (again.accepted_count, again.duplicate_count, len(again.merges)) == (0, 1, 0)


@pytest.mark.parametrize(
    ("events", "details"),
    [(0, "the batch has no events"), (101, "the batch has 101 events; the limit is 100")],
)
def test_record_batch_refuses_a_malformed_batch_with_invalid_argument(
    bridge: AioBridge, tmp_path: Path, events: int, details: str
) -> None:
    server = serve(bridge, open_ingest(bridge, tmp_path))
    request = R.RecordBatchRequest(events=make_events(events))
    _, _, code, message = server.invoke_unary_unary(RECORD_BATCH, (), request, None).termination()
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, details)


def test_record_stream_acknowledges_every_batch_in_order(bridge: AioBridge, tmp_path: Path) -> None:
    server = serve(bridge, open_ingest(bridge, tmp_path))
    rpc = server.invoke_stream_stream(RECORD, (), None)
    for sequence in range(1, 7):
        rpc.send_request(R.RecordRequest(sequence=sequence, events=make_events(3)))
    acks = [rpc.take_response() for _ in range(6)]
    rpc.requests_closed()
    _, code, _ = rpc.termination()
    assert code is grpc.StatusCode.OK
    assert [(a.sequence, a.result.accepted_count) for a in acks] == [(n, 3) for n in range(1, 7)]


def test_record_stream_names_the_batch_the_full_log_refused(
    bridge: AioBridge, tmp_path: Path
) -> None:
    server = serve(bridge, open_ingest(bridge, tmp_path, segment_bytes=4096, max_bytes=8192))
    rpc = server.invoke_stream_stream(RECORD, (), None)
    rpc.send_request(R.RecordRequest(sequence=1, events=make_events(2)))
    assert rpc.take_response().result.accepted_count == 2
    rpc.send_request(R.RecordRequest(sequence=2, events=make_events(100)))
    _, code, details = rpc.termination()
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.startswith("batch 2: write-ahead log is full")


class _HeldIngest:
    """An ingest whose batches are persisted only when the test says so."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[asyncio.Future[int]] = []

    def submit(
        self, request: R.RecordRequest, claims: object = None
    ) -> tuple[R.BatchResult, asyncio.Future[int]]:
        persisted: asyncio.Future[int] = self.loop.create_future()
        self.pending.append(persisted)
        return R.BatchResult(accepted_count=len(request.events)), persisted


def test_record_stream_acks_only_persisted_batches_and_never_out_of_order(
    bridge: AioBridge,
) -> None:
    ingest = _HeldIngest(bridge.loop)
    server = bridge.server(SERVICE, EventProxyServicer(ingest, max_inflight_batches=4))  # type: ignore[arg-type]
    rpc = server.invoke_stream_stream(RECORD, (), None)
    for sequence in (1, 2):
        rpc.send_request(R.RecordRequest(sequence=sequence, events=make_events(1)))

    async def decided(count: int) -> None:
        while len(ingest.pending) < count:
            await asyncio.sleep(0.001)

    bridge.run(decided(2))
    # The second batch is persisted first: nothing may be acknowledged before the first is.
    bridge.loop.call_soon_threadsafe(ingest.pending[1].set_result, 0)
    pending_ack = bridge.submit(asyncio.to_thread(rpc.take_response))
    with pytest.raises(TimeoutError):
        pending_ack.result(timeout=0.3)
    bridge.loop.call_soon_threadsafe(ingest.pending[0].set_result, 0)
    first = pending_ack.result(timeout=10)
    second = rpc.take_response()
    assert (first.sequence, second.sequence) == (1, 2)
    rpc.requests_closed()
    assert rpc.termination()[1] is grpc.StatusCode.OK
