"""The on-disk spool: order, acknowledgement, cap, and recovery from damaged files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from protoevents.recorder.spool import Spool, SpoolInUseError, SpoolSlot


def fill(spool: Spool, count: int, size: int = 100) -> list[bytes]:
    payloads = [f"{i:06d}".encode() * (size // 6) for i in range(count)]
    for payload in payloads:
        spool.append(payload, 1)
    return payloads


def drain(spool: Spool) -> list[bytes]:
    seen = []
    while (entry := spool.next_unread()) is not None:
        seen.append(entry.payload)
        spool.acknowledge(entry)
    return seen


def test_reads_in_order_and_deletes_acknowledged_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    payloads = fill(spool, 100)
    assert len(list(tmp_path.glob("*.spool"))) > 1
    assert drain(spool) == payloads
    assert spool.is_empty() and spool.pending_events == 0
    assert not list(tmp_path.glob("*.spool"))


def test_unacknowledged_records_survive_a_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    payloads = fill(spool, 50)
    first = spool.next_unread()
    assert first is not None
    spool.acknowledge(first)
    spool.next_unread()  # handed out, never acknowledged
    reopened = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    # Records of a segment already partly delivered come again: the proxy drops repeats by id.
    assert drain(reopened)[-49:] == payloads[1:]


def test_compact_makes_acknowledgements_last_and_appends_go_on(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    payloads = fill(spool, 50)  # several segments; the last one is being appended to
    segments = len(list(tmp_path.glob("*.spool")))
    taken = [spool.next_unread() for _ in range(3)]
    for entry in taken:
        assert entry is not None
        spool.acknowledge(entry)
    spool.compact()
    assert spool.pending_events == 47
    more = [b"after compacting"]
    spool.append(more[0], 1)
    reopened = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    assert drain(reopened) == payloads[3:] + more
    assert len(list(tmp_path.glob("*.spool"))) == 0
    assert segments > 1

    tail = Spool(tmp_path / "one", max_bytes=1 << 20)  # the segment written to is compacted
    written = fill(tail, 3)
    entry = tail.next_unread()
    assert entry is not None
    tail.acknowledge(entry)
    tail.compact()
    tail.append(b"last", 1)
    assert drain(Spool(tmp_path / "one", max_bytes=1 << 20)) == [*written[1:], b"last"]
    assert drain(Spool(tmp_path / "one", max_bytes=1 << 20)) == []


def test_rewind_hands_out_unacknowledged_records_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    payloads = fill(spool, 3)
    a, b = spool.next_unread(), spool.next_unread()
    assert a is not None and b is not None
    spool.acknowledge(a)
    spool.rewind()
    assert drain(spool) == payloads[1:]


def test_cap_drops_oldest_segments_and_counts_their_events(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=16 * 1024, segment_bytes=4096)
    dropped = 0
    for _ in range(200):
        dropped += spool.append(bytes(100), 10)
    assert dropped == spool.dropped_events > 0
    assert spool.pending_events + dropped == 2000
    assert spool.size_bytes <= 16 * 1024


def test_cap_never_deletes_records_being_delivered(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=8 * 1024, segment_bytes=4096)
    fill(spool, 30)
    in_flight = spool.next_unread()
    assert in_flight is not None
    fill(spool, 200)
    spool.acknowledge(in_flight)
    assert spool.pending_events + spool.dropped_events == 229


def test_truncated_tail_is_cut_and_the_rest_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    payloads = fill(spool, 10)
    spool.close()
    (segment,) = tmp_path.glob("*.spool")
    data = segment.read_bytes()
    segment.write_bytes(data[:-30])  # a write torn by a crash
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert reopened.damaged_segments == 1
    assert drain(reopened) == payloads[:9]


@pytest.mark.parametrize("where", [0.3, 0.6])
def test_corrupted_bytes_end_the_segment_without_crashing(tmp_path: Path, where: float) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    payloads = fill(spool, 10)
    spool.close()
    (segment,) = tmp_path.glob("*.spool")
    data = bytearray(segment.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    segment.write_bytes(bytes(data))
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    kept = drain(reopened)
    assert kept == payloads[: len(kept)]
    assert 0 < len(kept) < 10
    assert reopened.damaged_segments == 1
    fill(reopened, 1)  # still writable after recovery


def test_garbage_file_is_recovered_as_empty(tmp_path: Path) -> None:
    (tmp_path / "000000000001.spool").write_bytes(b"\x00garbage" * 100)
    spool = Spool(tmp_path, max_bytes=1 << 20)
    assert spool.is_empty()
    assert fill(spool, 2) == drain(spool)


def test_slots_are_exclusive_between_live_holders(tmp_path: Path) -> None:
    first, second = SpoolSlot(tmp_path), SpoolSlot(tmp_path)
    assert first.directory.name == "slot-0" and second.directory.name == "slot-1"
    first.release()
    third = SpoolSlot(tmp_path)
    assert third.directory.name == "slot-0"
    second.release()
    third.release()


def test_all_slots_held_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("protoevents.recorder.spool.MAX_SLOTS", 1)
    held = SpoolSlot(tmp_path)
    with pytest.raises(SpoolInUseError, match="held by live recorders"):
        SpoolSlot(tmp_path)
    held.release()


def test_a_failed_append_leaves_no_torn_record_and_the_spool_stays_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    payloads = fill(spool, 3)
    (segment,) = tmp_path.glob("*.spool")
    size = segment.stat().st_size
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        if len(data) > 20:
            real_write(fd, bytes(data)[:20])  # a short write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("protoevents.recorder.spool.os.write", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        spool.append(b"y" * 100, 1)
    assert segment.stat().st_size == size
    assert spool.pending_events == 3
    monkeypatch.undo()
    payloads += fill(spool, 1)
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert reopened.damaged_segments == 0
    assert drain(reopened) == payloads
