"""What watchers cost ingest: one recorder -> `protoevents serve` (SQLite) with 0, 10 and 100
WatchEvents streams open.

    python -m bench.bench_watchers [--events 20000] [--watchers 0,10,100,100b] [--runs 3]

Each run starts a proxy, then a watcher process holding N watch streams (every change, no
filter; `100b`: 100 batched watches, `WatchEventsRequest.batched`), then records `--events`
distinct events from one recorder in this process and times until every one is committed in
the database. Reported per watcher count: the median storing
rate and its ratio to no watchers in the same run, the proxy's CPU per event, and the changes
the watchers received (a watcher that falls `watch_queue_size` behind is dropped, by design).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
import sqlalchemy as sa

from bench.bench_pipeline import ELECTED, proxy, wait_stored
from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.recorder import Recorder
from protoevents.v1 import query_service_pb2, query_service_pb2_grpc


async def _watch(address: str, count: int, batched: bool) -> int:
    """Hold `count` watch streams until stdin closes; the changes they received."""
    channels = [grpc.aio.insecure_channel(address) for _ in range(max(1, count // 25))]
    received = 0

    async def one(n: int) -> None:
        nonlocal received
        stub = query_service_pb2_grpc.EventQueryServiceStub(channels[n % len(channels)])
        try:
            request = query_service_pb2.WatchEventsRequest(batched=batched)
            async for response in stub.WatchEvents(request):
                received += len(response.changes) if batched else 1
        except grpc.aio.AioRpcError:
            pass  # dropped as too slow, or the proxy stopped

    tasks = [asyncio.create_task(one(n)) for n in range(count)]
    await asyncio.sleep(1.0)  # the streams subscribe; the bench starts recording after this
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.read)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return received


def one_run(events: int, watchers: str) -> tuple[float, float, int]:
    """(events stored per second, proxy CPU µs per event, changes the watchers received)."""
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        url = f"sqlite:///{data}/events.db"
        with proxy(url, data / "wal") as address:
            serve = [p for p in psutil.Process().children() if "serve" in " ".join(p.cmdline())]
            watcher = None
            if watchers != "0":
                watcher = subprocess.Popen(
                    [sys.executable, "-m", "bench.bench_watchers", "--watch", address,
                     "--watchers", watchers],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                assert watcher.stdout is not None
                assert watcher.stdout.readline().strip() == "ready"
            engine = sa.create_engine(url, poolclass=sa.NullPool)
            recorder = Recorder(
                component="bench", node="node-1", event_types=[ClusterEventType],
                proxy=address, spool_dir=data / "spool", batch_size=500,
            )  # fmt: skip
            cpu_before = sum(sum(p.cpu_times()[:2]) for p in serve)
            start = time.perf_counter()
            last = ""
            for n in range(events):
                last = recorder.record(ELECTED, f"leader elected {n}")
            wait_stored(engine, events, last)
            elapsed = time.perf_counter() - start
            cpu = sum(sum(p.cpu_times()[:2]) for p in serve) - cpu_before
            recorder.close(10)
            engine.dispose()
            received = 0
            if watcher is not None:
                out, _ = watcher.communicate("", timeout=120)
                received = int(out.split()[-1])
    return events / elapsed, cpu / events * 1e6, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--watchers", default="0,10,100,100b")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--watch", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch:
        spec = args.watchers
        print(asyncio.run(_watch(args.watch, int(spec.rstrip("b")), spec.endswith("b"))))
        return
    counts = args.watchers.split(",")
    results: dict[str, list[tuple[float, float, int]]] = {n: [] for n in counts}
    for _ in range(args.runs):  # interleaved: noise hits every count alike
        for n in counts:
            results[n].append(one_run(args.events, n))
    base = statistics.median(r[0] for r in results[counts[0]])
    print(f"{args.events} events, one recorder, SQLite, median of {args.runs} runs\n")
    print("| watchers | stored/s | vs no watchers | proxy CPU µs/event | changes received |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n in counts:
        rate = statistics.median(r[0] for r in results[n])
        cpu = statistics.median(r[1] for r in results[n])
        got = statistics.median(r[2] for r in results[n])
        name = f"{n[:-1]} batched" if n.endswith("b") else n
        print(
            f"| {name} | {rate:,.0f} | {rate / base:.2f}x | {cpu:,.1f} | "
            f"{got:,.0f} of {int(n.rstrip('b')) * args.events:,} |"
        )


if __name__ == "__main__":
    main()
