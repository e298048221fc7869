"""What writers are handed: repeats of an id merged in one place, new events filled in."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from protoevents.proxy.changes import CREATED, UPDATED, Change, fill_created, merge_repeats
from protoevents.proxy.dedup import Deduplicator
from protoevents.v1 import event_pb2
from tests.support.ingest_helpers import make_event, make_events


def update(event: event_pb2.Event, count: int, last_seconds: int = 0) -> Change:
    return Change(
        UPDATED,
        event_pb2.Event(id=event.id, count=count, last_time=Timestamp(seconds=last_seconds)),
    )


def shape(changes: list[Change]) -> list[tuple[int, str, int, int]]:
    return [(c.kind, c.event.id, c.event.count, c.event.last_time.seconds) for c in changes]


def test_the_last_update_of_an_id_is_kept_in_its_place_and_every_create() -> None:
    a, b = make_event(), make_event()
    changes = [
        Change(CREATED, a),
        update(a, 2, 10),
        Change(CREATED, b),
        update(b, 2, 11),
        update(a, 3, 12),
    ]
    assert shape(merge_repeats(changes)) == [
        (CREATED, a.id, 0, 0),
        (CREATED, b.id, 0, 0),
        (UPDATED, b.id, 2, 11),
        (UPDATED, a.id, 3, 12),
    ]


def test_changes_without_repeats_come_back_as_they_are() -> None:
    a, b = make_events(2)
    changes = [Change(CREATED, a), Change(CREATED, b), update(a, 2)]
    merged = merge_repeats(changes)
    assert merged == changes and merged is not changes
    assert all(m is c for m, c in zip(merged, changes, strict=True))


def test_a_repeated_create_is_kept_once_the_first() -> None:
    a = make_event()
    replay = event_pb2.Event()
    replay.CopyFrom(a)
    replay.message = "the replay"
    changes = [Change(CREATED, a), update(a, 2), Change(CREATED, replay)]
    merged = merge_repeats(changes)
    assert [c.kind for c in merged] == [CREATED, UPDATED]
    assert merged[0].event is a


def test_updates_out_of_order_are_raised_to_the_highest_count_and_latest_time() -> None:
    a = make_event()
    later = update(a, 5, 20)
    merged = merge_repeats([later, update(a, 7, 15), update(a, 6, 30)])
    assert shape(merged) == [(UPDATED, a.id, 7, 30)]
    assert later.event.count == 5  # the changes handed in are not modified


def test_merged_dedup_batches_give_what_dedup_reached() -> None:
    """Two batches of dedup's output, merged: one CREATED, one UPDATED with the final count."""
    dedup = Deduplicator(window=60)
    first = make_event(time=Timestamp(seconds=100))
    repeat = make_event(time=Timestamp(seconds=130))
    repeat.message = first.message
    received = 1_000 * 1_000_000_000
    batches = dedup.observe_many([first, repeat], received)
    batches += dedup.observe_many([repeat, repeat], received + 1)
    assert shape(merge_repeats(batches)) == [
        (CREATED, first.id, 1, 100),
        (UPDATED, first.id, 4, 130),
    ]


def test_fill_created_makes_a_new_event_of_its_time_and_received_time() -> None:
    event = make_event(time=Timestamp(seconds=50, nanos=7))
    event.count = 9
    event.received_time.nanos = 3  # anything the sender put there is replaced
    received = Timestamp(seconds=60, nanos=1)
    assert fill_created(event, received) is event
    assert event.count == 1
    assert event.first_time == event.last_time == Timestamp(seconds=50, nanos=7)
    assert event.received_time == received


def test_dedup_fills_in_a_new_event_as_ingest_does() -> None:
    sent = make_event(time=Timestamp(seconds=50, nanos=7))
    created = Deduplicator().observe(sent, 60 * 1_000_000_000 + 1).event
    expected = event_pb2.Event()
    expected.CopyFrom(sent)
    assert created == fill_created(expected, Timestamp(seconds=60, nanos=1))
    assert not sent.HasField("received_time")
