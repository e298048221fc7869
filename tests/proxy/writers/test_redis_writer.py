"""The Redis writer against a real Redis: recent events per source, updates, pub/sub, outages."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from protoevents.proxy.changes import CREATED, UPDATED, Change
from protoevents.proxy.dispatcher import Dispatcher
from protoevents.proxy.wal import WriteAheadLog
from protoevents.proxy.writers import redis_keys
from protoevents.proxy.writers.redis import RedisOptions, RedisWriter
from protoevents.recorder.backoff import Backoff
from protoevents.recorder.setaside import read_batches
from protoevents.v1 import event_pb2, query_service_pb2
from tests.support.events import repeated, stored_event
from tests.support.ingest_helpers import make_events, wait_until
from tests.support.unavailable import unavailable
from tests.support.wal import append

T = TypeVar("T")
pytestmark = pytest.mark.redis


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def recent(
    url: str, prefix: str, node: str, component: str, site: str = ""
) -> list[event_pb2.Event]:
    """What a reader of the writer's keys sees: the source's events, oldest first."""
    client = redis.Redis.from_url(url)
    try:
        stream = redis_keys.stream_key(prefix, node, component, site)
        by_id = redis_keys.events_key(prefix, node, component, site)
        ids = [fields[b"id"] for _, fields in client.xrange(stream)]
        stored = client.hmget(by_id, ids) if ids else []
        assert client.hlen(by_id) == len(ids)  # stream and hash agree
    finally:
        client.close()
    return [event_pb2.Event.FromString(data) for data in stored]


def test_keeps_the_most_recent_events_of_each_source(redis_url: str, redis_prefix: str) -> None:
    async def main() -> None:
        writer = RedisWriter(RedisOptions(url=redis_url, key_prefix=redis_prefix, recent_max=3))
        a = [stored_event(n, node="node-a") for n in range(5)]
        b = [stored_event(n, node="node-b") for n in range(2)]
        await writer.write([Change(CREATED, e) for e in a[:2] + b + a[2:]])
        await writer.close()
        assert recent(redis_url, redis_prefix, "node-a", "cluster-controller") == a[2:]
        assert recent(redis_url, redis_prefix, "node-b", "cluster-controller") == b
        client = redis.Redis.from_url(redis_url)
        assert client.smembers(redis_keys.sources_key(redis_prefix)) == {
            redis_keys.stream_key(redis_prefix, f"node-{n}", "cluster-controller").encode()
            for n in "ab"
        }
        client.close()

    run(main())


# Sources whose keys the first layout (`{prefix}:recent:{node}:{component}` and `...:events`)
# shared: one stream for the first two, and the stream of the fourth and fifth was the hash
# of the third.
COLLIDED = [("a:b", "c"), ("a", "b:c"), ("n", "c"), ("n", "c:events"), ("n:c", "events")]


def test_sources_whose_names_collided_keep_their_own_stream_and_hash(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path / "wal")
        writer = RedisWriter(RedisOptions(url=redis_url, key_prefix=redis_prefix, recent_max=10))
        dispatcher = Dispatcher(
            wal,
            [writer],
            batch_interval_s=0.01,
            backoff=Backoff(initial=0.01, maximum=0.1),
            max_attempts=2,
            set_aside_dir=tmp_path / "set-aside",
        )
        dispatcher.start()
        sent = {
            source: make_events(
                4, source=event_pb2.EventSource(node=source[0], component=source[1])
            )
            for source in COLLIDED
        }
        interleaved = [events[n] for n in range(4) for events in sent.values()]
        await append(wal, interleaved[:10])  # batches holding every source at once
        await append(wal, interleaved[10:])
        await wait_until(lambda: wal.bookmark(writer.name) == wal.end, timeout=30)
        assert await dispatcher.stop(timeout=10)
        await wal.close()
        await writer.close()
        assert dispatcher.feed(writer.name).set_aside == 0
        assert read_batches(tmp_path / "set-aside" / writer.name) == []
        for (node, component), events in sent.items():
            assert recent(redis_url, redis_prefix, node, component) == events
        client = redis.Redis.from_url(redis_url)
        streams = {redis_keys.stream_key(redis_prefix, *source).encode() for source in COLLIDED}
        assert client.smembers(redis_keys.sources_key(redis_prefix)) == streams
        assert len(list(client.scan_iter(match=f"{redis_prefix}:*"))) == 2 * len(COLLIDED) + 1
        client.close()

    run(main())


def test_one_source_at_two_sites_and_here_keeps_three_streams(
    redis_url: str, redis_prefix: str
) -> None:
    """A central's Redis: node-1/agent of site-a, of site-b and of central itself."""
    sent: dict[str, list[event_pb2.Event]] = {}
    for site in ("site-a", "site-b", ""):
        sent[site] = [stored_event(n, node="node-1", component="agent") for n in range(3)]
        for event in sent[site]:
            event.site = site

    async def main() -> None:
        writer = RedisWriter(RedisOptions(url=redis_url, key_prefix=redis_prefix))
        await writer.write([Change(CREATED, e) for events in sent.values() for e in events])
        await writer.close()

    run(main())
    for site, events in sent.items():
        assert recent(redis_url, redis_prefix, "node-1", "agent", site) == events


def test_an_update_replaces_the_event_in_place_and_replays_change_nothing(
    redis_url: str, redis_prefix: str
) -> None:
    async def main() -> None:
        writer = RedisWriter(RedisOptions(url=redis_url, key_prefix=redis_prefix, recent_max=10))
        first, second = stored_event(1, node="n"), stored_event(2, node="n")
        batch = [
            Change(CREATED, first),
            Change(CREATED, second),
            Change(UPDATED, repeated(first, 5, later_ms=900)),
        ]
        await writer.write(batch)
        await writer.write(batch)  # the dispatcher replays after a crash
        events = recent(redis_url, redis_prefix, "n", "cluster-controller")
        assert [(e.id, e.count) for e in events] == [(first.id, 5), (second.id, 1)]
        # An update of an event no longer kept comes back as the newest.
        await writer.write([Change(UPDATED, repeated(stored_event(0, node="n"), 2, 10))])
        assert [e.count for e in recent(redis_url, redis_prefix, "n", "cluster-controller")] == [
            5,
            1,
            2,
        ]
        await writer.close()

    run(main())


def test_every_change_is_published_as_a_watch_events_response(
    redis_url: str, redis_prefix: str
) -> None:
    async def main() -> None:
        channel = f"{redis_prefix}:changes"
        writer = RedisWriter(RedisOptions(url=redis_url, key_prefix=redis_prefix, channel=channel))
        subscriber = aioredis.Redis.from_url(redis_url)
        pubsub = subscriber.pubsub()
        await pubsub.subscribe(channel)
        first = stored_event(1)
        sent = [Change(CREATED, first), Change(UPDATED, repeated(first, 2, later_ms=5))]
        await writer.write(sent)
        got: list[query_service_pb2.WatchEventsResponse] = []
        async with asyncio.timeout(10):
            while len(got) < 2:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    got.append(query_service_pb2.WatchEventsResponse.FromString(message["data"]))
        assert [(r.kind, r.event) for r in got] == [(c.kind, c.event) for c in sent]
        await pubsub.aclose()
        await subscriber.aclose()
        await writer.close()

    run(main())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def spare_redis_port(tmp_path: Path) -> Iterator[int]:
    """A port where no Redis runs yet; a redis-server the test starts there is shut down."""
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed"
        unavailable(reason)
    port = _free_port()
    yield port
    client = redis.Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        client.shutdown(nosave=True)
    except redis.RedisError:
        pass  # not started, or already gone
    finally:
        client.close()


def start_redis(port: int, folder: Path) -> None:
    subprocess.run(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--dir",
            str(folder),
            "--logfile",
            str(folder / "redis.log"),
        ],
        check=True,
        timeout=30,
    )


def test_redis_down_backs_the_writer_up_and_it_catches_up_once_redis_is_back(
    spare_redis_port: int, tmp_path: Path
) -> None:
    url = f"redis://127.0.0.1:{spare_redis_port}/0"

    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path / "wal")
        writer = RedisWriter(
            RedisOptions(url=url, key_prefix="pe", recent_max=100, connect_timeout_s=1)
        )
        dispatcher = Dispatcher(
            wal, [writer], batch_interval_s=0.01, backoff=Backoff(initial=0.01, maximum=0.1)
        )
        dispatcher.start()
        events = make_events(20)
        await append(wal, events[:10])
        await wait_until(lambda: dispatcher.feed(writer.name).failures >= 2, timeout=30)
        assert wal.bookmark(writer.name) == 0  # nothing counted as written
        await append(wal, events[10:])  # the log takes events while Redis is down
        start_redis(spare_redis_port, tmp_path)
        await wait_until(lambda: wal.bookmark(writer.name) == wal.end, timeout=60)
        assert await dispatcher.stop(timeout=10)
        await wal.close()
        stored = recent(url, "pe", "node-1", "cluster-controller")
        assert [e.id for e in stored] == [e.id for e in events]

    run(main())
