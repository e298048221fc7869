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
    dropped: events lost, by reason (queue_full, spool_full, closed, rejected_batch, ...).
    rejected: events the proxy refused, by RejectionReason name (not retried).
    """

    recorded: int = 0
    sent: int = 0
    acknowledged: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    queued: int = 0
    spool_pending: int = 0
    spool_bytes: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


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
        self.spool_pending = 0
        self.spool_bytes = 0

    def drop(self, reason: str, count: int) -> None:
        with self.lock:
            self.dropped[reason] += count
