"""A clock the alert tests move by hand, and stored events received at its time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from protoevents.proxy.changes import CREATED, UPDATED, Change
from protoevents.v1 import event_pb2
from tests.support.events import BASE_MICROS, repeated, stored_event


@dataclass
class FakeClock:
    """Seconds on time.time's scale, from 2026-01-01; `advance` moves them on."""

    now: float = BASE_MICROS / 1e6

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def created(clock: FakeClock, n: int = 0, **fields: str) -> Change:
    """A new stored event received now by `clock`."""
    event = stored_event(n, **fields)  # type: ignore[arg-type]
    event.received_time.FromNanoseconds(round(clock.now * 1e9))
    return Change(CREATED, event)


def updated(change: Change, count: int) -> Change:
    """A dedup update of `change`'s event raising its count to `count`."""
    return Change(UPDATED, repeated(change.event, count, later_ms=count))


class _Forced:
    """An event asking for an alert, until Event has its `alert` field."""

    alert = True

    def __init__(self, event: event_pb2.Event) -> None:
        self._event = event

    def __getattr__(self, name: str) -> Any:
        return getattr(self._event, name)


def forced(change: Change) -> Change:
    """`change` with its event asking for an alert (Event.alert)."""
    if "alert" in event_pb2.Event.DESCRIPTOR.fields_by_name:
        setattr(change.event, "alert", True)  # noqa: B010
        return change
    return Change(change.kind, cast(event_pb2.Event, _Forced(change.event)))
