"""Helpers of the proxy tests: events, in-memory writers, waiting on conditions, running a
coroutine, a fast retry."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from protoevents.proxy.changes import Change
from protoevents.proxy.config import Settings
from protoevents.recorder.backoff import Backoff
from protoevents.v1 import event_pb2

T = TypeVar("T")
LEADER_ELECTED = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED"
FAST_RETRY = Backoff(initial=0.001, maximum=0.01)


def make_event(**fields: Any) -> event_pb2.Event:
    """A valid event; keyword arguments replace its fields."""
    now = time.time()
    event = event_pb2.Event(
        id=str(uuid.uuid4()),
        type=LEADER_ELECTED,
        message="node-1 became leader",
        source=event_pb2.EventSource(node="node-1", component="cluster-controller"),
        object=event_pb2.ObjectRef(kind="Node", name="node-1"),
        time=Timestamp(seconds=int(now), nanos=int((now % 1) * 1e9)),
    )
    for name, value in fields.items():
        if isinstance(value, Timestamp | event_pb2.EventSource | event_pb2.ObjectRef):
            getattr(event, name).CopyFrom(value)
        elif name == "attributes":
            event.attributes.update(value)
        else:
            setattr(event, name, value)
    return event


_serial = itertools.count()


def make_events(count: int, **fields: Any) -> list[event_pb2.Event]:
    """`count` distinct events (their messages differ, so dedup keeps them all)."""
    if "message" in fields:
        return [make_event(**fields) for _ in range(count)]
    return [
        make_event(message=f"node-1 became leader ({next(_serial)})", **fields)
        for _ in range(count)
    ]


def proxy_settings(data_dir: Path, **changes: Any) -> Settings:
    """Settings of a proxy on a free loopback port with its log in `data_dir`."""
    base = Settings(
        listen="127.0.0.1:0",
        data_dir=data_dir,
        db=f"sqlite:///{data_dir}/events.db",
        shutdown_grace_s=5.0,
    )
    return base.replace(**changes)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `condition()` holds, checking every few milliseconds; fail after `timeout`."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


class MemoryWriter:
    """A writer keeping what it receives; it can be held (gate) or made to fail."""

    def __init__(self, name: str, *, fail_times: int = 0, held: bool = False) -> None:
        self.name = name
        self.batches: list[list[Change]] = []
        self.fail_times = fail_times
        self.attempts = 0
        self.gate = asyncio.Event()
        if not held:
            self.gate.set()
        self.closed = False

    async def write(self, changes: Sequence[Change]) -> None:
        self.attempts += 1
        await self.gate.wait()
        if self.fail_times > 0:
            self.fail_times -= 1
            raise ConnectionError(f"{self.name} is down")
        self.batches.append(list(changes))

    async def close(self) -> None:
        self.closed = True

    @property
    def changes(self) -> list[Change]:
        return [c for batch in self.batches for c in batch]

    @property
    def ids(self) -> list[str]:
        return [c.event.id for c in self.changes]
