"""The write-ahead log's records, pinned to stored bytes: a record written today reads back the
same, and one written before format 2 (by the proxy of format 1) still reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from protoevents.proxy import changelog
from protoevents.proxy.changes import CREATED, UPDATED, Change
from protoevents.v1 import change_log_pb2, event_pb2, severity_pb2

GOLDEN = Path(__file__).parent / "golden"
IDS = [
    "0194f6a0-0000-7000-8000-000000000001",
    "0194f6a0-0000-7000-8000-000000000002",
    "0194f6a0-0000-7000-8000-000000000003",
]


def _event(n: int, count: int = 1, later_ms: int = 0) -> event_pb2.Event:
    """A stored event without maps (their order on the wire is the library's to choose)."""
    event = event_pb2.Event(
        id=IDS[n],
        type="protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED",
        severity=severity_pb2.SEVERITY_INFO,
        category="cluster",
        message=f"node-{n} was elected leader",
        count=count,
    )
    event.source.node = f"node-{n}"
    event.source.component = "cluster-controller"
    event.object.kind = "Node"
    event.object.name = f"node-{n}"
    event.time.FromMicroseconds(1_767_225_600_000_000 + n * 1000)
    event.first_time.CopyFrom(event.time)
    event.last_time.FromMicroseconds(1_767_225_600_000_000 + n * 1000 + later_ms * 1000)
    event.received_time.FromMicroseconds(1_767_225_600_000_000 + n * 1000 + 500)
    return event


# Two new events, and a third merged into the first: the first as it now stands.
CREATED_EVENTS = [_event(0), _event(1)]
UPDATED_EVENTS = [_event(0, count=2, later_ms=7)]
EXPECTED = [Change(CREATED, e) for e in CREATED_EVENTS] + [Change(UPDATED, UPDATED_EVENTS[0])]


def _record() -> bytes:
    return changelog.encode([e.SerializeToString() for e in CREATED_EVENTS], UPDATED_EVENTS, IDS)


def test_a_record_is_written_as_the_stored_bytes_of_format_2() -> None:
    assert _record() == (GOLDEN / "format2.bin").read_bytes()


def test_a_record_of_format_2_is_a_change_log_record() -> None:
    record = change_log_pb2.ChangeLogRecord.FromString((GOLDEN / "format2.bin").read_bytes())
    assert record.format == 2
    assert list(record.created) == CREATED_EVENTS
    assert list(record.updated) == UPDATED_EVENTS
    assert list(record.accepted_ids) == IDS


@pytest.mark.parametrize(
    "name",
    [
        "format2.bin",
        # Written by the proxy of format 1, for a RecordBatch call (events as field 1) and for
        # a batch of a Record stream (field 2), each with the same update and ids.
        "format1-batch.bin",
        "format1-stream.bin",
    ],
)
def test_records_of_every_format_read_back_as_the_same_changes(name: str) -> None:
    payload = (GOLDEN / name).read_bytes()
    assert changelog.decode(payload) == EXPECTED
    assert changelog.decode_ids(payload) == IDS


def test_a_record_of_format_2_starts_with_its_format_not_the_version_byte_of_format_1() -> None:
    assert _record()[:2] == b"\x08\x02"
    assert (GOLDEN / "format1-batch.bin").read_bytes()[:1] == b"\x01"


def test_a_record_of_a_later_format_is_refused_by_name() -> None:
    later = change_log_pb2.ChangeLogRecord(format=3, accepted_ids=IDS).SerializeToString()
    with pytest.raises(ValueError, match="format 3; this proxy reads 1 and 2"):
        changelog.decode(later)


def test_a_record_with_nothing_created_holds_its_updates_and_ids() -> None:
    payload = changelog.encode([], UPDATED_EVENTS, IDS[2:])
    assert changelog.decode(payload) == [Change(UPDATED, UPDATED_EVENTS[0])]
    assert changelog.decode_ids(payload) == IDS[2:]
