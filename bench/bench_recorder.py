"""Recorder benchmark: `record()` cost on the caller's thread, delivery rate, memory.

    python -m bench.bench_recorder [--runs 5] [--events 300000]

Compares, in the same process: `logging.info` to a NullHandler, and the OpenTelemetry SDK's
`Logger.emit()` with a BatchLogRecordProcessor (needs `pip install -e .[bench]`).
The proxy is `bench.counting_proxy` in a separate process.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.recorder import Recorder

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED


@contextmanager
def counting_proxy() -> Iterator[str]:
    """`bench.counting_proxy` in a child process; yields its address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.counting_proxy"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().split()[-1]
    finally:
        process.kill()
        process.wait()


def per_call_ns(call: Callable[[int], object], calls: int = 1000, chunks: int = 200) -> float:
    """Median over chunks of the mean cost of one call, in nanoseconds."""
    samples = []
    for chunk in range(chunks):
        start = time.perf_counter_ns()
        for i in range(calls):
            call(i)
        samples.append((time.perf_counter_ns() - start) / calls)
        del chunk
    return statistics.median(samples)


def otel_emit() -> tuple[Callable[[int], object], Callable[[], int]] | None:
    try:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import (
            BatchLogRecordProcessor,
            LogRecordExporter,
            LogRecordExportResult,
        )
    except ImportError:
        return None

    class Counting(LogRecordExporter):
        count = 0

        def export(self, batch):  # type: ignore[no-untyped-def]
            Counting.count += len(batch)
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return True

    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(Counting()))
    logger = provider.get_logger("bench")

    def emit(i: int) -> object:
        return logger.emit(body="node-7 leads", attributes={"i": i})

    def delivered() -> int:
        provider.force_flush()
        return Counting.count

    return emit, delivered


def null_logger() -> logging.Logger:
    """A logger whose records go to a NullHandler: the cheapest stdlib logging call."""
    null = logging.getLogger("bench.null")
    null.addHandler(logging.NullHandler())
    null.propagate = False
    null.setLevel(logging.INFO)
    return null


def record_costs(
    address: str, runs: int, chunks: int = 200, status: Callable[[str], None] = lambda _: None
) -> dict[str, list[float]]:
    """Nanoseconds per call, one median per run, of `Recorder.record()` (to a proxy at
    `address`), `logging.info` to a NullHandler and, when installed, the OpenTelemetry SDK's
    `Logger.emit` (an empty list when not); the three interleaved in each run."""
    costs: dict[str, list[float]] = {"record": [], "logging": [], "otel": []}
    with tempfile.TemporaryDirectory() as spool:
        recorder = Recorder(
            component="bench", event_types=[ClusterEventType], proxy=address, spool_dir=spool,
            queue_size=1_000_000,
        )  # fmt: skip
        null = null_logger()

        def record(i: int) -> object:
            return recorder.record(ELECTED, "node-7 leads")

        otel = otel_emit()
        for run in range(runs):
            status(f"run {run + 1}/{runs}")
            costs["record"].append(per_call_ns(record, chunks=chunks))
            recorder.flush(30)
            costs["logging"].append(per_call_ns(lambda i: null.info("node-7 leads"), chunks=chunks))
            if otel is not None:
                costs["otel"].append(per_call_ns(otel[0], chunks=chunks))
        recorder.close(30)
    return costs


def delivery_rates(
    address: str, events: int, runs: int, status: Callable[[str], None] = lambda _: None
) -> tuple[list[float], float]:
    """Events/s of one recorder until the proxy at `address` acknowledged all `events`, per
    run; and the peak RSS growth of this process meanwhile, in MiB."""
    rates = []
    with tempfile.TemporaryDirectory() as spool:
        recorder = Recorder(
            component="bench", event_types=[ClusterEventType], proxy=address, spool_dir=spool,
            queue_size=max(1_000_000, events),
        )  # fmt: skip
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for run in range(runs):
            status(f"run {run + 1}/{runs}")
            start = time.perf_counter()
            for _ in range(events):
                recorder.record(ELECTED, "node-7 leads")
            if not recorder.drain(120):
                raise RuntimeError(f"not delivered: {recorder.stats()}")
            rates.append(events / (time.perf_counter() - start))
        rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        stats = recorder.stats()
        recorder.close(30)
    if stats.dropped:
        raise RuntimeError(f"the recorder dropped events: {stats.dropped}")
    return rates, rss_growth / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=300_000)
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    with counting_proxy() as address:
        costs = record_costs(address, args.runs)
        rates, rss_growth = delivery_rates(address, args.events, args.runs)
    base = statistics.median(costs["logging"])
    for name, label in [
        ("record", "Recorder.record()"),
        ("logging", "logging.info -> NullHandler"),
        ("otel", "OTel Logger.emit (BatchLogRecordProcessor)"),
    ]:
        if costs[name]:
            median = statistics.median(costs[name])
            rows.append((label, f"{median / 1000:.2f} µs", f"{median / base:.2f}x"))
    rows.append(
        (
            f"delivered to the proxy ({args.events:,} events, acknowledged)",
            f"{statistics.median(rates):,.0f} events/s",
            "",
        )
    )
    rows.append(("peak RSS growth while delivering", f"{rss_growth:.0f} MiB", ""))

    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'median':>18}  vs logging")
    for label, value, ratio in rows:
        print(f"{label:<{width}}  {value:>18}  {ratio}")


if __name__ == "__main__":
    main()
