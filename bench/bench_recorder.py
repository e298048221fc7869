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
from recorder import Recorder

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED


@contextmanager
def counting_proxy() -> Iterator[str]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=300_000)
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    with counting_proxy() as address, tempfile.TemporaryDirectory() as spool:
        recorder = Recorder(
            component="bench", event_types=[ClusterEventType], proxy=address, spool_dir=spool,
            queue_size=1_000_000,
        )  # fmt: skip
        null = logging.getLogger("bench.null")
        null.addHandler(logging.NullHandler())
        null.propagate = False
        null.setLevel(logging.INFO)

        def record(i: int) -> object:
            return recorder.record(ELECTED, "node-7 leads")

        costs = {"record": [], "logging": [], "otel": []}  # type: dict[str, list[float]]
        otel = otel_emit()
        for _ in range(args.runs):
            costs["record"].append(per_call_ns(record))
            recorder.flush(30)
            costs["logging"].append(per_call_ns(lambda i: null.info("node-7 leads")))
            if otel is not None:
                costs["otel"].append(per_call_ns(otel[0]))
        base = statistics.median(costs["logging"])
        for name, label in [
            ("record", "Recorder.record()"),
            ("logging", "logging.info -> NullHandler"),
            ("otel", "OTel Logger.emit (BatchLogRecordProcessor)"),
        ]:
            if costs[name]:
                median = statistics.median(costs[name])
                rows.append((label, f"{median / 1000:.2f} µs", f"{median / base:.2f}x"))

        rates = []
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(args.runs):
            start = time.perf_counter()
            for _ in range(args.events):
                recorder.record(ELECTED, "node-7 leads")
            assert recorder.drain(120), recorder.stats()
            rates.append(args.events / (time.perf_counter() - start))
        rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        stats = recorder.stats()
        recorder.close(30)
        assert stats.dropped == {}, stats.dropped
        rows.append(
            (
                f"delivered to the proxy ({args.events:,} events, acknowledged)",
                f"{statistics.median(rates):,.0f} events/s",
                "",
            )
        )
        rows.append(("peak RSS growth while delivering", f"{rss_growth / 1024:.0f} MiB", ""))

    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'median':>18}  vs logging")
    for label, value, ratio in rows:
        print(f"{label:<{width}}  {value:>18}  {ratio}")


if __name__ == "__main__":
    main()
