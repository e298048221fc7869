"""Set-aside stores: batches a later stage refused for good, kept on disk to be seen and replayed.

Every stage that cannot pass a batch on and must not drop it puts it here: the recorder (a batch or
event the proxy refused), the proxy's quarantine (event types it does not know yet) and each writer
(changes it rejected). A store is a folder of spool segments (`protoevents.recorder.spool`) whose
records are serialized `protoevents.v1.SetAsideBatch` messages, appended with fsync and read back
oldest first. One process at a time writes a store (an advisory lock on `lock`); anyone may list it
read-only meanwhile.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from protoevents.recorder.spool import Spool
from protoevents.v1 import event_pb2, set_aside_pb2

SetAsideBatch = set_aside_pb2.SetAsideBatch
_NO_CAP = 1 << 62  # never drop what was set aside: the caller bounds what it puts here


class SetAsideInUseError(RuntimeError):
    """Another process holds the store (a live recorder, or a running proxy)."""


def make_batch(
    stage: str,
    reason: str,
    events: Iterable[event_pb2.Event],
    updates: Iterable[event_pb2.Event] = (),
    *,
    now_ns: int | None = None,
) -> set_aside_pb2.SetAsideBatch:
    """A SetAsideBatch stamped with the current time (or `now_ns`)."""
    batch = SetAsideBatch(stage=stage, reason=reason, events=events, updates=updates)
    batch.set_aside_time.FromNanoseconds(time.time_ns() if now_ns is None else now_ns)
    return batch


def _events_in(batch: set_aside_pb2.SetAsideBatch) -> int:
    return len(batch.events) + len(batch.updates)


class SetAside:
    """A set-aside store held by this process (see the module docstring)."""

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SetAsideInUseError(f"{directory} is in use by another process") from None
        self._lock: int | None = fd
        self._spool = Spool(directory, max_bytes=_NO_CAP, fsync=fsync)

    @property
    def pending_events(self) -> int:
        """Events (and updates) set aside and not yet replayed."""
        return self._spool.pending_events

    @property
    def size_bytes(self) -> int:
        return self._spool.size_bytes

    def put(self, batch: set_aside_pb2.SetAsideBatch) -> None:
        """Append one batch, durably (fsync) unless the store was opened without fsync.
        Raises OSError when the disk refuses it: nothing is kept then."""
        self._spool.append(batch.SerializeToString(), _events_in(batch))

    def batches(self) -> list[set_aside_pb2.SetAsideBatch]:
        """Every batch held, oldest first."""
        return list(_read(self._spool))

    def replay(self, deliver: Callable[[set_aside_pb2.SetAsideBatch], bool]) -> int:
        """Hand each batch, oldest first, to `deliver`; a batch it takes (returns True) is
        removed, also from disk. Stops at the first it does not take. Returns the number of
        batches taken."""
        spool = self._spool
        spool.rewind()
        taken = 0
        try:
            while (entry := spool.next_unread()) is not None:
                if not deliver(SetAsideBatch.FromString(entry.payload)):
                    break
                spool.acknowledge(entry)
                taken += 1
        finally:
            spool.compact()  # what was taken from a segment it stopped in stays removed
        return taken

    def sift(
        self,
        deliver: Callable[[set_aside_pb2.SetAsideBatch], set_aside_pb2.SetAsideBatch | None],
    ) -> int:
        """Hand every batch held to `deliver`, oldest first. It returns None for a batch it
        took, or the batch to keep in its place (the same, or one with a new reason). The
        store then holds the kept batches alone, in their order: they are appended (with
        fsync) to new segments before the old ones are removed, so a crash in between keeps
        a batch twice at worst, never loses one. When `deliver` raises, nothing is removed.
        Returns the number of batches taken."""
        spool = self._spool
        spool.rewind()
        entries = []
        kept: list[set_aside_pb2.SetAsideBatch] = []
        unchanged = True
        try:
            while (entry := spool.next_unread()) is not None:
                entries.append(entry)
                batch = SetAsideBatch.FromString(entry.payload)
                keep = deliver(batch)
                if keep is not None:
                    kept.append(keep)
                    unchanged = unchanged and keep == batch
        finally:
            spool.rewind()
        if unchanged and len(kept) == len(entries):
            return 0
        spool.seal()
        for batch in kept:
            self.put(batch)
        for entry in entries:
            spool.acknowledge(entry)
        return len(entries) - len(kept)

    def close(self) -> None:
        self._spool.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> SetAside:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read(spool: Spool) -> Iterator[set_aside_pb2.SetAsideBatch]:
    spool.rewind()
    try:
        while (entry := spool.next_unread()) is not None:
            yield SetAsideBatch.FromString(entry.payload)
    finally:
        spool.rewind()


def read_batches(directory: Path) -> list[set_aside_pb2.SetAsideBatch]:
    """The batches of a store, oldest first, read without taking it or changing a byte (a
    store that another process holds may be listed; a missing folder holds none)."""
    return list(_read(Spool(directory, max_bytes=_NO_CAP, repair=False)))


def stored_bytes(directory: Path) -> int:
    """The bytes of a store's whole records, read without taking it (0 for a missing folder)."""
    return Spool(directory, max_bytes=_NO_CAP, repair=False).size_bytes
