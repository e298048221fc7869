"""Limits on queries: a time limit each, and few unindexed ones at once (blocking calls).

Queries that no index serves (`EventQuery.scans`) each take one of `scan_slots`; the others
run at once. A scan waiting for a slot holds a query thread, so at most `max_waiting` scans are
let in (running or waiting) and the rest are refused: the remaining threads are always free for
indexed queries, which therefore never queue behind a storm of substring searches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from protoevents.proxy.statuses import DeadlineExceededError, TooManyQueriesError

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Budget:
    """The time a query has: `limit_s` seconds, ending at clock time `deadline`."""

    deadline: float
    limit_s: float


class QueryLimits:
    """The time limit of each query and the slots of unindexed ones."""

    def __init__(
        self,
        timeout_s: float = 30.0,
        scan_slots: int = 2,
        max_waiting: int = 16,
        *,
        clock: Clock = time.monotonic,
        on_timeout: Callable[[], None] | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        if timeout_s <= 0 or scan_slots < 1 or max_waiting < scan_slots:
            raise ValueError("query limits: timeout > 0, 1 <= scan_slots <= max_waiting")
        self.timeout_s = timeout_s
        self.scan_slots = scan_slots
        self.max_waiting = max_waiting
        self.clock = clock
        self.on_timeout = on_timeout
        self.on_refused = on_refused
        self._slots = threading.BoundedSemaphore(scan_slots)
        self._lock = threading.Lock()
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Unindexed queries running or waiting for a slot."""
        return self._admitted

    def budget(self, time_remaining: float | None) -> Budget:
        """The time a query starting now has: `timeout_s`, or less when the caller's
        deadline (`time_remaining` seconds away, None for none) comes first."""
        limit = self.timeout_s if time_remaining is None else min(self.timeout_s, time_remaining)
        if limit <= 0:
            raise self.exceeded(Budget(self.clock(), 0.0))
        return Budget(self.clock() + limit, limit)

    def left(self, budget: Budget) -> float:
        """Seconds left of `budget`; DeadlineExceededError when none."""
        left = budget.deadline - self.clock()
        if left <= 0:
            raise self.exceeded(budget)
        return left

    def exceeded(self, budget: Budget) -> DeadlineExceededError:
        if self.on_timeout is not None:
            self.on_timeout()
        return DeadlineExceededError(
            f"the query did not finish within {budget.limit_s:.3g} s (query_timeout_s = "
            f"{self.timeout_s:g}, or the call's deadline if shorter); narrow the filter "
            "(a time range, types, a source, object or site) or allow more time"
        )

    @contextmanager
    def scan(self, budget: Budget) -> Iterator[None]:
        """Hold a scan slot for the block, waiting for one while `budget` lasts."""
        with self._lock:
            if self._admitted >= self.max_waiting:
                if self.on_refused is not None:
                    self.on_refused()
                raise TooManyQueriesError(
                    f"{self._admitted} queries no index serves (message_contains, categories) "
                    f"are running or waiting, the most the proxy lets in (query_scan_slots = "
                    f"{self.scan_slots} run at once); retry later, or add a filter an index "
                    "serves (types, source, object, site, a time range)"
                )
            self._admitted += 1
        try:
            if not self._slots.acquire(timeout=self.left(budget)):
                raise self.exceeded(budget)
            try:
                yield
            finally:
                self._slots.release()
        finally:
            with self._lock:
                self._admitted -= 1
