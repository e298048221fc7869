"""Counting sinks in child processes: they receive on a loopback port and count, nothing else."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

Counter: TypeAlias = "Synchronized[int]"  # a shared 64-bit integer: counter.value

# A sink's main: bind a loopback port, send it on the connection, count into the counter.
SinkMain = Callable[[Counter, Connection], None]


def add(counter: Counter, count: int) -> None:
    with counter.get_lock():
        counter.value += count


@contextmanager
def counting_sink(main: SinkMain, start_timeout: float = 60) -> Iterator[tuple[int, Counter]]:
    """Run `main` in a fresh (spawned) process; yields its port and its counter."""
    context = multiprocessing.get_context("spawn")
    counter: Counter = context.Value("q", 0)
    parent, child = context.Pipe()
    process = context.Process(target=main, args=(counter, child), daemon=True)
    process.start()
    try:
        if not parent.poll(start_timeout):
            raise RuntimeError(f"the sink {main.__name__} did not start")
        yield parent.recv(), counter
    finally:
        process.kill()
        process.join(30)
