"""WatchEvents and ListEvents on a real proxy: live changes, replay, slow watchers, Redis
fan-out across proxies, and pagination while events arrive."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import redis
import redis.exceptions

from protoevents.proxy.app import Proxy, run_proxy
from protoevents.proxy.changes import Change
from protoevents.proxy.watch.hub import batches, framed
from protoevents.v1 import (
    event_pb2,
    proxy_service_pb2,
    proxy_service_pb2_grpc,
    query_service_pb2,
    query_service_pb2_grpc,
)
from tests.support.ingest_helpers import make_event, make_events, proxy_settings, wait_until
from tests.support.unavailable import unavailable

T = TypeVar("T")
Q = query_service_pb2
CREATED, UPDATED, REPLAYED = Q.CHANGE_KIND_CREATED, Q.CHANGE_KIND_UPDATED, Q.CHANGE_KIND_REPLAYED
Watch = grpc.aio.UnaryStreamCall[Q.WatchEventsRequest, Q.WatchEventsResponse]
RELAY_KEY = "a relay key the proxies of a test share"


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


class Client:
    """Stubs of one proxy on one channel."""

    def __init__(self, proxy: Proxy, channel: grpc.aio.Channel) -> None:
        self.proxy = proxy
        self.query = query_service_pb2_grpc.EventQueryServiceStub(channel)
        self.ingest = proxy_service_pb2_grpc.EventProxyServiceStub(channel)

    async def record(self, *events: event_pb2.Event) -> None:
        response = await self.ingest.RecordBatch(
            proxy_service_pb2.RecordBatchRequest(events=events), timeout=30
        )
        assert response.result.accepted_count == len(events), response

    async def stored(self, count: int, **request: Any) -> list[event_pb2.Event]:
        """The stored events once `count` of them match (newest first)."""
        found: list[event_pb2.Event] = []

        async def enough() -> bool:
            response = await self.query.ListEvents(Q.ListEventsRequest(page_size=1000, **request))
            found[:] = response.events
            return len(found) >= count

        await poll(enough)
        return found

    async def watch(self, marker: event_pb2.Event, **request: Any) -> Watch:
        """A watch known to be live: its replay of one event (`marker`, stored and matching)
        has arrived, and the subscription precedes the replay."""
        await self.record(marker)
        await self.stored(1, filter=Q.EventFilter(message_contains=marker.message))
        call = self.query.WatchEvents(Q.WatchEventsRequest(replay_count=1, **request))
        first = await asyncio.wait_for(call.read(), 30)
        assert isinstance(first, Q.WatchEventsResponse)
        assert (first.kind, first.event.id) == (REPLAYED, marker.id)
        return call


async def poll(condition: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.02)


async def read(call: Watch, count: int, timeout: float = 30.0) -> list[tuple[int, str, int]]:
    """The next `count` changes as (kind, message, count)."""
    got = []
    for _ in range(count):
        response = await asyncio.wait_for(call.read(), timeout)
        assert isinstance(response, Q.WatchEventsResponse), response
        got.append((response.kind, response.event.message, response.event.count))
    return got


@contextlib.asynccontextmanager
async def client_of(data: Path, **settings: Any) -> AsyncIterator[Client]:
    async with (
        run_proxy(proxy_settings(data, writer_batch_interval_ms=20, **settings)) as proxy,
        grpc.aio.insecure_channel(proxy.address) as channel,
    ):
        yield Client(proxy, channel)


def severe(message: str, **fields: Any) -> event_pb2.Event:
    return make_event(message=message, severity=4, **fields)


def test_watch_receives_exactly_the_matching_changes_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with client_of(tmp_path) as client:
            matching = Q.EventFilter(min_severity=4, node="node-1")
            call = await client.watch(severe("marker"), filter=matching)
            other_node = event_pb2.EventSource(node="node-2", component="c")
            await client.record(severe("m1"), make_event(message="quiet", severity=2), severe("m2"))
            # Repeats of m1 merge into it (one UPDATED, count 3); n1 matches nothing.
            await client.record(severe("m1"), severe("m1"), severe("n1", source=other_node))
            await client.record(severe("m3"))
            assert await read(call, 4) == [
                (CREATED, "m1", 1),
                (CREATED, "m2", 1),
                (UPDATED, "m1", 3),
                (CREATED, "m3", 1),
            ]
            # Nothing else came in between: the next change is the next matching one.
            await client.record(make_event(message="quiet again", severity=2), severe("m4"))
            assert await read(call, 1) == [(CREATED, "m4", 1)]
            # What a watcher is told has been stored already.
            last = await client.query.ListEvents(Q.ListEventsRequest(page_size=1))
            assert last.events[0].message == "m4"
            call.cancel()

    run(scenario())


def test_replay_count_sends_the_latest_matching_events_oldest_first_then_live(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with client_of(tmp_path) as client:
            for n in range(5):
                await client.record(severe(f"old {n}"), make_event(message=f"quiet {n}"))
            await client.stored(10)
            # The hub follows the SQL writer: let it hand those 10 on (to no one) first, so
            # that none of them reaches the watch live after its replay.
            proxy = client.proxy
            await wait_until(lambda: proxy.dispatcher.feed("watch").bookmark == proxy.wal.end)
            call = client.query.WatchEvents(
                Q.WatchEventsRequest(filter=Q.EventFilter(min_severity=4), replay_count=3)
            )
            assert await read(call, 3) == [
                (REPLAYED, "old 2", 1),
                (REPLAYED, "old 3", 1),
                (REPLAYED, "old 4", 1),
            ]
            await client.record(make_event(message="quiet new"), severe("new"))
            assert await read(call, 1) == [(CREATED, "new", 1)]
            call.cancel()

    run(scenario())


def test_bad_watch_requests_are_refused_naming_the_field(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with client_of(tmp_path) as client:
            for request, field in [
                (Q.WatchEventsRequest(filter=Q.EventFilter(types=["NOPE"])), "filter.types[0]"),
                (Q.WatchEventsRequest(replay_count=5000), "replay_count"),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await client.query.WatchEvents(request).read()
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert (caught.value.details() or "").startswith(f"{field}: ")

    run(scenario())


def test_a_slow_watcher_is_dropped_without_slowing_ingest(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with client_of(tmp_path, watch_queue_size=200) as client:
            # The slow watcher's channel has a small flow-control window, so that it fills
            # soon: gRPC buffers no more than that for a reader that does not read.
            small_window = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 8192)]
            slow_channel = grpc.aio.insecure_channel(client.proxy.address, options=small_window)
            slow_client = Client(client.proxy, slow_channel)
            slow = await slow_client.watch(severe("marker"))
            fast = await client.watch(severe("marker 2"))
            hub = client.proxy.hub
            received: list[str] = []

            async def keep_reading() -> None:
                while True:
                    response = await fast.read()
                    assert isinstance(response, Q.WatchEventsResponse)
                    received.append(response.event.id)

            reader = asyncio.create_task(keep_reading())
            sent: list[str] = []
            # The slow watcher reads nothing: once gRPC's flow-control window is full, its
            # queue fills and the hub drops it. Ingest goes on meanwhile; the other watcher
            # keeps up with it (the next batch comes once it has read the last).
            for _ in range(500):
                batch = make_events(100)
                await client.record(*batch)
                sent.extend(e.id for e in batch)
                await wait_until(lambda: len(received) >= len(sent), timeout=60)
                if hub.dropped:
                    break
            assert hub.dropped == 1
            assert received == sent  # the other watcher got everything, in order
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                while True:
                    await slow.read()
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "(the limit is 200) and was dropped" in (caught.value.details() or "")
            reader.cancel()
            fast.cancel()
            await slow_channel.close()

    run(scenario())


def test_listing_pages_stay_correct_while_events_arrive(tmp_path: Path, database_url: str) -> None:
    async def scenario() -> None:
        async with client_of(tmp_path, db=database_url) as client:
            before = make_events(300)
            for start in range(0, 300, 100):
                await client.record(*before[start : start + 100])
            await client.stored(300)
            stop = asyncio.Event()

            async def ingest_meanwhile() -> None:
                while not stop.is_set():
                    await client.record(*make_events(20))
                    await asyncio.sleep(0)

            for order in (Q.SORT_ORDER_NEWEST_FIRST, Q.SORT_ORDER_OLDEST_FIRST):
                ingesting = asyncio.create_task(ingest_meanwhile())
                seen: list[event_pb2.Event] = []
                token = ""
                while True:
                    page = await client.query.ListEvents(
                        Q.ListEventsRequest(page_size=25, page_token=token, order=order)
                    )
                    seen.extend(page.events)
                    token = page.next_page_token
                    if not token or (order == Q.SORT_ORDER_OLDEST_FIRST and len(seen) > 600):
                        break
                stop.set()
                await ingesting
                stop.clear()
                ids = [e.id for e in seen]
                assert len(ids) == len(set(ids)), "an event came twice"
                assert {e.id for e in before} <= set(ids), "an event was skipped"
                keys = [(e.time.seconds, e.time.nanos, e.id) for e in seen]
                newest_first = order == Q.SORT_ORDER_NEWEST_FIRST
                assert keys == sorted(keys, reverse=newest_first)

    run(scenario())


def test_without_redis_a_watch_fails_unavailable_and_ingest_goes_on(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with client_of(
            tmp_path, redis_url="redis://127.0.0.1:1/0", redis_relay_key=RELAY_KEY
        ) as client:
            await client.record(severe("stored anyway"))
            call = client.query.WatchEvents(Q.WatchEventsRequest())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call.read()
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            details = caught.value.details() or ""
            assert "WatchEvents needs Redis at redis://127.0.0.1:1/0" in details
            assert "ingest goes on" in details
            stored = await client.stored(1)
            assert stored[0].message == "stored anyway"

    run(scenario())


@pytest.mark.postgres
@pytest.mark.redis
def test_two_proxies_sharing_postgresql_and_redis_see_each_others_events(
    tmp_path: Path, postgres_database: Callable[[], str], redis_url: str, redis_channel: str
) -> None:
    url = postgres_database()
    shared = {
        "db": url,
        "redis_url": redis_url,
        "redis_channel": redis_channel,
        "redis_relay_key": RELAY_KEY,
    }

    async def scenario() -> None:
        async with (
            client_of(tmp_path / "a", **shared) as a,
            client_of(tmp_path / "b", **shared) as b,
        ):
            severe_only = Q.EventFilter(min_severity=4)
            on_a = await a.watch(severe("marker a"), filter=severe_only)
            on_b = await b.watch(severe("marker b"), filter=severe_only)

            async def next_change(call: Watch) -> tuple[int, str, int]:
                while True:  # the markers may come live to the other proxy's watcher
                    (change,) = await read(call, 1)
                    if not change[1].startswith("marker"):
                        return change

            # Each change, from either proxy, reaches the watchers of both, in order.
            steps = [
                (a, severe("from a"), (CREATED, "from a", 1)),
                (b, severe("from b"), (CREATED, "from b", 1)),
                (a, severe("from a"), (UPDATED, "from a", 2)),  # merges into the first
            ]
            for proxy, event, expected in steps:
                await proxy.record(event, make_event(message="quiet"))
                assert await next_change(on_a) == expected
                assert await next_change(on_b) == expected
            on_a.cancel()
            on_b.cancel()

    run(scenario())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A redis-server of the test's own on `port` (so that it can be stopped), once it
    answers."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed"
        unavailable(reason)
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                client.ping()
                return server
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
    finally:
        client.close()


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(timeout=30)


def test_losing_redis_ends_watches_unavailable_and_ingest_goes_on(tmp_path: Path) -> None:
    port = free_port()

    async def scenario() -> None:
        server = start_redis(port)
        try:
            on_redis = {"redis_url": f"redis://127.0.0.1:{port}/0", "redis_relay_key": RELAY_KEY}
            async with client_of(tmp_path, **on_redis) as client:
                call = await client.watch(severe("marker"))
                await client.record(severe("before"))
                assert await read(call, 1) == [(CREATED, "before", 1)]

                await asyncio.to_thread(stop, server)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await read(call, 1)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "lost the connection to Redis" in (caught.value.details() or "")
                await client.record(severe("while Redis is down"))
                assert (await client.stored(3))[0].message == "while Redis is down"
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await client.query.WatchEvents(Q.WatchEventsRequest()).read()
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

                server = await asyncio.to_thread(start_redis, port)
                relay = client.proxy.relay
                assert relay is not None
                await asyncio.wait_for(relay.connected.wait(), 30)
                again = await client.watch(severe("marker again"))
                await client.record(severe("after"))
                assert await read(again, 1) == [(CREATED, "after", 1)]
                again.cancel()
        finally:
            stop(server)

    run(scenario())


def test_watchers_share_one_encoding_and_past_max_watchers_a_watch_is_refused(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with client_of(tmp_path, max_watchers=2) as client:
            hub = client.proxy.hub
            everything = client.query.WatchEvents(Q.WatchEventsRequest())
            severe_only = client.query.WatchEvents(
                Q.WatchEventsRequest(filter=Q.EventFilter(min_severity=4))
            )
            await wait_until(lambda: len(hub) == 2)
            refused = client.query.WatchEvents(Q.WatchEventsRequest())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await refused.read()
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert caught.value.details() == (
                "2 watchers are connected, the most the proxy serves (max_watchers); retry later"
            )
            # What the hub hands the two: the same bytes object per change, however many.
            taps = [hub.subscribe(), hub.subscribe()]
            mild, alarm = make_event(message="mild", severity=2), severe("alarm")
            await client.record(mild, alarm)
            first = [await tap.get() for tap in taps]
            assert first[0].message is first[1].message
            decoded = Q.WatchEventsResponse.FromString(first[0].message)
            assert (decoded.kind, decoded.event.message) == (CREATED, "mild")
            for tap in taps:
                tap.close()
            got = [await everything.read(), await everything.read(), await severe_only.read()]
            assert [(r.kind, r.event.message) for r in got] == [  # type: ignore[union-attr]
                (CREATED, "mild"),
                (CREATED, "alarm"),
                (CREATED, "alarm"),
            ]
            everything.cancel()
            severe_only.cancel()

    run(scenario())


def test_a_batched_watch_gets_the_same_changes_as_one_per_message_in_fewer_messages(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with client_of(tmp_path) as client:
            await client.record(severe("before"))
            await client.stored(1)
            single = client.query.WatchEvents(Q.WatchEventsRequest(replay_count=1))
            batched = client.query.WatchEvents(Q.WatchEventsRequest(replay_count=1, batched=True))
            first = await batched.read()
            assert [(c.kind, c.event.message) for c in first.changes] == [  # type: ignore[union-attr]
                (REPLAYED, "before")
            ]
            assert (await single.read()).kind == REPLAYED  # type: ignore[union-attr]
            await wait_until(lambda: len(client.proxy.hub) == 2)
            events = [severe(f"e{n}") for n in range(50)]
            await client.record(*events)
            got: list[str] = []
            messages = 0
            while len(got) < 50:
                response = await batched.read()
                assert not response.HasField("event")  # type: ignore[union-attr]
                got += [c.event.message for c in response.changes]  # type: ignore[union-attr]
                messages += 1
            assert got == [e.message for e in events]
            assert messages < 50  # one message per batch of the writer, not per change
            one_by_one = [(await single.read()).event.message for _ in events]  # type: ignore[union-attr]
            assert one_by_one == got
            single.cancel()
            batched.cancel()

    run(scenario())


def test_batches_split_under_their_size_and_read_back_in_order() -> None:
    changes = [Change(CREATED, severe(f"change {n}")) for n in range(20)]
    encoded = [
        Q.WatchEventsResponse(kind=c.kind, event=c.event).SerializeToString() for c in changes
    ]
    limit = len(framed(encoded[-1])) * 5
    out = list(batches([framed(m) for m in encoded], max_bytes=limit))
    assert len(out) == 4 and all(len(batch) <= limit for batch in out)
    read = [c for data in out for c in Q.WatchEventsResponse.FromString(data).changes]
    assert [(c.kind, c.event) for c in read] == [(c.kind, c.event) for c in changes]
    assert list(batches([framed(encoded[0])], max_bytes=1)) == [
        Q.WatchEventsResponse(
            changes=[Q.WatchedChange(kind=CREATED, event=changes[0].event)]
        ).SerializeToString()
    ]
