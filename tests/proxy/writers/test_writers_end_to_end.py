"""A recorder -> the proxy -> SQL, syslog (WARNING and above) and Redis, each getting its share."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import sqlalchemy as sa

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.proxy.app import run_proxy
from protoevents.proxy.changes import UPDATED
from protoevents.proxy.writers import redis_keys
from protoevents.proxy.writers.filters import WriterFilter
from protoevents.proxy.writers.redis import RedisOptions
from protoevents.proxy.writers.settings import WriterConfig
from protoevents.proxy.writers.sql import SqlOptions
from protoevents.proxy.writers.syslog import SyslogOptions
from protoevents.recorder import Recorder
from protoevents.v1 import event_pb2, query_service_pb2, severity_pb2
from tests.support.ingest_helpers import proxy_settings
from tests.support.syslog_listener import TcpCollector

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED


def record_mix(address: str, spool: Path) -> tuple[list[str], list[str], str]:
    """Records INFO, WARNING, ERROR and CRITICAL events and one WARNING three times; returns
    (all ids, the ids of WARNING and above, the id of the repeated event)."""
    with Recorder(
        component="controller",
        node="node-9",
        event_types=[ClusterEventType],
        proxy=address,
        spool_dir=spool,
        flush_interval=0.02,
    ) as recorder:
        info = [recorder.record(ELECTED, f"info {n}") for n in range(4)]
        loud = [
            recorder.record(ELECTED, f"{severity} {n}", severity=severity)
            for n, severity in enumerate(["warning", "warning", "error", "critical"])
        ]
        repeated = recorder.record(ELECTED, "flapping", severity="warning")
        recorder.record(ELECTED, "flapping", severity="warning")
        recorder.record(ELECTED, "flapping", severity="warning")
        assert recorder.drain(30)
    return [*info, *loud, repeated], [*loud, repeated], repeated


@pytest.mark.redis
def test_each_writer_gets_exactly_its_share(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    async def main() -> None:
        collector = await TcpCollector().start()
        channel = f"{redis_prefix}:changes"
        subscriber = aioredis.Redis.from_url(redis_url)
        pubsub = subscriber.pubsub()
        await pubsub.subscribe(channel)
        writers = (
            WriterConfig("db", SqlOptions()),
            WriterConfig(
                "alerts",
                SyslogOptions(address=f"127.0.0.1:{collector.port}", transport="tcp"),
                WriterFilter(min_severity=severity_pb2.SEVERITY_WARNING),
            ),
            WriterConfig(
                "recent", RedisOptions(url=redis_url, key_prefix=redis_prefix, channel=channel)
            ),
        )
        settings = proxy_settings(tmp_path / "data", writers=writers)
        async with run_proxy(settings) as proxy:
            everything, loud, repeated = await asyncio.to_thread(
                record_mix, proxy.address, tmp_path / "spool"
            )
        # Stopping the proxy wrote everything to every writer.

        engine = sa.create_engine(settings.db)
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT id, count FROM events")).all()
        engine.dispose()
        assert dict(rows) == {**dict.fromkeys(everything, 1), repeated: 3}

        syslog_ids = [m.split(b'id="')[1][:36].decode() for m in collector.messages]
        assert set(syslog_ids) == set(loud)
        assert b'change="updated"' in collector.messages[-1]
        assert b'count="3"' in collector.messages[-1]

        client = redis.Redis.from_url(redis_url)
        stream = redis_keys.stream_key(redis_prefix, "node-9", "controller")
        by_id = redis_keys.events_key(redis_prefix, "node-9", "controller")
        ids = [fields[b"id"].decode() for _, fields in client.xrange(stream)]
        stored = event_pb2.Event.FromString(client.hget(by_id, repeated) or b"")
        client.close()
        assert ids == everything
        assert stored.count == 3

        published: list[query_service_pb2.WatchEventsResponse] = []
        async with asyncio.timeout(10):
            while not published or published[-1].event.count != 3:  # the last change
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    data = message["data"]
                    published.append(query_service_pb2.WatchEventsResponse.FromString(data))
        assert [r.event.id for r in published if r.kind != UPDATED] == everything
        updates = [(r.event.id, r.event.count) for r in published if r.kind == UPDATED]
        assert updates in ([(repeated, 3)], [(repeated, 2), (repeated, 3)])
        await pubsub.aclose()
        await subscriber.aclose()
        await collector.stop()

    asyncio.run(main())
