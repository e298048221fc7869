"""End to end: one recorder -> `protoevents serve` (fsync=batch) -> SQLite / PostgreSQL.

    python -m bench.bench_pipeline [--events 100000] [--runs 3] [--postgres URL]

Each run records `--events` distinct events from one recorder in this process and times
until every one is committed in the database (the last one looked up, then all counted); the
proxy is a separate process. Also reports p50/p99 record-to-committed latency of single events
sent at a slow rate, and two peers run in the same process for the ratio: the naive baseline
(an ORM insert + commit per event) and `--unary-events` events sent with one unary RecordBatch
call each to the same proxy.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import sqlalchemy as sa

from bench.bench_sql_writer import bench_naive, postgres_database
from bench.peers.unary import record_one_by_one
from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.proxy.db import migrate
from protoevents.proxy.db.engine import create_engine
from protoevents.recorder import Recorder

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def proxy(url: str, data: Path, flags: Sequence[str] = ()) -> Iterator[str]:
    """`protoevents serve` (fsync=batch: persisted before acknowledged) in a child process;
    yields its address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "protoevents.proxy.cli", "serve", "--listen", "127.0.0.1:0",
         "--db", url, "--data-dir", str(data), "--fsync", "batch", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        if not first.startswith("listening on "):
            raise RuntimeError(f"protoevents serve did not start (printed {first!r})")
        yield first.split()[-1]
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
    inside the proxy). Only `postgres` processes: the proxy's own command line names the
    database too, and must not be billed twice."""
    if not url.startswith("postgresql"):
        return []
    name = url.rsplit("/", 1)[1]
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] != "postgres":
            continue
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


Status = Callable[[str], None]


@dataclass
class PipelineResult:
    """What one backend measured: per-run samples, so callers take medians and ratios."""

    rates: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    unary: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    cpu_us: list[tuple[float, float, float]] = field(default_factory=list)

    def cpu_medians(self) -> tuple[float, float, float]:
        me, proxy, database = ([s[i] for s in self.cpu_us] for i in range(3))
        return statistics.median(me), statistics.median(proxy), statistics.median(database)


def run_backend(
    url: str,
    *,
    events: int,
    runs: int,
    latency_samples: int,
    naive_events: int,
    unary_events: int = 0,
    status: Status = lambda _: None,
) -> PipelineResult:
    """Per run, against one `serve`: `events` from one recorder until all are committed, then
    the naive baseline (ORM insert + commit per event) and, with `unary_events`, one unary
    RecordBatch call per event until committed; then single-event latencies."""
    result = PipelineResult()
    with tempfile.TemporaryDirectory() as tmp, proxy(url, Path(tmp) / "data") as address:
        engine = create_engine(url)
        recorder = Recorder(
            component="bench", event_types=[ClusterEventType], proxy=address,
            spool_dir=Path(tmp) / "spool", queue_size=1_000_000,
        )  # fmt: skip
        total = 0
        budget = CpuBudget(url)
        for run in range(runs):
            status(f"run {run + 1}/{runs}: recorder")
            budget.start()
            start = time.perf_counter()
            for i in range(events):
                last_id = recorder.record(ELECTED, f"run {run} event {i}")
            total += events
            wait_stored(engine, total, last_id)
            result.rates.append(events / (time.perf_counter() - start))
            budget.stop(events)
            if unary_events:
                status(f"run {run + 1}/{runs}: one unary call per event")
                start = time.perf_counter()
                last_id = record_one_by_one(address, unary_events, f"unary {run}")
                total += unary_events
                wait_stored(engine, total, last_id)
                result.unary.append(unary_events / (time.perf_counter() - start))
        status("latency")
        for i in range(latency_samples):
            start = time.perf_counter()
            last_id = recorder.record(ELECTED, f"latency {i}")
            total += 1
            recorder.flush(10)
            wait_stored(engine, total, last_id)
            result.latencies_ms.append((time.perf_counter() - start) * 1000)
        recorder.close(30)
        engine.dispose()
    result.cpu_us = budget.samples
    status("naive ORM baseline")
    naive_engine = create_engine(url)
    try:
        for run in range(runs):
            at = time.time_ns() + (run + 1) * 10**12
            result.naive.append(bench_naive(naive_engine, naive_events, at))
    finally:
        naive_engine.dispose()
    return result


def table_rows(label: str, result: PipelineResult) -> list[tuple[str, str, str]]:
    rate, naive = statistics.median(result.rates), statistics.median(result.naive)
    q = statistics.quantiles(result.latencies_ms, n=100)
    recorder_us, proxy_us, database_us = result.cpu_medians()
    total_us = recorder_us + proxy_us + database_us
    rows = [
        (
            f"{label}: recorder -> proxy -> committed",
            f"{rate:,.0f} events/s",
            f"{rate / naive:.0f}x",
        ),
        (f"{label}: naive ORM insert + commit per event", f"{naive:,.0f} events/s", "1x"),
    ]
    if result.unary:
        unary = statistics.median(result.unary)
        rows.append(
            (
                f"{label}: one unary call per event",
                f"{unary:,.0f} events/s",
                f"{unary / naive:.2f}x",
            )
        )
    return [
        *rows,
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
    parser.add_argument("--unary-events", type=int, default=2_000)
    parser.add_argument(
        "--postgres", default=os.environ.get("PROTOEVENTS_BENCH_POSTGRES", DEFAULT_POSTGRES)
    )
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    sizes = {
        "events": args.events,
        "runs": args.runs,
        "latency_samples": args.latency_samples,
        "naive_events": args.naive_events,
        "unary_events": args.unary_events,
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/events.db"
        migrate.upgrade(url)
        rows += table_rows("SQLite", run_backend(url, **sizes))
    if not args.skip_postgres:
        with postgres_database(args.postgres) as url:
            migrate.upgrade(url)
            rows += table_rows("PostgreSQL", run_backend(url, **sizes))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'median':>20}  vs naive")
    for label, value, ratio in rows:
        print(f"{label:<{width}}  {value:>20}  {ratio}")


if __name__ == "__main__":
    main()
