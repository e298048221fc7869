"""How far behind a reader of the write-ahead log is: changes and the age of the oldest one.

`Backlog` indexes the log's records past the lowest bookmark: per record its end position,
its changes (created + updated) and the wall-clock time it was appended, in three flat arrays
(a long outage can leave millions of records). The proxy fills it from the retained log at
start and after every append, and trims it as the bookmarks pass. `read_log_lag` reads the
same from a log folder without opening it (for `protoevents lag`).
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from protoevents.proxy import changelog
from protoevents.proxy.wal import HEADER, survey
from protoevents.v1 import change_log_pb2

BOOKMARKS = "bookmarks"


class Behind(NamedTuple):
    """What a reader has still to read: its changes, and when the oldest record of them was
    appended (None when there is none)."""

    changes: int
    oldest: float | None


def appended_at(record: change_log_pb2.ChangeLogRecord) -> float | None:
    """When a record read back from the log was appended: the received time of its first new
    event, or else of its first update (None when it has neither)."""
    events = record.created or record.updated
    if not events:
        return None
    received = events[0].received_time
    return received.seconds + received.nanos / 1e9


def record_changes(record: change_log_pb2.ChangeLogRecord) -> int:
    """The changes a record holds: its new events and its updates."""
    return len(record.created) + len(record.updated)


class Backlog:
    """The records of the log past the lowest bookmark, oldest first.

    `add` and `trim` run on the event loop (or, at start, the thread that scans the log);
    `behind` may run on any thread (the metrics server's): a lock guards the arrays.
    `clock` gives the wall-clock time ages are measured against.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._ends = array("q")  # the position after each record, increasing
        self._totals = array("q")  # changes of every record up to this one, included
        self._times = array("d")  # when each record was appended
        self._head = 0  # index of the first record not trimmed (the ones before wait compaction)
        self._before = 0  # changes of the records compacted away
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ends) - self._head

    def add(self, end: int, changes: int, at: float) -> None:
        """Index the record ending at `end` (after every record indexed so far)."""
        with self._lock:
            if self._ends and end <= self._ends[-1]:
                raise ValueError(f"record end {end} is not after the last one ({self._ends[-1]})")
            last = self._totals[-1] if self._totals else self._before
            self._ends.append(end)
            self._totals.append(last + changes)
            self._times.append(at)

    def trim(self, position: int) -> None:
        """Forget the records that end at or before `position` (every reader has passed
        them). The arrays are compacted once half of them is trimmed (amortised: each record
        is moved at most once on average)."""
        with self._lock:
            ends = self._ends
            head = bisect.bisect_right(ends, position, self._head)
            if head == self._head:
                return
            self._head = head
            if head * 2 < len(ends):
                return
            self._before = self._totals[head - 1]
            del ends[:head]
            del self._totals[:head]
            del self._times[:head]
            self._head = 0

    def behind(self, position: int, until: int | None = None) -> Behind:
        """The changes of the records after `position` (a record `position` falls inside of
        counts whole), of those ending at or before `until` when given (the end readers may
        see), and when the oldest of them was appended."""
        with self._lock:
            ends = self._ends
            first = bisect.bisect_right(ends, position, self._head)
            last = len(ends) if until is None else bisect.bisect_right(ends, until, first)
            if last <= first:
                return Behind(0, None)
            before = self._totals[first - 1] if first else self._before
            return Behind(self._totals[last - 1] - before, self._times[first])

    def age(self, position: int, until: int | None = None) -> float:
        """Seconds since the oldest record after `position` was appended (0 when none is;
        never negative, whatever the clocks)."""
        oldest = self.behind(position, until).oldest
        return 0.0 if oldest is None else max(0.0, self.clock() - oldest)


# -- the log folder, read offline -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReaderLag:
    """How far one reader of a log folder is behind its end."""

    name: str
    bookmark: int  # where it resumes (the oldest retained byte when it saved none)
    saved: bool  # whether it saved a bookmark file
    bytes: int
    changes: int
    oldest: float | None  # when its oldest unread record was appended


@dataclass(frozen=True, slots=True)
class LogLag:
    """A log folder's retained range and the lag of each of its readers."""

    start: int
    end: int
    readers: list[ReaderLag]


def _segments(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.iterdir():
        stem, dot, suffix = path.name.partition(".")
        if dot and suffix == "wal" and len(stem) == 20 and stem.isdigit():
            found.append((int(stem), path))
    return sorted(found)


def _records(start: int, data: bytes) -> Iterator[tuple[int, bytes]]:
    """(end position, payload) of each valid record of a segment's bytes, damage skipped."""
    damaged, good = survey(data)
    holes = dict(damaged)
    offset = 0
    while offset < good:
        if offset in holes:
            offset = holes[offset]
            continue
        length, _ = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + length
        yield start + end, data[offset + HEADER.size : end]
        offset = end


def read_bookmarks(directory: Path) -> dict[str, int]:
    """The bookmark saved by each reader of the log folder `directory`."""
    saved: dict[str, int] = {}
    folder = directory / BOOKMARKS
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith("."):  # a bookmark being replaced
            continue
        with contextlib.suppress(ValueError, OSError):
            saved[path.name] = int(path.read_text().strip())
    return saved


def read_log_lag(directory: Path, readers: Iterable[str] = ()) -> LogLag:
    """The lag of every reader that saved a bookmark in the log folder `directory`, and of
    `readers` that did not (they start at the oldest retained record), reading the folder
    only: it works while a proxy appends to it. Raises OSError when it cannot be read."""
    saved: Mapping[str, int] = read_bookmarks(directory)
    names = sorted({*saved, *readers})
    lowest = min((saved.get(name, 0) for name in names), default=0)
    backlog = Backlog()
    start: int | None = None  # of the first segment read: older ones may go meanwhile
    end, at = 0, 0.0
    for first, path in _segments(directory):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # released by the proxy meanwhile: every reader passed it
            continue
        start = first if start is None else start
        end = first
        for record_end, payload in _records(first, data):
            end = record_end
            if record_end > lowest:
                record = changelog.parse(payload)
                at = appended_at(record) or at
                backlog.add(record_end, record_changes(record), at)
    start = end if start is None else start
    lags = []
    for name in names:
        position = min(max(start, saved.get(name, start)), end)
        behind = backlog.behind(position)
        lags.append(ReaderLag(name, position, name in saved, end - position, *behind))
    return LogLag(start, end, lags)
