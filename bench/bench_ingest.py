"""Events per second the proxy acknowledges over one loopback Record stream, by fsync policy.

The proxy runs in a child process with a counting no-op writer; the client streams batches of
pre-built events (unique ids) and times from the first request to the last acknowledgement.
`storm_through_proxy` streams the same requests to `protoevents serve` with dedup on: a storm of
identical events that must end as one stored row counting them all.

    python -m bench.bench_ingest [--events 200000] [--batch 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from protoevents.proxy.changes import Change, Writer
from protoevents.proxy.config import Settings
from protoevents.proxy.db.engine import create_engine
from protoevents.recorder.tls import ClientTLS
from protoevents.v1 import event_pb2, proxy_service_pb2, proxy_service_pb2_grpc


class CountingWriter:
    """A writer that only counts."""

    name = "count"

    def __init__(self) -> None:
        self.count = 0

    async def write(self, changes: Sequence[Change]) -> None:
        self.count += len(changes)

    async def close(self) -> None:
        pass


def _proxy_main(settings: Settings, conn: Connection) -> None:
    """Child process: run the proxy until the parent says stop; report the writer's count."""
    from protoevents.proxy.app import run_proxy

    writer = CountingWriter()

    def writers(_: Settings, __: Engine) -> list[Writer]:
        return [writer]

    async def main() -> None:
        # The events are identical but for their ids: dedup would merge them all.
        async with run_proxy(settings, writers=writers, dedup=None) as proxy:
            conn.send(proxy.address)
            await asyncio.to_thread(conn.recv)
        conn.send(writer.count)

    asyncio.run(main())


def build_requests(events: int, batch: int) -> list[proxy_service_pb2.RecordRequest]:
    """`events` events that differ only in their ids, in requests of `batch` events."""
    now = time.time()
    template = event_pb2.Event(
        type="protoevents.nic.v1.NicEventType.NIC_EVENT_TYPE_DISCONNECTED",
        message="eth0 lost its connection to the cluster",
        source=event_pb2.EventSource(node="node-7", component="node-agent"),
        object=event_pb2.ObjectRef(kind="Nic", name="node-7/eth0"),
        attributes={"nic": "eth0"},
    )
    template.time.FromNanoseconds(int(now * 1e9))
    requests = []
    for sequence in range(events // batch):
        request = proxy_service_pb2.RecordRequest(sequence=sequence + 1)
        for _ in range(batch):
            event = request.events.add()
            event.CopyFrom(template)
            event.id = str(uuid.uuid4())
        requests.append(request)
    return requests


def aio_channel(address: str, tls: ClientTLS | None = None) -> grpc.aio.Channel:
    """A channel to the proxy taking large messages, with TLS when given `tls`."""
    options: list[tuple[str, Any]] = [("grpc.max_send_message_length", 64 << 20)]
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, tls.credentials(), options + tls.channel_options())


async def stream(
    address: str, requests: list[proxy_service_pb2.RecordRequest], tls: ClientTLS | None = None
) -> float:
    """Seconds from the first request to the last acknowledgement."""
    async with aio_channel(address, tls) as channel:
        stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)

        async def send() -> AsyncIterator[proxy_service_pb2.RecordRequest]:
            for request in requests:
                yield request

        started = time.perf_counter()
        acked = 0
        async for response in stub.Record(send()):
            acked += response.result.accepted_count
        elapsed = time.perf_counter() - started
    expected = sum(len(r.events) for r in requests)
    if acked != expected:
        raise SystemExit(f"acknowledged {acked} of {expected} events")
    return elapsed


def stored_count(engine: sa.Engine) -> int | None:
    """The count of the one row a storm makes (None before it is stored)."""
    with engine.connect() as connection:
        counts = connection.execute(sa.text("SELECT count FROM events")).scalars().all()
    if len(counts) > 1:
        raise AssertionError(f"the storm made {len(counts)} rows, not one")
    return int(counts[0]) if counts else None


def storm_through_proxy(url: str, events: int, batch: int = 1000, timeout: float = 600) -> float:
    """Events/s of a dedup storm end to end: `events` identical events (unique ids, the same
    content), pre-built in batches of `batch`, streamed to `protoevents serve` on a migrated
    database `url`, timed from the first request until the stored row's count is `events`."""
    from bench.bench_pipeline import proxy

    requests = build_requests(events, batch)
    engine = create_engine(url)
    try:
        with (
            tempfile.TemporaryDirectory() as data,
            proxy(url, Path(data), ["--dedup-window-s", "86400"]) as address,
        ):
            started = time.perf_counter()
            asyncio.run(stream(address, requests))
            deadline = time.monotonic() + timeout
            while stored_count(engine) != events:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"stored count {stored_count(engine)} of {events}")
                time.sleep(0.01)
            return events / (time.perf_counter() - started)
    finally:
        engine.dispose()


def one_run(
    fsync: str,
    events: int,
    batch: int,
    folder: Path,
    tls: tuple[dict[str, Any], ClientTLS] | None = None,
) -> tuple[float, int]:
    """Events/s acknowledged and the writer's count; `tls`: the proxy's TLS settings and the
    client's TLS."""
    settings = Settings(
        listen="127.0.0.1:0",
        data_dir=folder,
        db=f"sqlite:///{folder}/events.db",
        fsync=fsync,
        **(tls[0] if tls else {}),
    )
    requests = build_requests(events, batch)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_proxy_main, args=(settings, child))
    process.start()
    try:
        address = parent.recv()
        elapsed = asyncio.run(stream(address, requests, tls[1] if tls else None))
        parent.send("stop")
        written = parent.recv()
    finally:
        process.join(60)
    if written != len(requests) * batch:
        raise SystemExit(f"the writer got {written} of {len(requests) * batch} events")
    return len(requests) * batch / elapsed, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per run")
    parser.add_argument("--batch", type=int, default=1000, help="events per batch")
    parser.add_argument("--runs", type=int, default=5, help="runs per policy (median shown)")
    parser.add_argument("--dir", type=Path, default=None, help="where the logs go (a disk)")
    args = parser.parse_args()
    print(f"{args.events} events per run, batches of {args.batch}, median of {args.runs} runs")
    print(f"{'fsync':<8} {'events/s (median)':>18} {'min':>10} {'max':>10}")
    for fsync in ("batch", "off"):
        rates = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(dir=args.dir) as folder:
                rate, _ = one_run(fsync, args.events, args.batch, Path(folder))
            rates.append(rate)
        print(
            f"{fsync:<8} {statistics.median(rates):>18,.0f} {min(rates):>10,.0f} "
            f"{max(rates):>10,.0f}"
        )


if __name__ == "__main__":
    main()
