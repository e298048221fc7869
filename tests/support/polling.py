"""Waiting, in a test's own thread, until a condition holds."""

from __future__ import annotations

import time
from collections.abc import Callable

DEADLINE = 30.0


def poll(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.02) -> None:
    """Wait until `condition()` holds, checking `every` seconds; fail naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def eventually(check: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
