"""Demo data: wipes the events table and fills it with realistic events of the built-in types."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from typing import cast

from sqlalchemy.engine import Engine

from protoevents.proxy.db.models import events
from protoevents.proxy.dedup import Deduplicator
from protoevents.proxy.writers.sql import write_changes
from protoevents.recorder.registry import EventType, Registry
from protoevents.v1 import event_pb2, severity_pb2

NODES = tuple(f"node-{n}" for n in range(1, 7))
NICS = ("eth0", "eth1", "ens4f0")
WORKFLOWS = ("pcr-amplification", "plate-wash", "sample-prep", "sequencing-run")
INSTRUMENTS = ("spectrometer-a", "spectrometer-b", "thermocycler-1", "liquid-handler-2")
DAY_NS = 86_400 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class _Subject:
    component: str
    kind: str
    namespace: str
    name: str
    message: str


def _subject(event_type: EventType, node: str, rng: random.Random) -> _Subject:
    """Who emits an event of this type and what it is about, like a real fleet would."""
    what = event_type.description.rstrip(".")
    if event_type.service == "cluster":
        return _Subject("cluster-controller", "Node", "", node, f"{what}: {node}")
    if event_type.service == "node-agent":
        nic = rng.choice(NICS)
        return _Subject("node-agent", "NIC", node, nic, f"{what}: {nic} on {node}")
    if event_type.service == "instrument":
        instrument = rng.choice(INSTRUMENTS)
        return _Subject(
            "instrument-daemon", "Instrument", "lab-a", instrument, f"{what}: {instrument}"
        )
    if event_type.category == "workflow":
        workflow = rng.choice(WORKFLOWS)
        return _Subject("lab-scheduler", "Workflow", "lab-a", workflow, f"{what}: {workflow}")
    return _Subject("lab-scheduler", "LabNode", "lab-a", node, f"{what}: {node}")


def _uuid7(unix_ms: int, rng: random.Random) -> str:
    """A UUIDv7 (time-ordered) from a millisecond time and the seeded generator."""
    value = (unix_ms & (2**48 - 1)) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64
    value |= 0b10 << 62 | rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def demo_events(
    registry: Registry, count: int, seed: int = 0, now_ns: int | None = None
) -> list[tuple[event_pb2.Event, int]]:
    """`count` raw occurrences over the day before `now_ns`, oldest first, with the time
    each was received: bursts of repeats, mostly the types' default severities."""
    rng = random.Random(seed)
    now_ns = time.time_ns() if now_ns is None else now_ns
    types = list(registry)
    if not types:
        raise ValueError("the registry holds no event types")
    # Warnings and errors are rarer than routine events, as in a healthy fleet.
    weights = [{1: 3, 2: 10, 3: 4, 4: 2, 5: 1}.get(t.severity, 1) for t in types]
    occurrences: list[tuple[event_pb2.Event, int]] = []
    while len(occurrences) < count:
        event_type = rng.choices(types, weights)[0]
        node = rng.choice(NODES)
        subject = _subject(event_type, node, rng)
        at = now_ns - rng.randrange(DAY_NS)
        severity = event_type.severity
        if rng.random() < 0.05:
            severity = min(severity + 1, 5)
        burst = 1 if rng.random() < 0.8 else rng.randint(2, 40)
        for repeat in range(min(burst, count - len(occurrences))):
            at_repeat = at + repeat * rng.randrange(50_000_000, 400_000_000)
            event = event_pb2.Event(
                id=_uuid7(at_repeat // 1_000_000, rng),
                type=event_type.name,
                severity=cast("severity_pb2.Severity.ValueType", severity),
                category=event_type.category,
                message=subject.message,
            )
            event.source.node = node
            event.source.component = subject.component
            event.object.kind = subject.kind
            event.object.namespace = subject.namespace
            event.object.name = subject.name
            event.attributes["service"] = event_type.service
            if subject.kind == "NIC":
                event.attributes["nic"] = subject.name
            event.data.update({"attempt": repeat + 1, "site": "lab-a"})
            event.time.FromNanoseconds(at_repeat)
            occurrences.append((event, at_repeat + rng.randrange(1_000_000, 30_000_000)))
    occurrences.sort(key=lambda pair: pair[1])
    return occurrences


def fill_demo(
    engine: Engine,
    registry: Registry,
    count: int = 2_000,
    seed: int = 0,
    now_ns: int | None = None,
) -> int:
    """Delete every stored event, then store `count` demo occurrences deduplicated as the
    proxy would (repeats become counts); returns the number of rows stored."""
    dedup = Deduplicator()
    changes = [dedup.observe(event, at) for event, at in demo_events(registry, count, seed, now_ns)]
    with engine.begin() as connection:
        connection.execute(events.delete())
        result = write_changes(connection, changes)
    return result.inserted
