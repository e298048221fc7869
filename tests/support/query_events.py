"""Stored events for the query tests: one at a known second, and a table filled by doubling."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.engine import Engine

from protoevents.proxy.changes import CREATED, Change
from protoevents.proxy.writers.sql import SqlWriter
from protoevents.v1 import event_pb2
from tests.support.ingest_helpers import make_event

BASE = 1_700_000_000


def stored_event(second: int, **fields: Any) -> event_pb2.Event:
    """A completed event, as the proxy stores it, at BASE + `second`."""
    fields.setdefault("severity", 2)
    fields.setdefault("category", "cluster")
    event = make_event(time=Timestamp(seconds=BASE + second, nanos=5000), **fields)
    event.count = 1
    for name in ("first_time", "last_time", "received_time"):
        getattr(event, name).CopyFrom(event.time)
    return event


def fill(engine: Engine, doublings: int) -> str:
    """2**doublings events in `events` (copies of one, fresh ids); the first one's id."""
    first = stored_event(1, message="leader elected")
    SqlWriter(engine).write_blocking([Change(CREATED, first)])  # type: ignore[arg-type]
    fresh = (
        "md5(random()::text || clock_timestamp()::text)"
        if engine.dialect.name == "postgresql"
        else "lower(hex(randomblob(16)))"
    )
    with engine.begin() as connection:
        names = [c.name for c in sa.Table("events", sa.MetaData(), autoload_with=connection).c]
        rest = ", ".join(n for n in names if n != "id")
        for _ in range(doublings):
            connection.execute(
                sa.text(f"INSERT INTO events (id, {rest}) SELECT {fresh}, {rest} FROM events")
            )
    return first.id
