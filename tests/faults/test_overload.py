"""Overload against a real `serve`: idle streams, heavy unindexed queries and many watchers
degrade what they use, and never lock anyone else out."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.recorder import Recorder
from protoevents.v1 import (
    event_pb2,
    proxy_service_pb2,
    proxy_service_pb2_grpc,
    query_service_pb2,
    query_service_pb2_grpc,
)
from tests.support.ingest_helpers import make_events
from tests.support.polling import poll
from tests.support.query_events import fill
from tests.support.serve_process import ServeProcess, serve
from tests.support.stored import assert_each_stored_once

R = proxy_service_pb2
Q = query_service_pb2
SERVING = health_pb2.HealthCheckResponse.SERVING
ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED
IDLE_STREAMS = 300
PER_CLIENT = 64  # max_streams_per_client's default


def health_of(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status)


def test_300_idle_streams_lock_out_neither_health_nor_queries_nor_recorders(
    tmp_path: Path, processes: list[ServeProcess], make_recorder: Callable[..., Recorder]
) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    proxy = serve(processes, tmp_path / "data", url, "--idle-stream-timeout-s", "3")
    query = query_service_pb2_grpc.EventQueryServiceStub(proxy.channel)
    acked: list[str] = []
    codes: list[grpc.StatusCode] = []
    recorded: list[str] = []

    async def flood() -> None:
        channels = [grpc.aio.insecure_channel(proxy.address) for _ in range(10)]
        hold = asyncio.Event()

        async def one_then_idle(events: list[event_pb2.Event]) -> AsyncIterator[R.RecordRequest]:
            yield R.RecordRequest(sequence=1, events=events)
            await hold.wait()

        async def stream(n: int) -> None:
            events = make_events(1)
            stub = proxy_service_pb2_grpc.EventProxyServiceStub(channels[n % len(channels)])
            call = stub.Record(one_then_idle(events))
            try:
                response = await call.read()
                assert response.sequence == 1  # type: ignore[union-attr]
                acked.extend(e.id for e in events)
                assert await call.read() == grpc.aio.EOF  # ended by the proxy as idle
            except grpc.aio.AioRpcError:
                pass
            codes.append(await call.code())
            if await call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert await call.details() == (
                    f"client 127.0.0.1 has {PER_CLIENT} ingest streams open, the limit per "
                    "client (max_streams_per_client); close idle streams or retry later"
                )

        streams = [asyncio.create_task(stream(n)) for n in range(IDLE_STREAMS)]

        def checks_while_held() -> None:
            poll(lambda: len(acked) == PER_CLIENT, 30, "the admitted streams' acks")
            # Ingest is full for this client; health and queries are not ingest.
            assert health_of(proxy.channel) == SERVING
            query.ListEvents(Q.ListEventsRequest(page_size=10), timeout=10)
            # A recorder from the same host is refused for now, and holds its events.
            recorder = make_recorder(proxy.address, backoff_max=0.5)
            recorded.extend(recorder.record(ELECTED, f"held {n}") for n in range(50))
            assert recorder.drain(60), recorder.stats()  # once the idle streams are ended
            assert recorder.stats().dropped == {}

        await asyncio.gather(*streams, asyncio.to_thread(checks_while_held))
        hold.set()
        for channel in channels:
            await channel.close()

    asyncio.run(flood())
    assert len(acked) == PER_CLIENT
    assert codes.count(grpc.StatusCode.OK) == PER_CLIENT  # idle, ended with OK
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == IDLE_STREAMS - PER_CLIENT
    assert health_of(proxy.channel) == SERVING
    poll(lambda: len(stored(url)) == len(acked) + len(recorded), 30, "every event stored")
    assert_each_stored_once(url, acked + recorded)


def stored(url: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.text("SELECT id FROM events")).scalars())
    finally:
        engine.dispose()


def running_scans(admin: sa.Engine, database: str) -> int:
    """Statements of `database` searching messages, running now."""
    with admin.connect() as connection:
        return int(
            connection.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                    "AND state = 'active' AND query LIKE '%strpos%'"
                ),
                {"db": database},
            ).scalar_one()
        )


@pytest.mark.postgres
def test_16_clients_of_substring_queries_leave_indexed_queries_and_health_answering(
    tmp_path: Path,
    processes: list[ServeProcess],
    postgres_database: Callable[[], str],
    postgres_admin: sa.Engine,
) -> None:
    url = postgres_database()
    database = sa.make_url(url).database or ""
    proxy = serve(processes, tmp_path / "data", url, "--query-threads", "8")
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    first = fill(engine, 16)  # 65,536 events
    engine.dispose()
    query = query_service_pb2_grpc.EventQueryServiceStub(proxy.channel)
    scan = Q.ListEventsRequest(filter=Q.EventFilter(message_contains="in no message"))
    outcomes: list[grpc.StatusCode] = []
    refusals: set[str] = set()
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            try:
                query.ListEvents(scan, timeout=60)
                outcomes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                outcomes.append(exc.code())
                refusals.add(exc.details() or "")
                done.wait(0.05)  # a client backing off before it asks again

    clients = [threading.Thread(target=client) for _ in range(16)]
    for thread in clients:
        thread.start()
    try:
        most = 0
        for _ in range(20):
            most = max(most, running_scans(postgres_admin, database))
            found = query.GetEvent(Q.GetEventRequest(id=first), timeout=10).event
            page = query.ListEvents(
                Q.ListEventsRequest(filter=Q.EventFilter(types=[found.type]), page_size=20),
                timeout=10,
            )
            assert len(page.events) == 20
            assert health_of(proxy.channel) == SERVING
            most = max(most, running_scans(postgres_admin, database))
    finally:
        done.set()
        for thread in clients:
            thread.join(120)
    assert most <= 2  # query_scan_slots: the database runs two at once, however many ask
    assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert outcomes.count(grpc.StatusCode.OK) >= 16
    for details in refusals:
        assert "queries no index serves (message_contains, categories)" in details

    # A scan past query_timeout_s is cut by the database and answered DEADLINE_EXCEEDED.
    proxy.stop(2)
    hasty = serve(processes, tmp_path / "data", url, "--query-timeout-s", "0.002")
    hasty_query = query_service_pb2_grpc.EventQueryServiceStub(hasty.channel)
    with pytest.raises(grpc.RpcError) as cut:
        hasty_query.ListEvents(scan, timeout=60)
    assert cut.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (cut.value.details() or "").startswith(
        "the query did not finish within 0.002 s (query_timeout_s = 0.002"
    )
    assert running_scans(postgres_admin, database) == 0


def test_100_watchers_each_see_every_change_once_while_everything_is_stored(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    proxy = serve(processes, tmp_path / "data", url)
    sent = [make_events(100) for _ in range(6)]
    ids = [e.id for batch in sent for e in batch]
    probes: list[str] = []
    Watch = grpc.aio.UnaryStreamCall[Q.WatchEventsRequest, Q.WatchEventsResponse]  # noqa: N806

    async def watch_and_record() -> list[list[str]]:
        channels = [grpc.aio.insecure_channel(proxy.address) for _ in range(4)]
        stub = proxy_service_pb2_grpc.EventProxyServiceStub(channels[0])
        calls = [
            query_service_pb2_grpc.EventQueryServiceStub(channels[n % 4]).WatchEvents(
                Q.WatchEventsRequest(batched=n % 2 == 1)  # half of them batched
            )
            for n in range(100)
        ]
        subscribed = [asyncio.Event() for _ in calls]

        async def seen(call: Watch, ready: asyncio.Event) -> list[str]:
            got: list[str] = []
            while not set(ids) <= set(got):
                response = await call.read()
                assert response is not grpc.aio.EOF, await call.details()
                for change in response.changes or [response]:
                    assert change.kind == Q.CHANGE_KIND_CREATED
                    got.append(change.event.id)
                    if change.event.id in probes:
                        ready.set()
            call.cancel()
            return got

        watchers = [
            asyncio.create_task(seen(call, ready))
            for call, ready in zip(calls, subscribed, strict=True)
        ]
        async with asyncio.timeout(60):  # probes until every watcher has seen one
            while not all(ready.is_set() for ready in subscribed):
                probe = make_events(1)
                probes.append(probe[0].id)
                await stub.RecordBatch(R.RecordBatchRequest(events=probe), timeout=30)
                await asyncio.wait(
                    [asyncio.ensure_future(r.wait()) for r in subscribed], timeout=0.1
                )
        for batch in sent:
            response = await stub.RecordBatch(R.RecordBatchRequest(events=batch), timeout=30)
            assert response.result.accepted_count == len(batch)
        views = await asyncio.wait_for(asyncio.gather(*watchers), 120)
        for channel in channels:
            await channel.close()
        return views

    views = asyncio.run(watch_and_record())
    for view in views:  # every change, once, in order, to each watcher
        assert [event_id for event_id in view if event_id not in probes] == ids
    poll(lambda: len(stored(url)) == len(ids) + len(probes), 30, "every event stored")
    assert_each_stored_once(url, ids + probes)
