"""Throughput as recorders multiply (separate processes) and as the recorder batch size grows.

    python -m bench.bench_scaling [--recorders 1,4,16] [--batch-sizes 10,100,1000,5000]
        [--events 100000] [--runs 3] [--db URL]

Each point starts `protoevents serve` (fsync=batch) on a fresh database (SQLite unless `--db`)
and times from the start signal until every event is committed. Recorders: `--events` in all,
shared among N processes, each with its own Recorder, started before the clock and reused
across runs. Batch size: one recorder in this process with `Recorder(batch_size=B)`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

import sqlalchemy as sa

from bench.bench_pipeline import ELECTED, is_stored, proxy, stored
from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.proxy.db import migrate
from protoevents.proxy.db.engine import create_engine
from protoevents.recorder import Recorder

Status = Callable[[str], None]


def _recorder_main(index: int, address: str, spool: str, conn: Connection) -> None:
    """Child process: one recorder; per command (run, count) records `count` distinct events,
    waits until the proxy acknowledged them and answers with the id of the last one."""
    recorder = Recorder(
        component=f"bench-{index}", event_types=[ClusterEventType], proxy=address,
        spool_dir=spool, queue_size=1_000_000,
    )  # fmt: skip
    conn.send("ready")
    while (command := conn.recv()) is not None:
        run, count = command
        last_id = ""
        for i in range(count):
            last_id = recorder.record(ELECTED, f"recorder {index} run {run} event {i}")
        if not recorder.drain(600):
            raise RuntimeError(f"recorder {index} not delivered: {recorder.stats()}")
        conn.send(last_id)
    recorder.close(30)


def wait_all_stored(engine: sa.Engine, last_ids: Sequence[str], total: int) -> None:
    """Each recorder delivers in order: once the last event of each is committed, all are."""
    deadline = time.monotonic() + 600
    pending = list(last_ids)
    while pending:
        pending = [event_id for event_id in pending if not is_stored(engine, event_id)]
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"only {stored(engine)} of {total} events stored")
        time.sleep(0.01)
    if (found := stored(engine)) != total:
        raise AssertionError(f"{found} events stored, {total} recorded")


def fresh_sqlite(folder: Path) -> str:
    url = f"sqlite:///{folder}/events.db"
    migrate.upgrade(url)
    return url


def by_recorders(
    url: str, recorders: int, events: int, runs: int, status: Status = lambda _: None
) -> list[float]:
    """Events/s committed per run, `events` shared among `recorders` processes."""
    share = events // recorders
    # Children fork from a server process that imported this module once, without gRPC
    # threads running: much quicker to start than spawned interpreters, and fork-safe.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bench.bench_scaling"])
    rates = []
    with tempfile.TemporaryDirectory() as tmp, proxy(url, Path(tmp) / "data") as address:
        engine = create_engine(url)
        pipes, workers = [], []
        try:
            status(f"{recorders} recorders: starting")
            for index in range(recorders):
                parent, child = context.Pipe()
                spool = str(Path(tmp) / f"spool-{index}")
                worker = context.Process(
                    target=_recorder_main, args=(index, address, spool, child), daemon=True
                )
                worker.start()
                pipes.append(parent)
                workers.append(worker)
            for pipe in pipes:
                if not pipe.poll(300) or pipe.recv() != "ready":
                    raise RuntimeError("a recorder process did not start")
            total = stored(engine)
            for run in range(runs):
                status(f"{recorders} recorders: run {run + 1}/{runs}")
                started = time.perf_counter()
                for pipe in pipes:
                    pipe.send((run, share))
                last_ids = [pipe.recv() for pipe in pipes]
                total += share * recorders
                wait_all_stored(engine, last_ids, total)
                rates.append(share * recorders / (time.perf_counter() - started))
            for pipe in pipes:
                pipe.send(None)
        finally:
            for worker in workers:
                worker.join(60)
                if worker.is_alive():
                    worker.kill()
            engine.dispose()
    return rates


def by_batch_size(
    url: str, batch_size: int, events: int, runs: int, status: Status = lambda _: None
) -> list[float]:
    """Events/s committed per run from one recorder sending batches of `batch_size`."""
    rates = []
    with tempfile.TemporaryDirectory() as tmp, proxy(url, Path(tmp) / "data") as address:
        engine = create_engine(url)
        recorder = Recorder(
            component="bench", event_types=[ClusterEventType], proxy=address,
            spool_dir=Path(tmp) / "spool", queue_size=1_000_000, batch_size=batch_size,
        )  # fmt: skip
        total = stored(engine)
        for run in range(runs):
            status(f"batches of {batch_size}: run {run + 1}/{runs}")
            started = time.perf_counter()
            last_id = ""
            for i in range(events):
                last_id = recorder.record(ELECTED, f"run {run} event {i}")
            total += events
            wait_all_stored(engine, [last_id], total)
            rates.append(events / (time.perf_counter() - started))
        recorder.close(30)
        engine.dispose()
    return rates


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recorders", type=_numbers, default=[1, 4, 16])
    parser.add_argument("--batch-sizes", type=_numbers, default=[10, 100, 1000, 5000])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--db", help="database URL (migrated first); default a fresh SQLite")
    args = parser.parse_args()
    print(f"{args.events:,} events per run, median of {args.runs} runs, events/s committed")
    points: list[tuple[str, Callable[[str], list[float]]]] = [
        *(
            (f"{n} recorders", lambda url, n=n: by_recorders(url, n, args.events, args.runs))
            for n in args.recorders
        ),
        *(
            (f"batch size {b}", lambda url, b=b: by_batch_size(url, b, args.events, args.runs))
            for b in args.batch_sizes
        ),
    ]
    for label, measure in points:
        with tempfile.TemporaryDirectory() as tmp:
            if args.db:
                migrate.upgrade(args.db)
            url = args.db or fresh_sqlite(Path(tmp))
            rate = statistics.median(measure(url))
        print(f"{label:<20} {rate:>12,.0f}")


if __name__ == "__main__":
    main()
