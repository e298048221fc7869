"""Jittered exponential backoff, for the recorder's reconnects and the proxy's retries."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Attempt n (from 0) waits a random 50-100 % of min(maximum, initial * 2**n)."""

    initial: float = 0.05
    maximum: float = 5.0

    def delay(self, attempt: int) -> float:
        ceiling: float = min(self.maximum, self.initial * 2.0 ** min(attempt, 32))
        return random.uniform(ceiling / 2, ceiling)


class Retries:
    """The attempts since the last success, and the delay before the next one."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.attempt = 0

    def next_delay(self) -> float:
        delay = self.backoff.delay(self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return delay

    def reset(self) -> None:
        self.attempt = 0
