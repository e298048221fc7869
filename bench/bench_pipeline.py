"""End to end: one recorder -> `protoevents serve` (fsync=batch) -> SQLite / PostgreSQL.

    python -m bench.bench_pipeline [--events 100000] [--runs 3] [--postgres URL]

Each run records `--events` distinct events from one recorder in this process and times
until every one is committed in the database (polled with COUNT(*)); the proxy is a separate
process. Also reports p50/p99 record-to-committed latency of single events sent at a slow rate,
and the naive baseline (an ORM insert + commit per event) in the same process, for the ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import sqlalchemy as sa

from bench.bench_sql_writer import bench_naive, postgres_database
from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from recorder import Recorder
from server.db import migrate
from server.db.engine import create_engine

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def proxy(url: str, data: Path) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--listen", "127.0.0.1:0",
         "--db", url, "--data-dir", str(data), "--fsync", "batch"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        yield process.stdout.readline().split()[-1]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def stored(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM events")).scalar_one())


def is_stored(engine: sa.Engine, event_id: str) -> bool:
    with engine.connect() as connection:
        query = sa.text("SELECT 1 FROM events WHERE id = :id")
        return connection.execute(query, {"id": event_id}).first() is not None


def wait_stored(engine: sa.Engine, count: int, last_id: str, timeout: float = 300) -> None:
    """Wait until the last recorded event is committed (one recorder delivers in order, so
    the rest are too), then check that all `count` are. A primary-key lookup, not COUNT(*):
    polling a count of a growing table would bill the database for the benchmark's polling."""
    deadline = time.monotonic() + timeout
    while not is_stored(engine, last_id):
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {stored(engine)} of {count} events stored")
        time.sleep(0.01)
    if (found := stored(engine)) != count:
        raise AssertionError(f"{found} events stored, {count} recorded")


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def database_processes(url: str) -> list[psutil.Process]:
    """The PostgreSQL backends serving the benchmark's database (none for SQLite, which runs
    inside the proxy)."""
    if not url.startswith("postgresql"):
        return []
    name = url.rsplit("/", 1)[1]
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if name in " ".join(process.info["cmdline"] or ()):
            found.append(process)
    return found


class CpuBudget:
    """CPU time per event of the recorder (this process), the proxy and the database: robust
    to other load on the machine, unlike events/s, and it bounds what 2 cores can do."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.me = psutil.Process()
        self.proxy = next(c for c in self.me.children() if "serve" in " ".join(c.cmdline()))
        self.database: list[psutil.Process] = []
        self.started = (0.0, 0.0, 0.0)
        self.samples: list[tuple[float, float, float]] = []

    def _now(self) -> tuple[float, float, float]:
        return cpu_seconds([self.me]), cpu_seconds([self.proxy]), cpu_seconds(self.database)

    def start(self) -> None:
        self.database = database_processes(self.url)
        self.started = self._now()

    def stop(self, events: int) -> None:
        spent = (b - a for a, b in zip(self.started, self._now(), strict=True))
        me, proxy, database = (seconds * 1e6 / events for seconds in spent)
        self.samples.append((me, proxy, database))

    def medians(self) -> tuple[float, float, float]:
        me, proxy, database = ([s[i] for s in self.samples] for i in range(3))
        return statistics.median(me), statistics.median(proxy), statistics.median(database)


def run_backend(label: str, url: str, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory() as tmp, proxy(url, Path(tmp) / "data") as address:
        engine = create_engine(url)
        recorder = Recorder(
            component="bench", event_types=[ClusterEventType], proxy=address,
            spool_dir=Path(tmp) / "spool", queue_size=1_000_000,
        )  # fmt: skip
        rates, total = [], 0
        budget = CpuBudget(url)
        for run in range(args.runs):
            budget.start()
            start = time.perf_counter()
            for i in range(args.events):
                last_id = recorder.record(ELECTED, f"run {run} event {i}")
            total += args.events
            wait_stored(engine, total, last_id)
            rates.append(args.events / (time.perf_counter() - start))
            budget.stop(args.events)
        latencies = []
        for i in range(args.latency_samples):
            start = time.perf_counter()
            last_id = recorder.record(ELECTED, f"latency {i}")
            total += 1
            recorder.flush(10)
            wait_stored(engine, total, last_id)
            latencies.append((time.perf_counter() - start) * 1000)
        recorder.close(30)
        engine.dispose()
    naive_engine = create_engine(url)
    try:
        naive = bench_naive(naive_engine, args.naive_events, time.time_ns() + 10**12)
    finally:
        naive_engine.dispose()
    rate = statistics.median(rates)
    q = statistics.quantiles(latencies, n=100)
    recorder_us, proxy_us, database_us = budget.medians()
    total_us = recorder_us + proxy_us + database_us
    return [
        (
            f"{label}: recorder -> proxy -> committed",
            f"{rate:,.0f} events/s",
            f"{rate / naive:.0f}x",
        ),
        (f"{label}: naive ORM insert + commit per event", f"{naive:,.0f} events/s", "1x"),
        (f"{label}: record-to-committed p50 / p99", f"{q[49]:.0f} / {q[98]:.0f} ms", ""),
        (
            f"{label}: CPU per event: recorder / proxy / database",
            f"{recorder_us:.1f} / {proxy_us:.1f} / {database_us:.1f} µs",
            "",
        ),
        (
            f"{label}: what 2 cores allow at that CPU cost",
            f"{2e6 / total_us:,.0f} events/s",
            "",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--naive-events", type=int, default=2_000)
    parser.add_argument(
        "--postgres", default=os.environ.get("PROTOEVENTS_BENCH_POSTGRES", DEFAULT_POSTGRES)
    )
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/events.db"
        migrate.upgrade(url)
        rows += run_backend("SQLite", url, args)
    if not args.skip_postgres:
        with postgres_database(args.postgres) as url:
            migrate.upgrade(url)
            rows += run_backend("PostgreSQL", url, args)
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'median':>20}  vs naive")
    for label, value, ratio in rows:
        print(f"{label:<{width}}  {value:>20}  {ratio}")


if __name__ == "__main__":
    main()
