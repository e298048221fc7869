"""Demo data: a realistic, deduplicated fill of the events table that wipes what was there."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from protoevents.proxy.changes import CREATED, Change
from protoevents.proxy.db.models import events
from protoevents.proxy.demo import demo_events, fill_demo
from protoevents.proxy.writers.sql import SqlWriter
from protoevents.recorder.registry import Registry
from tests.support.events import stored_event

NOW_NS = 1_767_225_600 * 1_000_000_000


def test_demo_fill_replaces_the_events_with_realistic_ones(migrated_engine: Engine) -> None:
    SqlWriter(migrated_engine).write_blocking([Change(CREATED, stored_event(1, message="old"))])
    registry = Registry.builtin()
    stored = fill_demo(migrated_engine, registry, count=1500, seed=3, now_ns=NOW_NS)
    with migrated_engine.connect() as connection:
        rows = connection.execute(sa.select(events)).mappings().all()
    assert len(rows) == stored
    assert "old" not in {row["message"] for row in rows}
    # Repeats were merged: fewer rows than occurrences, the counts add up to all of them.
    assert 300 < len(rows) < 1500
    assert sum(row["count"] for row in rows) == 1500
    assert max(row["count"] for row in rows) > 1
    assert {row["type"] for row in rows} <= {t.name for t in registry}
    assert len({row["type"] for row in rows}) >= 15
    assert len({row["source_node"] for row in rows}) == 6
    assert {row["severity"] for row in rows} >= {2, 3, 4, 5}
    assert len({row["object_kind"] for row in rows}) >= 4
    times = [row["time"].timestamp() for row in rows]
    assert max(times) - min(times) > 12 * 3600
    assert max(times) <= NOW_NS / 1e9


def test_demo_is_reproducible_from_its_seed() -> None:
    registry = Registry.builtin()
    first = demo_events(registry, 300, seed=7, now_ns=NOW_NS)
    again = demo_events(registry, 300, seed=7, now_ns=NOW_NS)
    other = demo_events(registry, 300, seed=8, now_ns=NOW_NS)
    assert first == again
    assert first != other
    assert len(first) == 300
