"""SqlWriter throughput into SQLite and PostgreSQL against a naive ORM baseline, and a dedup storm.

    python -m bench.bench_sql_writer [--events 50000] [--storm 1000000] [--runs 5] [--postgres URL]

Each run writes fresh events (time-ordered UUIDv7 ids, as recorders make) into an emptied
table through SqlWriter in batches; the baseline adds one ORM object and commits per event,
in the same process. The storm sends `--storm` identical events (new ids, same content)
through Deduplicator.observe_many and SqlWriter in batches and checks that one row with that
count is stored; it is compared with calling `observe` per event (deduplicator alone).
Prints a table of the median events/s of the runs and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from protoevents.proxy.changes import CREATED, Change, merge_repeats
from protoevents.proxy.db import migrate
from protoevents.proxy.db.engine import create_engine
from protoevents.proxy.db.models import EventRow, events
from protoevents.proxy.db.rows import event_to_copy_line, event_to_row, event_to_sqlite_values
from protoevents.proxy.dedup import Deduplicator
from protoevents.proxy.writers.sql import SqlWriter
from protoevents.v1 import event_pb2

LEADER_ELECTED = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED"


def make_events(count: int, start_ns: int) -> list[event_pb2.Event]:
    """Events as the dispatcher hands them over: 50 nodes, a few attributes, small data."""
    made = []
    for n in range(count):
        at = start_ns + n * 10_000
        event = event_pb2.Event(
            id=str(uuid.UUID(int=(at // 1_000_000) << 80 | 0x7 << 76 | 0b10 << 62 | n)),
            type=LEADER_ELECTED,
            severity=2,
            category="cluster",
            message=f"node-{n % 50} was elected leader for term {n}",
            count=1,
        )
        event.source.node = f"node-{n % 50}"
        event.source.component = "cluster-controller"
        event.object.kind = "Node"
        event.object.name = f"node-{n % 50}"
        event.attributes["term"] = str(n)
        event.data.update({"votes": 3, "term": n})
        event.time.FromNanoseconds(at)
        event.first_time.CopyFrom(event.time)
        event.last_time.CopyFrom(event.time)
        event.received_time.FromNanoseconds(at + 1_000_000)
        made.append(event)
    return made


def per_second(count: int, action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return count / (time.perf_counter() - started)


def empty(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(events.delete())


def bench_writer(engine: Engine, count: int, batch: int, start_ns: int) -> float:
    writer = SqlWriter(engine, name="bench")
    changes = [Change(CREATED, event) for event in make_events(count, start_ns)]
    empty(engine)

    async def run() -> None:
        for at in range(0, count, batch):
            await writer.write(changes[at : at + batch])
        await writer.close()

    return per_second(count, lambda: asyncio.run(run()))


def bench_naive(engine: Engine, count: int, start_ns: int) -> float:
    rows = [event_to_row(event) for event in make_events(count, start_ns)]
    empty(engine)

    def run() -> None:
        with Session(engine) as session:
            for row in rows:
                session.add(EventRow(**row))
                session.commit()

    return per_second(count, run)


def storm_events(count: int, start_ns: int) -> list[event_pb2.Event]:
    """`count` occurrences of one event: new ids and times, the same content."""
    made = make_events(count, start_ns)
    for event in made:
        event.message = event.source.node = event.object.name = "node-7"
        event.attributes["term"] = "1"
        event.data.update({"term": 1})
    return made


def bench_storm(engine: Engine, count: int, batch: int, start_ns: int) -> float:
    """Events/s of `count` identical events, arriving in batches of `batch`, through the
    deduplicator and the SQL writer, the changes batched as the dispatcher does (a write
    at 1,000 changes or 200 ms after the first pending one, repeats of an id merged)."""
    pool = storm_events(batch, start_ns)
    empty(engine)
    writer = SqlWriter(engine, name="storm")
    dedup = Deduplicator()

    async def run() -> None:
        pending: list[Change] = []
        first_pending = 0.0
        for at in range(0, count, batch):
            if not pending:
                first_pending = time.monotonic()
            pending += dedup.observe_many(pool[: count - at], start_ns + at)
            if len(pending) >= 1000 or time.monotonic() - first_pending >= 0.2:
                await writer.write(merge_repeats(pending))
                pending = []
        await writer.write(merge_repeats(pending))
        await writer.close()

    rate = per_second(count, lambda: asyncio.run(run()))
    with engine.connect() as connection:
        rows = connection.execute(sa.select(events.c.count)).scalars().all()
    if rows != [count]:
        raise AssertionError(f"storm of {count:,} stored counts {rows[:5]}, not one row")
    return rate


def bench_observe(count: int, batch: int, start_ns: int) -> tuple[float, float]:
    """Events/s of the deduplicator alone in a storm: `observe` per event, `observe_many`."""
    pool = storm_events(batch, start_ns)
    one, many = Deduplicator(), Deduplicator()

    def single() -> None:
        for at in range(0, count, batch):
            for event in pool:
                one.observe(event, start_ns + at)

    def batched() -> None:
        for at in range(0, count, batch):
            many.observe_many(pool, start_ns + at)

    return per_second(count, single), per_second(count, batched)


def bench_conversion(count: int) -> dict[str, float]:
    sample = make_events(count, time.time_ns())
    return {
        name: 1e6 / per_second(count, lambda f=convert: [f(e) for e in sample])  # type: ignore[misc]
        for name, convert in (
            ("event_to_row", event_to_row),
            ("event_to_copy_line", event_to_copy_line),
            ("event_to_sqlite_values", event_to_sqlite_values),
        )
    }


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"protoevents_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


Row = tuple[str, float, str]


def measure(label: str, url: str, args: argparse.Namespace) -> list[Row]:
    engine = create_engine(url)
    migrate.upgrade(engine)
    start = time.time_ns()
    fast, naive, storm = [], [], []
    for run in range(args.runs):
        at = start + run * 10**13
        fast.append(bench_writer(engine, args.events, args.batch, at))
        naive.append(bench_naive(engine, args.naive_events, at + 10**12))
        storm.append(bench_storm(engine, args.storm, args.batch, at + 2 * 10**12))
    engine.dispose()
    fast_median, naive_median = statistics.median(fast), statistics.median(naive)
    return [
        (f"{label} SqlWriter", fast_median, f"{fast_median / naive_median:.0f}x naive ORM"),
        (f"{label} naive ORM", naive_median, "1x"),
        (f"{label} dedup storm", statistics.median(storm), f"{args.storm:,} events, one row"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per SqlWriter run")
    parser.add_argument("--naive-events", type=int, default=2_000, help="events per naive run")
    parser.add_argument("--storm", type=int, default=1_000_000, help="events per storm run")
    parser.add_argument("--batch", type=int, default=1_000, help="events per batch")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "PROTOEVENTS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        help="server to create a scratch database on; empty to skip PostgreSQL",
    )
    args = parser.parse_args()
    for name, micros in bench_conversion(20_000).items():
        print(f"{name:<24} {micros:5.2f} µs/event")
    observe = [bench_observe(args.storm, args.batch, time.time_ns()) for _ in range(args.runs)]
    single = statistics.median(one for one, _ in observe)
    batched = statistics.median(many for _, many in observe)
    rows: list[Row] = [
        ("Deduplicator.observe", single, "1x"),
        ("Deduplicator.observe_many", batched, f"{batched / single:.1f}x observe"),
    ]
    with tempfile.TemporaryDirectory() as folder:
        rows += measure("SQLite", f"sqlite:///{Path(folder) / 'bench.db'}", args)
    if args.postgres:
        with postgres_database(args.postgres) as url:
            rows += measure("PostgreSQL", url, args)
    print(f"\n{'':<28} {'events/s':>10}   (medians of {args.runs}, batches of {args.batch:,})")
    for name, rate, note in rows:
        print(f"{name:<28} {rate:>10,.0f}   {note}")


if __name__ == "__main__":
    main()
