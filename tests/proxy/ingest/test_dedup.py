"""The deduplicator: counts under the first id, windows, the LRU bounds, collision-free keys."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protoevents.proxy.changes import CREATED, UPDATED, Change
from protoevents.proxy.dedup import ENTRY_OVERHEAD, Deduplicator, dedup_key
from protoevents.v1 import event_pb2
from tests.support.events import stored_event

SECOND = 1_000_000_000
T0 = 1_767_225_600 * SECOND
MiB = 1024 * 1024


def raw(n: int = 0, **fields: str) -> event_pb2.Event:
    """An event as ingest hands it to dedup: no count, first/last/received times."""
    event = stored_event(n, **fields)
    for name in ("count", "first_time", "last_time", "received_time"):
        event.ClearField(name)
    return event


def test_first_occurrence_is_created_with_count_one() -> None:
    event = raw(1)
    change = Deduplicator().observe(event, T0 + 5)
    assert change.kind == CREATED
    assert change.event.id == event.id
    assert change.event.count == 1
    assert change.event.first_time == change.event.last_time == event.time
    assert change.event.received_time.ToNanoseconds() == T0 + 5
    assert event.count == 0 and not event.HasField("received_time")  # input untouched


def test_repeats_collapse_into_counts_under_the_first_id() -> None:
    dedup = Deduplicator(window=10)
    first = raw(1)
    changes = [dedup.observe(first, T0)]
    for n in range(1, 6):
        repeat = raw(1)  # same content, new id and a later time
        repeat.time.FromNanoseconds(first.time.ToNanoseconds() + n * SECOND)
        changes.append(dedup.observe(repeat, T0 + n * SECOND))
    assert [c.kind for c in changes] == [CREATED] + [UPDATED] * 5
    assert {c.event.id for c in changes} == {first.id}
    assert [c.event.count for c in changes] == [1, 2, 3, 4, 5, 6]
    last = changes[-1].event
    assert last.last_time.ToNanoseconds() == first.time.ToNanoseconds() + 5 * SECOND
    assert last.first_time == first.time
    assert last.received_time.ToNanoseconds() == T0
    # Earlier changes are not mutated by later repeats.
    assert changes[1].event.count == 2


def test_last_time_never_moves_back() -> None:
    dedup = Deduplicator()
    first = raw(1)
    dedup.observe(first, T0)
    earlier = raw(1)
    earlier.time.FromNanoseconds(first.time.ToNanoseconds() - SECOND)
    change = dedup.observe(earlier, T0 + 1)
    assert change.event.count == 2
    assert change.event.last_time == first.time


def test_window_is_fixed_from_the_first_occurrence_and_expiry_starts_a_new_id() -> None:
    dedup = Deduplicator(window=10)
    first, second, third = raw(1), raw(1), raw(1)
    assert dedup.observe(first, T0).kind == CREATED
    assert dedup.observe(second, T0 + 9 * SECOND).kind == UPDATED
    # 10 s after the first occurrence, although the last repeat was 1 s ago.
    change = dedup.observe(third, T0 + 10 * SECOND)
    assert change.kind == CREATED
    assert change.event.id == third.id
    assert dedup.observe(raw(1), T0 + 11 * SECOND).event.id == third.id


def test_different_content_is_never_merged() -> None:
    dedup = Deduplicator()
    variants = [
        raw(1),
        raw(1, message="other"),
        raw(1, node="node-x"),
        raw(1, component="other-component"),
        raw(1, kind="Nic"),
        raw(1, name="eth9"),
        raw(1, type="protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST"),
    ]
    severe = raw(1)
    severe.severity = 5
    variants.append(severe)
    kinds = [dedup.observe(event, T0).kind for event in variants]
    assert kinds == [CREATED] * len(variants)


def test_a_forced_alert_merges_only_with_forced_alerts() -> None:
    dedup = Deduplicator()
    plain, forced, plain_again, forced_again = raw(1), raw(1), raw(1), raw(1)
    forced.alert = forced_again.alert = True
    assert dedup_key(plain) != dedup_key(forced)
    changes = [dedup.observe(e, T0 + n) for n, e in enumerate((plain, forced))]
    assert [(c.kind, c.event.id, c.event.alert) for c in changes] == [
        (CREATED, plain.id, False),
        (CREATED, forced.id, True),
    ]
    # Each repeat counts on the event that asks what it asks; the other stays as it was.
    repeats = dedup.observe_many([forced_again, plain_again, raw(1)], T0 + 2)
    assert [(c.kind, c.event.id, c.event.count, c.event.alert) for c in repeats] == [
        (UPDATED, forced.id, 2, True),
        (UPDATED, plain.id, 3, False),
    ]


def test_key_has_no_concatenation_collision() -> None:
    a = raw(1, message="ab", node="c")
    b = raw(1, message="a", node="bc")
    assert dedup_key(a) != dedup_key(b)
    dedup = Deduplicator()
    assert [dedup.observe(e, T0).kind for e in (a, b)] == [CREATED, CREATED]


def test_cache_bound_is_honoured_and_evictions_counted() -> None:
    dedup = Deduplicator(window=60, max_entries=3)
    events = [raw(1, message=f"m{n}") for n in range(5)]
    for event in events:
        dedup.observe(event, T0)
    assert len(dedup) == 3
    assert dedup.evictions == 2
    # The evicted first key is forgotten: its repeat is a new event; a kept key still merges.
    assert dedup.observe(raw(1, message="m0"), T0 + 1).kind == CREATED
    assert dedup.observe(raw(1, message="m4"), T0 + 1).kind == UPDATED
    assert len(dedup) == 3


def big(n: int, data_bytes: int = 10_000) -> event_pb2.Event:
    """A distinct event (by message) carrying `data_bytes` of data; below 10, all of a size."""
    event = raw(0, message=f"big {n}")
    event.data.update({"blob": "x" * data_bytes})
    return event


def held(dedup: Deduplicator) -> int:
    """The bytes of `dedup`'s entries counted afresh: it must match the running total."""
    return sum(entry.size for entry in dedup._entries.values())


def test_byte_bound_evicts_the_oldest_keys_and_counts_them() -> None:
    one = Deduplicator()
    one.observe(big(0), T0)
    size = one.held_bytes
    assert size > 10_000 + ENTRY_OVERHEAD
    dedup = Deduplicator(window=60, max_entries=1000, max_bytes=3 * size + size // 2)
    for n in range(5):
        assert dedup.observe(big(n), T0).kind == CREATED
    assert len(dedup) == 3
    assert dedup.evictions == 2
    assert dedup.held_bytes == held(dedup) == 3 * size <= dedup.max_bytes
    # The oldest key was forgotten: its repeat is a new event, pushing out the next oldest.
    assert dedup.observe(big(0), T0 + SECOND).kind == CREATED
    assert dedup.evictions == 3
    assert dedup.observe(big(4), T0 + SECOND).kind == UPDATED
    assert dedup.observe(big(1), T0 + SECOND).kind == CREATED
    assert (len(dedup), dedup.held_bytes) == (3, 3 * size)


def test_an_event_larger_than_the_byte_bound_is_not_remembered() -> None:
    dedup = Deduplicator(window=60, max_bytes=5_000)
    dedup.observe(raw(1), T0)
    assert len(dedup) == 1
    changes = [dedup.observe(big(2), T0), dedup.observe(big(2), T0)]
    assert [c.kind for c in changes] == [CREATED, CREATED]
    assert changes[0].event.id != changes[1].event.id
    assert (len(dedup), dedup.held_bytes, dedup.evictions) == (0, 0, 3)


def test_held_bytes_follow_the_keys_as_windows_close() -> None:
    dedup = Deduplicator(window=10)
    for n in range(50):
        dedup.observe_many([big(n, 1000 * (n % 4)), raw(n, message=f"small {n}")], T0)
    assert dedup.held_bytes == held(dedup) > 100 * ENTRY_OVERHEAD
    dedup.observe(raw(1, message="later"), T0 + 5 * SECOND)
    dedup.observe(raw(1, message="small 1"), T0 + 6 * SECOND)  # a repeat: now behind "later"
    # Every window but that of "later" has closed: expiry drops the keys before it, and
    # "small 1", behind it, is replaced by its new occurrence.
    assert dedup.observe(raw(1, message="small 1"), T0 + 10 * SECOND).kind == CREATED
    assert len(dedup) == 2
    assert dedup.held_bytes == held(dedup)
    # Once every window has closed, the bytes are those of the newest key alone.
    dedup.observe(big(7, 60_000), T0 + 20 * SECOND)
    alone = Deduplicator(window=10)
    alone.observe(big(7, 60_000), T0 + 20 * SECOND)
    assert (len(dedup), dedup.held_bytes, dedup.evictions) == (1, alone.held_bytes, 0)
    off = Deduplicator(window=0)
    off.observe_many([big(1), big(1)], T0)
    assert (len(off), off.held_bytes) == (0, 0)


def test_memory_held_stays_near_max_bytes_in_a_storm_of_large_events() -> None:
    # 2,000 distinct events of 60 KB: about 120 MB were every key kept, as max_entries
    # alone would; the byte bound keeps what the deduplicator holds near max_bytes.
    max_bytes = 8 * MiB
    pool = [big(n, 60_000) for n in range(2000)]
    dedup = Deduplicator(window=60, max_bytes=max_bytes)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for at in range(0, len(pool), 100):
            dedup.observe_many(pool[at : at + 100], T0 + at)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert dedup.held_bytes <= max_bytes
    assert 0 < len(dedup) < 200 and dedup.evictions == 2000 - len(dedup)
    assert 0.75 * max_bytes < traced < 1.25 * max_bytes, f"{traced / MiB:.1f} MiB held"


def test_expired_entries_pushed_out_are_not_counted_as_evictions() -> None:
    dedup = Deduplicator(window=1, max_entries=1)
    dedup.observe(raw(1, message="a"), T0)
    dedup.observe(raw(1, message="b"), T0 + 2 * SECOND)
    assert dedup.evictions == 0
    dedup.observe(raw(1, message="c"), T0 + 2 * SECOND)
    assert dedup.evictions == 1


def test_keys_are_forgotten_once_their_window_closes() -> None:
    # Memory follows one window of traffic, not `max_entries`.
    dedup = Deduplicator(window=10, max_entries=1000)
    for n in range(100):
        dedup.observe(raw(1, message=f"early {n}"), T0)
    assert len(dedup) == 100
    dedup.observe_many([raw(1, message="late")], T0 + 10 * SECOND)
    assert len(dedup) == 1
    assert dedup.evictions == 0


def test_window_zero_disables_dedup() -> None:
    dedup = Deduplicator(window=0)
    changes = [dedup.observe(raw(1), T0) for _ in range(3)]
    assert [(c.kind, c.event.count) for c in changes] == [(CREATED, 1)] * 3
    assert len({c.event.id for c in changes}) == 3
    assert len(dedup) == 0


def test_replaying_the_same_input_gives_the_same_changes() -> None:
    inputs = [(raw(n % 3), T0 + n * SECOND // 2) for n in range(40)]

    def run() -> list[tuple[int, str, int]]:
        dedup = Deduplicator(window=5, max_entries=2)
        return [
            (c.kind, c.event.id, c.event.count)
            for c in (dedup.observe(event, at) for event, at in inputs)
        ]

    assert run() == run()


@pytest.mark.parametrize(
    ("window", "entries", "max_bytes", "message"),
    [
        (-1, 10, MiB, "dedup window must be >= 0 seconds, not -1"),
        (10, 0, MiB, "dedup max_entries must be >= 1, not 0"),
        (10, 10, 0, "dedup max_bytes must be >= 1, not 0"),
        (10, 10, -MiB, "dedup max_bytes must be >= 1, not -1048576"),
    ],
)
def test_bad_settings_are_refused(
    window: float, entries: int, max_bytes: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Deduplicator(window=window, max_entries=entries, max_bytes=max_bytes)


def collapsed(changes: list[Change]) -> list[tuple[int, event_pb2.Event]]:
    """Every CREATED in order, then the last UPDATED of each id in order of first update."""
    last: dict[str, event_pb2.Event] = {}
    for change in changes:
        if change.kind == UPDATED:
            last[change.event.id] = change.event
    created = [(CREATED, c.event) for c in changes if c.kind == CREATED]
    return created + [(UPDATED, event) for event in last.values()]


# Calls of observe_many: (received after the previous call in seconds, events by content:
# message m // 2, a forced alert when m is odd).
_calls = st.lists(
    st.tuples(st.integers(0, 6), st.lists(st.integers(0, 5), max_size=12)), max_size=8
)


@given(
    calls=_calls,
    window=st.sampled_from([0, 5]),
    max_entries=st.integers(1, 4),
    max_bytes=st.sampled_from([MiB, 1500, 3000, 5000]),  # a key of these events: ~1.2 KB
)
@settings(max_examples=300, deadline=None)
def test_observe_many_equals_observe_collapsed(
    calls: list[tuple[int, list[int]]], window: int, max_entries: int, max_bytes: int
) -> None:
    one = Deduplicator(window, max_entries, max_bytes)
    many = Deduplicator(window, max_entries, max_bytes)
    at = T0
    for n, (later, messages) in enumerate(calls):
        at += later * SECOND
        batch = [raw(n * 100 + i, message=f"m{m // 2}") for i, m in enumerate(messages)]
        for i, event in enumerate(batch):
            event.alert = messages[i] % 2 == 1
            event.time.FromNanoseconds(T0 + (i * 7919 % 13) * SECOND)  # not in order
        sequential = collapsed([one.observe(event, at) for event in batch])
        assert [(c.kind, c.event) for c in many.observe_many(batch, at)] == sequential
        assert (len(many), many.merged, many.evictions) == (len(one), one.merged, one.evictions)
        assert many.held_bytes == one.held_bytes == held(one) <= max_bytes


def test_observe_many_collapses_a_storm_into_one_update() -> None:
    dedup = Deduplicator()
    first = dedup.observe_many([raw(1) for _ in range(1000)], T0)
    second = dedup.observe_many([raw(1) for _ in range(500)], T0 + SECOND)
    assert [(c.kind, c.event.count) for c in first] == [(CREATED, 1), (UPDATED, 1000)]
    assert [(c.kind, c.event.count) for c in second] == [(UPDATED, 1500)]
    assert first[0].event.id == first[1].event.id == second[0].event.id
