"""Counting what is logged at most once per interval: repeats between two lines are counted
and told in the next one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Throttle:
    """Counts per key, reported at most once per `interval_s` of `clock` per key."""

    interval_s: float
    clock: Callable[[], float]
    _last: dict[str, float] = field(default_factory=dict)
    _pending: Counter[str] = field(default_factory=Counter)

    def add(self, key: str, count: int) -> int | None:
        """The count to report now (everything since the last report), or None."""
        self._pending[key] += count
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            return None
        self._last[key] = now
        return self._pending.pop(key)
