"""Set-aside stores: durable, ordered, exclusive to one writer, listable by anyone."""

from __future__ import annotations

from pathlib import Path

import pytest

from protoevents.recorder.setaside import SetAside, SetAsideInUseError, make_batch, read_batches
from protoevents.v1 import event_pb2, set_aside_pb2


def _event(n: int) -> event_pb2.Event:
    return event_pb2.Event(id=f"00000000-0000-7000-8000-{n:012d}", type="t", message=str(n))


def test_batches_survive_a_reopen_in_order_and_replay_removes_what_was_taken(
    tmp_path: Path,
) -> None:
    with SetAside(tmp_path / "store") as store:
        for n in range(5):
            store.put(make_batch("recorder", f"reason {n}", [_event(n)], now_ns=n))
        assert store.pending_events == 5
    assert [b.reason for b in read_batches(tmp_path / "store")] == [f"reason {n}" for n in range(5)]
    with SetAside(tmp_path / "store") as store:
        seen: list[str] = []

        def take_three(batch: object) -> bool:
            seen.append(batch.events[0].message)  # type: ignore[attr-defined]
            return len(seen) <= 3

        assert store.replay(take_three) == 3
        assert seen == ["0", "1", "2", "3"]
        assert [b.events[0].message for b in store.batches()] == ["3", "4"]
        assert store.pending_events == 2


def test_one_holder_at_a_time_and_a_read_only_listing_changes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    with SetAside(directory) as store:
        store.put(make_batch("writer:db", "bad", [_event(1)], [_event(2)]))
        with pytest.raises(SetAsideInUseError, match="in use"):
            SetAside(directory)
        before = {p.name: p.read_bytes() for p in directory.iterdir()}
        (batch,) = read_batches(directory)
        assert batch.stage == "writer:db" and len(batch.updates) == 1
        assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    assert read_batches(tmp_path / "missing") == []


def test_what_a_replay_took_before_it_stopped_stays_removed_after_a_reopen(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "store"
    with SetAside(directory) as store:
        for n in range(5):
            store.put(make_batch("writer:db", f"reason {n}", [_event(n)], now_ns=n))
    with SetAside(directory) as store:
        assert store.replay(lambda batch: batch.reason != "reason 3") == 3
        store.put(make_batch("writer:db", "reason 5", [_event(5)], now_ns=5))
    assert [b.reason for b in read_batches(directory)] == ["reason 3", "reason 4", "reason 5"]
    assert not [p for p in directory.iterdir() if p.name.endswith(".compacting")]


def test_sift_keeps_what_is_refused_again_in_order_and_removes_the_rest_for_good(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "store"
    with SetAside(directory) as store:
        for n in range(6):
            store.put(make_batch("writer:db", f"reason {n}", [_event(n)], now_ns=n))

    def refuse_odd(batch: set_aside_pb2.SetAsideBatch) -> set_aside_pb2.SetAsideBatch | None:
        if int(batch.events[0].message) % 2 == 0:
            return None
        again = set_aside_pb2.SetAsideBatch()
        again.CopyFrom(batch)
        again.reason = f"still {batch.reason}"
        return again

    with SetAside(directory) as store:
        assert store.sift(refuse_odd) == 3
        assert store.pending_events == 3
    kept = read_batches(directory)
    assert [b.reason for b in kept] == ["still reason 1", "still reason 3", "still reason 5"]
    assert [b.set_aside_time.ToNanoseconds() for b in kept] == [1, 3, 5]  # their first time

    with SetAside(directory) as store:
        assert store.sift(lambda batch: batch) == 0  # everything kept as it was
        with pytest.raises(ZeroDivisionError):
            store.sift(lambda batch: None if batch.reason.endswith("1") else 1 // 0)  # type: ignore[func-returns-value]
    assert [b.reason for b in read_batches(directory)] == [b.reason for b in kept]
    with SetAside(directory) as store:
        assert store.sift(lambda batch: None) == 3
    assert read_batches(directory) == []
