"""Indexed queries beside a storm of unindexed ones: `protoevents serve` on PostgreSQL.

    python -m bench.bench_queries [--rows 262144] [--scanners 16] [--samples 200] [--postgres URL]

Fills a fresh database with `--rows` events, then times `--samples` indexed calls (`GetEvent`
by id and a `ListEvents` page by type, alternately) alone, and again while `--scanners`
clients run substring searches (`message_contains`, which no index serves) back to back.
Reports the median and p99 latency of the indexed calls and their ratio to the quiet run, and
what the scanners got (answers, RESOURCE_EXHAUSTED refusals).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import grpc
import sqlalchemy as sa

from bench.bench_pipeline import DEFAULT_POSTGRES, proxy
from bench.bench_sql_writer import postgres_database
from protoevents.v1 import query_service_pb2 as q
from protoevents.v1 import query_service_pb2_grpc

TYPE = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED"


def fill(url: str, rows: int) -> str:
    """`rows` events with fresh ids and spread times; the id of one of them."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO events (id, type, severity, category, message, source_node, "
                "source_component, object_kind, object_namespace, object_name, attributes, "
                "data, time, first_time, last_time, received_time, count) "
                "SELECT gen_random_uuid()::text, :type, 2, 'cluster', 'leader elected ' || n, "
                "'node-' || (n % 50), 'controller', 'Node', '', 'node-' || (n % 50), "
                "CAST('{}' AS json), NULL, t, t, t, t, 1 FROM (SELECT n, "
                "now() - n * interval '1 second' AS t FROM generate_series(1, :rows) AS n) AS s"
            ),
            {"type": TYPE, "rows": rows},
        )
        connection.execute(sa.text("ANALYZE events"))
        one = connection.execute(sa.text("SELECT id FROM events LIMIT 1")).scalar_one()
    engine.dispose()
    return str(one)


def indexed_latencies(
    stub: query_service_pb2_grpc.EventQueryServiceStub, event_id: str, samples: int
) -> list[float]:
    by_type = q.ListEventsRequest(filter=q.EventFilter(types=[TYPE]), page_size=50)
    times = []
    for n in range(samples):
        start = time.perf_counter()
        if n % 2:
            stub.ListEvents(by_type, timeout=120)
        else:
            stub.GetEvent(q.GetEventRequest(id=event_id), timeout=120)
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) * 1e3, ordered[int(len(ordered) * 0.99) - 1] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=262_144)
    parser.add_argument("--scanners", type=int, default=16)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as folder,
        postgres_database(args.postgres) as url,
        proxy(url, Path(folder) / "wal") as address,
    ):
        event_id = fill(url, args.rows)
        channel = grpc.insecure_channel(address)
        stub = query_service_pb2_grpc.EventQueryServiceStub(channel)
        indexed_latencies(stub, event_id, 20)  # warm the caches
        quiet = indexed_latencies(stub, event_id, args.samples)
        outcomes: Counter[str] = Counter()
        done = threading.Event()
        scan = q.ListEventsRequest(filter=q.EventFilter(message_contains=uuid.uuid4().hex))

        def scanner() -> None:
            own = grpc.insecure_channel(address)
            scans = query_service_pb2_grpc.EventQueryServiceStub(own)
            while not done.is_set():
                try:
                    scans.ListEvents(scan, timeout=120)
                    outcomes["answered"] += 1
                except grpc.RpcError as exc:
                    outcomes[exc.code().name] += 1
                    done.wait(0.05)  # back off, as a client should
            own.close()

        threads = [threading.Thread(target=scanner) for _ in range(args.scanners)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # the storm is under way
        busy = indexed_latencies(stub, event_id, args.samples)
        done.set()
        for thread in threads:
            thread.join()
        channel.close()
    quiet_median, quiet_p99 = summary(quiet)
    busy_median, busy_p99 = summary(busy)
    print(f"{args.rows:,} rows on PostgreSQL, {args.samples} indexed calls each\n")
    print("| indexed calls | median ms | p99 ms | median vs quiet |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| alone | {quiet_median:.1f} | {quiet_p99:.1f} | 1.00x |")
    print(
        f"| beside {args.scanners} substring-query clients | {busy_median:.1f} | {busy_p99:.1f} "
        f"| {busy_median / quiet_median:.2f}x |"
    )
    print(f"\nscanners: {dict(outcomes)}")


if __name__ == "__main__":
    main()
