"""Counters of what a recorder did with the events it was given."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RecorderStats:
    """A snapshot of a recorder's counters.

    recorded: accepted by `record()`. sent: events sent live to the proxy (a batch sent again
    after a failure counts again). acknowledged: events the proxy acknowledged from live sends.
    spooled: events written to the spool. replayed: spooled events later acknowledged.
    dropped: events lost, by reason (queue_full, disk_full, spool_write_failed, spool_full,
    closed, set_aside_failed). rejected: events the proxy refused in an acknowledgement, by
    RejectionReason name (set aside, not retried). set_aside: events put in the dead-letter
    store, by `batch:<status code>` (a batch the proxy refused) or `event:<RejectionReason>`.
    quarantined: events the proxy acknowledged but keeps in quarantine because it does not know
    their type yet (also counted in acknowledged or replayed). merged: acknowledged events the
    proxy merged into an earlier event as repeats (stored as its count, not under their own
    ids; also counted in acknowledged or replayed). queued: events waiting in
    memory; held: events waiting in memory because the spool refused them (`spool_error` says
    why: disk_full or spool_write_failed; empty while the spool takes writes).
    """

    recorded: int = 0
    sent: int = 0
    acknowledged: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    set_aside: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    merged: int = 0
    queued: int = 0
    held: int = 0
    spool_pending: int = 0
    spool_bytes: int = 0
    spool_error: str = ""

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def set_aside_total(self) -> int:
        return sum(self.set_aside.values())


class Counters:
    """Mutable counters shared by the caller's threads and the delivery thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.acknowledged = 0
        self.spooled = 0
        self.replayed = 0
        self.dropped: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.set_aside: Counter[str] = Counter()
        self.quarantined = 0
        self.merged = 0
        self.held = 0  # written by the delivery thread only; read unlocked by record()
        self.spool_pending = 0
        self.spool_bytes = 0
        self.spool_error = ""  # likewise

    def drop(self, reason: str, count: int) -> None:
        with self.lock:
            self.dropped[reason] += count
