"""The recorder against a proxy that refuses, quarantines, or ends idle streams: nothing
recorded is ever discarded, and what the proxy refuses for good is set aside."""

from __future__ import annotations

import functools
import logging
import weakref
from collections import deque
from pathlib import Path
from typing import Any

import grpc
import pytest

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.recorder import EventTooLargeError, Recorder
from protoevents.recorder.deadletter import DeadLetter, dead_letter_dir
from protoevents.recorder.delivery import Delivery, DeliveryOptions, StreamBrokenError, _Batch
from protoevents.recorder.setaside import read_batches
from protoevents.recorder.spool import Spool
from protoevents.recorder.stats import Counters
from protoevents.recorder.statuses import SUSPECT_ATTEMPTS
from protoevents.v1 import event_pb2, proxy_service_pb2
from tests.support.fake_proxy import FakeProxy

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED
LOST = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST
LOST_NAME = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST"


@pytest.fixture
def make_recorder(make_recorder: type[Recorder]) -> type[Recorder]:
    """The suite's recorders, reconnecting after at most 50 ms."""
    return functools.partial(make_recorder, backoff_max=0.05)  # type: ignore[return-value]


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.ABORTED,
    ],
)
def test_a_batch_refused_with_a_passing_status_is_sent_again_until_stored(
    fake_proxy: FakeProxy, make_recorder: type[Recorder], code: grpc.StatusCode
) -> None:
    fake_proxy.abort_code = code
    fake_proxy.abort_limit = SUSPECT_ATTEMPTS  # the first try and 7 alone: one short of it
    recorder = make_recorder(fake_proxy.address, batch_size=10)
    ids = [recorder.record(ELECTED, str(i)) for i in range(30)]
    assert recorder.drain(20)
    assert fake_proxy.aborted == SUSPECT_ATTEMPTS
    assert fake_proxy.stored_ids() == ids
    stats = recorder.stats()
    assert (stats.dropped, stats.set_aside) == ({}, {})
    assert stats.acknowledged + stats.replayed == 30


def test_a_batch_the_proxy_fails_on_alone_again_and_again_is_set_aside(
    fake_proxy: FakeProxy, make_recorder: type[Recorder]
) -> None:
    fake_proxy.abort_code = grpc.StatusCode.INTERNAL
    recorder = make_recorder(fake_proxy.address, batch_size=10)
    ids = [recorder.record(ELECTED, str(i)) for i in range(10)]
    assert recorder.drain(30)
    # The first try, then SUSPECT_ATTEMPTS tries alone.
    assert fake_proxy.aborted == 1 + SUSPECT_ATTEMPTS
    stats = recorder.stats()
    assert (stats.set_aside, stats.dropped) == ({"batch:INTERNAL": 10}, {})
    (batch,) = read_batches(recorder.dead_letter_path)
    assert [e.id for e in batch.events] == ids
    assert batch.reason.startswith("INTERNAL: refused batch ")


def test_a_message_over_the_proxy_limit_is_isolated_and_set_aside(
    fake_proxy: FakeProxy, make_recorder: type[Recorder]
) -> None:
    fake_proxy.abort_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    fake_proxy.abort_details = "Received message larger than max (4194400 vs. 4194304)"
    recorder = make_recorder(fake_proxy.address, batch_size=10)
    for i in range(10):
        recorder.record(ELECTED, str(i))
    assert recorder.drain(10)
    assert fake_proxy.aborted == 2
    assert recorder.stats().set_aside == {"batch:RESOURCE_EXHAUSTED": 10}


def test_events_the_proxy_keeps_in_quarantine_are_delivered_not_resent(
    fake_proxy: FakeProxy, make_recorder: type[Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    fake_proxy.quarantine_types = {LOST_NAME}
    recorder = make_recorder(fake_proxy.address, batch_size=5)
    kept = [recorder.record(LOST, str(i)) for i in range(10)]
    stored = [recorder.record(ELECTED, str(i)) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="protoevents.recorder"):
        assert recorder.drain(10)
    assert list(fake_proxy.quarantined) == kept
    assert fake_proxy.stored_ids() == stored
    assert fake_proxy.arrivals == 13  # none sent twice
    stats = recorder.stats()
    assert (stats.quarantined, stats.acknowledged, stats.rejected) == (10, 13, {})
    assert (stats.set_aside, stats.dropped) == ({}, {})
    notes = [r.getMessage() for r in caplog.records if "quarantine" in r.getMessage()]
    assert len(notes) == 1, notes  # logged once per type, not once per batch
    assert f"does not know event type {LOST_NAME} yet" in notes[0]
    assert not recorder.dead_letter_path.exists()


@pytest.mark.parametrize("end", [grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE])
def test_a_stream_the_proxy_ends_while_idle_is_reopened_for_the_next_batch_quietly(
    fake_proxy: FakeProxy,
    make_recorder: type[Recorder],
    caplog: pytest.LogCaptureFixture,
    end: grpc.StatusCode,
) -> None:
    fake_proxy.end_streams = end  # every stream ends after its first acknowledgement
    recorder = make_recorder(fake_proxy.address, backoff_max=30, flush_interval=3600)
    ids = []
    with caplog.at_level(logging.DEBUG, logger="protoevents.recorder"):
        for n in range(5):
            ids.append(recorder.record(ELECTED, str(n)))
            assert recorder.flush(5)  # a backoff of up to 30 s would miss this
            assert fake_proxy.streams == n + 1  # opened for the batch, not before or after
    assert fake_proxy.stored_ids() == ids
    stats = recorder.stats()
    assert (stats.acknowledged, stats.spooled, stats.dropped) == (5, 0, {})
    # The recorder's own log (grpc's asyncio may log about loops of earlier tests' channels).
    ours = [r for r in caplog.records if r.name.startswith("protoevents.recorder")]
    assert [r for r in ours if r.levelno >= logging.WARNING] == []
    assert not list(recorder.spool_path.glob("*.spool"))


def test_no_stream_is_opened_before_there_is_something_to_send(
    fake_proxy: FakeProxy, make_recorder: type[Recorder]
) -> None:
    recorder = make_recorder(fake_proxy.address, flush_interval=0.01)
    assert recorder.drain(5)
    event_id = recorder.record(ELECTED, "first")
    assert recorder.flush(5)
    assert fake_proxy.streams == 1
    assert fake_proxy.stored_ids() == [event_id]


def test_batches_are_cut_by_bytes_under_max_batch_bytes(
    fake_proxy: FakeProxy, make_recorder: type[Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    store = fake_proxy._store

    def measured(events: list[object]) -> proxy_service_pb2.BatchResult:
        request = proxy_service_pb2.RecordRequest(events=events)  # type: ignore[arg-type]
        sizes.append(request.ByteSize())
        return store(events)  # type: ignore[arg-type]

    monkeypatch.setattr(fake_proxy, "_store", measured)
    recorder = make_recorder(fake_proxy.address, max_batch_bytes=64 << 10, max_event_bytes=16 << 10)
    ids = [recorder.record(ELECTED, str(i), data={"blob": "x" * 3000}) for i in range(100)]
    assert recorder.flush(10)
    assert fake_proxy.stored_ids() == ids
    assert len(sizes) >= 5
    assert max(sizes) <= 64 << 10
    assert sum(sizes) > 300_000


def test_an_event_over_max_event_bytes_is_refused_at_record(
    fake_proxy: FakeProxy, make_recorder: type[Recorder]
) -> None:
    recorder = make_recorder(fake_proxy.address, max_event_bytes=8 << 10)
    with pytest.raises(EventTooLargeError, match=r"event of \d+ bytes .* max_event_bytes \(8192\)"):
        recorder.record(ELECTED, "big", data={"blob": "x" * 9000})
    with pytest.raises(ValueError, match="max_event_bytes"):
        recorder.record(ELECTED, "é" * 4500)  # 9,000 bytes of UTF-8
    small = recorder.record(ELECTED, "é" * 1000, attributes={"k": "v" * 1000})
    assert recorder.flush(5)
    assert fake_proxy.stored_ids() == [small]
    assert recorder.stats().recorded == 1


def test_bad_size_options_are_refused(fake_proxy: FakeProxy, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_event_bytes"):
        Recorder(
            component="c",
            event_types=[ClusterEventType],
            proxy=fake_proxy.address,
            spool_dir=tmp_path,
            max_batch_bytes=1 << 20,
            max_event_bytes=1 << 20,
        )


def test_a_batch_written_as_the_stream_ends_is_resent_quietly_though_grpc_hides_why(
    fake_proxy: FakeProxy,
    make_recorder: type[Recorder],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write that races the proxy's end of the stream makes grpc's asyncio client report
    INTERNAL "Internal error from Core" in place of the proxy's status (grpc/grpc#36066): the
    batch is sent again on a new stream at once, not backed off from or warned about."""
    written: weakref.WeakSet[object] = weakref.WeakSet()
    write = grpc.aio._call._StreamRequestMixin._write

    async def racing_write(call: Any, request: object) -> None:
        if call in written:  # the second batch on this stream: the proxy ends it meanwhile
            fake_proxy.linger.set()
            await call.code()
            call._cython_call.set_internal_error("Internal error from Core")  # as grpc does
            await call._raise_for_status()
        written.add(call)
        await write(call, request)

    monkeypatch.setattr(grpc.aio._call._StreamRequestMixin, "_write", racing_write)
    fake_proxy.end_streams = grpc.StatusCode.OK
    fake_proxy.linger.clear()  # the first stream stays open after its acknowledgement
    recorder = make_recorder(fake_proxy.address, backoff_max=30, flush_interval=3600)
    with caplog.at_level(logging.DEBUG, logger="protoevents.recorder"):
        ids = [recorder.record(ELECTED, "first")]
        assert recorder.flush(5)
        ids.append(recorder.record(ELECTED, "second"))
        assert recorder.flush(5)  # a backoff of up to 30 s would miss this
    assert fake_proxy.streams == 2
    assert fake_proxy.stored_ids() == ids
    stats = recorder.stats()
    assert (stats.acknowledged, stats.spooled, stats.dropped) == (2, 0, {})
    ours = [r for r in caplog.records if r.name.startswith("protoevents.recorder")]
    assert [r.getMessage() for r in ours if r.levelno >= logging.WARNING] == []


def test_close_sets_aside_a_spooled_batch_refused_as_bad_and_delivers_the_rest(
    fake_proxy: FakeProxy, make_recorder: type[Recorder]
) -> None:
    fake_proxy.stop()
    # One batch at a time: no write races the proxy's refusal (which grpc may hide).
    recorder = make_recorder(fake_proxy.address, batch_size=10, max_in_flight=1, backoff_max=60)
    ids = [recorder.record(ELECTED, str(i)) for i in range(30)]
    assert recorder.flush(10)  # three batches in the spool
    fake_proxy.abort_code = grpc.StatusCode.INVALID_ARGUMENT
    fake_proxy.abort_limit = 2  # the first batch, then the same alone
    fake_proxy.start()
    assert recorder.close(10) is True
    assert fake_proxy.stored_ids() == ids[10:]
    stats = recorder.stats()
    assert (stats.set_aside, stats.replayed, stats.spool_pending) == (
        {"batch:INVALID_ARGUMENT": 10}, 20, 0
    )  # fmt: skip
    (batch,) = read_batches(recorder.dead_letter_path)
    assert [e.id for e in batch.events] == ids[:10]


def test_batches_waiting_to_be_resent_stay_behind_the_one_in_flight_when_the_stream_fails(
    tmp_path: Path,
) -> None:
    """A stream ended as a batch was written (grpc hid why) is retried at once: its batches
    wait to be resent. If the new stream fails with the first of them in flight, the others
    must not overtake it (the delivery thread's state, driven directly: the race is rare)."""
    spool = Spool(tmp_path / "slot", max_bytes=1 << 20, fsync=False)
    delivery = Delivery(
        DeliveryOptions(proxy="127.0.0.1:1"),
        deque(),
        event_pb2.EventSource(node="n", component="c"),
        spool,
        DeadLetter(dead_letter_dir(tmp_path / "slot"), fsync=False),
        Counters(),
        lambda count: None,
        lambda: None,
    )
    first, second, third = (_Batch(f"batch {n}".encode(), 1, None) for n in range(3))
    delivery._resend.extend([second, third])
    delivery._inflight[7] = first
    assert delivery._after_failure(StreamBrokenError(grpc.StatusCode.UNAVAILABLE, "down"))
    sent = []
    while (batch := delivery._next_batch()) is not None:
        sent.append(batch.payload)
    assert sent == [b"batch 0", b"batch 1", b"batch 2"]
