"""WatchEvents and ListEvents by site on a real proxy, on SQLite and PostgreSQL.

Sites come from forwarding, never from recorders: the test stores forwarded events straight
into the proxy's database (replays and listings read them there) and hands their changes to
its hub, as the writers do once they are stored.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from protoevents.proxy.app import run_proxy
from protoevents.proxy.changes import CREATED, UPDATED, Change
from protoevents.proxy.writers.sql import SqlWriter
from protoevents.v1 import event_pb2, query_service_pb2, query_service_pb2_grpc
from tests.support.ingest_helpers import proxy_settings, run
from tests.support.query_events import stored_event

Q = query_service_pb2
Watch = grpc.aio.UnaryStreamCall[Q.WatchEventsRequest, Q.WatchEventsResponse]


async def read(call: Watch, count: int) -> list[tuple[int, str, str]]:
    """The next `count` changes as (kind, site, message)."""
    got: list[tuple[int, str, str]] = []
    for _ in range(count):
        response = await asyncio.wait_for(call.read(), 30)
        assert isinstance(response, Q.WatchEventsResponse), response
        got.append((response.kind, response.event.site, response.event.message))
    return got


def test_watch_and_list_select_events_by_site(tmp_path: Path, database_url: str) -> None:
    def event(second: int, message: str, site: str = "") -> event_pb2.Event:
        return stored_event(second, message=message, site=site)

    async def scenario() -> None:
        settings = proxy_settings(tmp_path, db=database_url, writer_batch_interval_ms=20)
        async with (
            run_proxy(settings) as proxy,
            grpc.aio.insecure_channel(proxy.address) as channel,
        ):
            query = query_service_pb2_grpc.EventQueryServiceStub(channel)
            before = [event(1, "a1", "site-a"), event(2, "b1", "site-b"), event(3, "here 1")]
            SqlWriter(proxy.engine).write_blocking([Change(CREATED, e) for e in before])

            async def listed(site: str) -> list[str]:
                request = Q.ListEventsRequest(filter=Q.EventFilter(site=site))
                return [e.message for e in (await query.ListEvents(request)).events]

            assert await listed("site-a") == ["a1"]
            assert await listed("site-b") == ["b1"]
            assert await listed("") == ["here 1", "b1", "a1"]

            # Each watch is live once its replay (read from the database) has come.
            site_a = query.WatchEvents(
                Q.WatchEventsRequest(filter=Q.EventFilter(site="site-a"), replay_count=10)
            )
            every = query.WatchEvents(Q.WatchEventsRequest(replay_count=3))
            replayed = Q.CHANGE_KIND_REPLAYED
            assert await read(site_a, 1) == [(replayed, "site-a", "a1")]
            assert await read(every, 3) == [
                (replayed, "site-a", "a1"),
                (replayed, "site-b", "b1"),
                (replayed, "", "here 1"),
            ]

            a2 = event(5, "a2", "site-a")
            live = [event(4, "b2", "site-b"), a2, event(6, "here 2")]
            update = event_pb2.Event()
            update.CopyFrom(a2)
            update.count = 2
            proxy.hub.publish([Change(CREATED, e) for e in live] + [Change(UPDATED, update)])
            created, updated = Q.CHANGE_KIND_CREATED, Q.CHANGE_KIND_UPDATED
            assert await read(site_a, 2) == [(created, "site-a", "a2"), (updated, "site-a", "a2")]
            assert await read(every, 4) == [
                (created, "site-b", "b2"),
                (created, "site-a", "a2"),
                (created, "", "here 2"),
                (updated, "site-a", "a2"),
            ]
            # Nothing else came to the site's watch in between: its next change is the next.
            a3 = event(7, "a3", "site-a")
            proxy.hub.publish([Change(CREATED, event(8, "b3", "site-b")), Change(CREATED, a3)])
            assert await read(site_a, 1) == [(created, "site-a", "a3")]
            site_a.cancel()
            every.cancel()

    run(scenario())
