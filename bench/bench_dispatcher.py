"""The dispatcher alone: the log's records handed to several writers that do nothing.

    python -m bench.bench_dispatcher [--events 200000] [--batch 1000] [--writers 3] [--runs 5]

Each run fills a write-ahead log with `--events` distinct events in records of `--batch`
(as ingest logs them), then times a Dispatcher feeding `--writers` writers that keep nothing
plus a hub writer with no watcher following the first of them (as `serve` runs the SQL
writer and the watch writer), from the start of the log until every bookmark is at its end.
Reported: the median wall time, CPU per event and events/s over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from protoevents.proxy import changelog
from protoevents.proxy.changes import Change, Writer
from protoevents.proxy.dispatcher import Dispatcher
from protoevents.proxy.wal import WriteAheadLog
from protoevents.proxy.watch.hub import ChangeHub
from protoevents.proxy.writers.watch import HubWriter
from protoevents.v1 import event_pb2

LEADER_ELECTED = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED"


class NullWriter:
    """Takes every batch and keeps nothing but its count."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.changes = 0

    async def write(self, changes: Sequence[Change]) -> None:
        self.changes += len(changes)

    async def close(self) -> None:
        pass


def record(batch: int, first: int) -> bytes:
    events = []
    for n in range(first, first + batch):
        event = event_pb2.Event(
            id=str(uuid.uuid4()),
            type=LEADER_ELECTED,
            message=f"node-{n} became leader",
            source=event_pb2.EventSource(node="node-1", component="cluster-controller"),
            object=event_pb2.ObjectRef(kind="Node", name=f"node-{n}"),
            time=Timestamp(seconds=1_700_000_000 + n),
            received_time=Timestamp(seconds=1_700_000_000 + n),
            count=1,
        )
        event.first_time.CopyFrom(event.time)
        event.last_time.CopyFrom(event.time)
        events.append(event)
    return changelog.encode((e.SerializeToString() for e in events), [], [e.id for e in events])


async def one_run(folder: Path, events: int, batch: int, writers: int) -> tuple[float, float]:
    """Wall and CPU seconds to feed every writer the whole log."""
    wal = await WriteAheadLog.open(folder, fsync="off")
    for first in range(0, events, batch):
        wal.submit(record(batch, first))
    await wal.barrier()
    nulls = [NullWriter(f"w{n}") for n in range(writers)]
    all_writers: list[Writer] = [*nulls, HubWriter(ChangeHub())]
    dispatcher = Dispatcher(wal, all_writers, follows={"watch": nulls[0].name})
    wall, cpu = time.perf_counter(), time.process_time()
    dispatcher.start()
    names = [w.name for w in all_writers]
    while any(wal.bookmark(name) < wal.end for name in names):
        await asyncio.sleep(0.001)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await dispatcher.stop()
    await wal.close()
    assert all(n.changes == events for n in nulls)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    walls, cpus = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as folder:
            wall, cpu = asyncio.run(one_run(Path(folder), args.events, args.batch, args.writers))
        walls.append(wall)
        cpus.append(cpu)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    print(
        f"{args.events:,} events to {args.writers} writers + an idle watch writer: "
        f"{wall:.3f} s, {cpu / args.events * 1e6:.2f} µs CPU per event, "
        f"{args.events / wall:,.0f} events/s (medians of {args.runs})"
    )


if __name__ == "__main__":
    main()
