"""gRPC core's own threads, as the kernel names them: a fork is only safe once they are gone.

A child process inherits gRPC core's global state but none of its threads. If one of them held
a lock at the fork (gRPC still shutting down: its timer thread, its event engine's pool), the
child's first channel waits on that lock forever. Once the last channel of the process is
closed, gRPC shuts down and its threads end, but they end asynchronously; `wait_gone` waits for
that. Linux only (names come from /proc); elsewhere there is nothing to wait for.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_TASKS = Path("/proc/self/task")
# Names gRPC gives its threads (the kernel keeps 15 characters: "grpc_global_tim").
_EXACT = frozenset({"event_engine", "lifeguard"})
_PREFIX = "grpc_"
_POLL_S = 0.002


def alive() -> list[str]:
    """The names of gRPC core's threads alive in this process now."""
    names = []
    try:
        tasks = list(_TASKS.iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if name in _EXACT or name.startswith(_PREFIX):
            names.append(name)
    return sorted(names)


def wait_gone(timeout: float) -> list[str]:
    """Wait up to `timeout` seconds for gRPC core's threads to end; the names of those left
    (none: forking now is safe as far as gRPC goes)."""
    deadline = time.monotonic() + timeout
    left = alive()
    while left and time.monotonic() < deadline:
        # A thread's end is not observable but by looking again: poll, briefly.
        time.sleep(_POLL_S)
        left = alive()
    return left


def supported() -> bool:
    """Whether this system names threads where `alive` looks (Linux)."""
    return os.path.isdir(_TASKS)
