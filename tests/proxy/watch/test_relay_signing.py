"""The Redis relay is no way in: messages published on the real channel without the shared
key's signature reach no watcher and are counted; a change relayed from another proxy of
the key still arrives; the relay does not start without a key."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis

from protoevents.proxy.app import Proxy, run_proxy, start_proxy
from protoevents.proxy.changes import CREATED, Change, watch_message
from protoevents.proxy.config import Settings, SettingsError, from_sources
from protoevents.proxy.ownership import hide_secrets
from protoevents.proxy.watch.signing import sign
from protoevents.v1 import (
    event_pb2,
    proxy_service_pb2,
    proxy_service_pb2_grpc,
    query_service_pb2,
    query_service_pb2_grpc,
)
from tests.support.commands import CliRunner
from tests.support.ingest_helpers import make_event, proxy_settings, run

KEY = "the key both proxies of the test share"
Q = query_service_pb2
Watch = grpc.aio.UnaryStreamCall[Q.WatchEventsRequest, Q.WatchEventsResponse]

pytestmark = pytest.mark.redis


def forged_messages(channel: str) -> list[bytes]:
    """What someone who can publish on the channel, without the key, might send: the
    payload alone, one signed with another key, one with a signature cut short, garbage."""
    fake = watch_message(Change(CREATED, make_event(message="fabricated")))
    signed = sign(KEY.encode(), channel, fake)
    return [
        fake,
        sign(b"a key that is not the proxies' one", channel, fake),
        signed[: len(signed) - len(fake) - 1] + fake,
        sign(KEY.encode(), "another channel", fake),
        b"\x00garbage",
    ]


async def watch(proxy: Proxy, channel: grpc.aio.Channel) -> Watch:
    """A watch of `proxy` known to be live: it replays one stored marker event, and its
    subscription precedes its replay."""
    marker = make_event(message="marker")
    await record(proxy, marker)
    query = query_service_pb2_grpc.EventQueryServiceStub(channel)
    listed = Q.ListEventsRequest(filter=Q.EventFilter(message_contains="marker"))
    async with asyncio.timeout(30):
        while not (await query.ListEvents(listed)).events:
            await asyncio.sleep(0.02)
    call = query.WatchEvents(Q.WatchEventsRequest(replay_count=1))
    first = await asyncio.wait_for(call.read(), 30)
    assert isinstance(first, Q.WatchEventsResponse)
    assert (first.kind, first.event.id) == (Q.CHANGE_KIND_REPLAYED, marker.id)
    return call


async def record(proxy: Proxy, event: event_pb2.Event) -> None:
    async with grpc.aio.insecure_channel(proxy.address) as channel:
        stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)
        request = proxy_service_pb2.RecordBatchRequest(events=[event])
        assert (await stub.RecordBatch(request, timeout=30)).result.accepted_count == 1


def forged_count(proxy: Proxy, reason: str) -> float:
    value = proxy.metrics.registry.get_sample_value(
        "protoevents_relay_forged_total", {"reason": reason}
    )
    return value or 0.0


def test_forged_messages_reach_no_watcher_and_a_relayed_change_still_arrives(
    tmp_path: Path,
    redis_url: str,
    redis_channel: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = {"redis_url": redis_url, "redis_channel": redis_channel, "redis_relay_key": KEY}

    async def scenario() -> None:
        publisher = aioredis.Redis.from_url(redis_url)
        async with (
            run_proxy(proxy_settings(tmp_path / "a", **shared)) as a,
            run_proxy(proxy_settings(tmp_path / "b", **shared)) as b,
            grpc.aio.insecure_channel(b.address) as channel,
        ):
            call = await watch(b, channel)
            for message in forged_messages(redis_channel):
                assert await publisher.publish(redis_channel, message) >= 2  # both relays
            genuine = make_event(message="recorded on a")
            await record(a, genuine)
            # Pub/sub keeps the order of the channel: had a forged message reached the
            # watcher, it would have come before the change relayed from a.
            while True:  # the marker of b may come live first
                change = await asyncio.wait_for(call.read(), 30)
                assert isinstance(change, Q.WatchEventsResponse)
                if change.event.message != "marker":
                    break
            assert (change.kind, change.event.id) == (Q.CHANGE_KIND_CREATED, genuine.id)
            call.cancel()
            for proxy in (a, b):
                assert forged_count(proxy, "unsigned") == 2
                assert forged_count(proxy, "bad_signature") == 3
        await publisher.aclose()

    with caplog.at_level(logging.WARNING, logger="protoevents.proxy.watch.redis_bus"):
        run(scenario())
    warnings = [
        r.getMessage() for r in caplog.records if "not signed with the relay key" in r.getMessage()
    ]
    assert len(warnings) == 2, warnings  # one per proxy for the five: at most one a minute
    assert all(w.startswith("dropped 1 message on Redis channel") for w in warnings)
    assert not any(KEY in r.getMessage() for r in caplog.records)


def test_the_redis_writer_of_a_proxy_with_the_key_feeds_the_watchers_of_the_others(
    tmp_path: Path, redis_url: str, redis_channel: str, redis_prefix: str
) -> None:
    """The proxy `c` has no relay, only the key and a Redis writer publishing on the channel."""
    config = tmp_path / "c.toml"
    config.write_text(
        f'redis_relay_key = "{KEY}"\n[[writers]]\nkind = "sql"\n'
        f'[[writers]]\nname = "recent"\nkind = "redis"\nurl = "{redis_url}"\n'
        f'key_prefix = "{redis_prefix}"\nchannel = "{redis_channel}"\n'
    )
    c_settings = from_sources(config, {}, {"listen": "127.0.0.1:0", "data_dir": tmp_path / "c"})
    shared = {"redis_url": redis_url, "redis_channel": redis_channel, "redis_relay_key": KEY}

    async def scenario() -> None:
        async with (
            run_proxy(proxy_settings(tmp_path / "b", **shared)) as b,
            run_proxy(c_settings) as c,
            grpc.aio.insecure_channel(b.address) as channel,
        ):
            call = await watch(b, channel)
            written = make_event(message="written to Redis by c")
            await record(c, written)
            while True:
                change = await asyncio.wait_for(call.read(), 30)
                assert isinstance(change, Q.WatchEventsResponse)
                if change.event.message != "marker":
                    break
            assert (change.kind, change.event.id) == (Q.CHANGE_KIND_CREATED, written.id)
            assert forged_count(b, "unsigned") == forged_count(b, "bad_signature") == 0
            call.cancel()

    run(scenario())


def test_the_relay_does_not_start_without_a_key(
    tmp_path: Path, redis_url: str, run_cli: CliRunner
) -> None:
    settings = Settings(listen="127.0.0.1:0", data_dir=tmp_path / "data", redis_url=redis_url)
    with pytest.raises(SettingsError, match="the Redis relay needs redis_relay_key"):
        run(start_proxy(settings))
    assert not (tmp_path / "data").exists()  # refused before anything opened
    with pytest.raises(SettingsError, match="redis_relay_key"):
        proxy_settings(tmp_path / "data", redis_url=redis_url)

    done = run_cli(
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(tmp_path / "data"),
        "--redis-url",
        redis_url,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"protoevents serve: setting redis_url = '{redis_url}': the Redis relay needs "
        "redis_relay_key or redis_relay_key_file"
    )
    assert "listening on" not in done.stdout


def test_the_key_is_kept_out_of_messages_and_reprs(tmp_path: Path, redis_url: str) -> None:
    key_file = tmp_path / "relay.key"
    key_file.write_text(f"  {KEY}\n")
    from_file = proxy_settings(tmp_path, redis_url=redis_url, redis_relay_key_file=key_file)
    assert from_file.required_relay_key() == KEY.encode()
    direct = proxy_settings(tmp_path, redis_url=redis_url, redis_relay_key=KEY)
    assert KEY not in repr(direct)
    with pytest.raises(SettingsError) as caught:
        proxy_settings(tmp_path, redis_url=redis_url, redis_relay_key="short secret")
    assert "short secret" not in str(caught.value)
    assert "12 bytes, fewer than 16" in str(caught.value)
    with pytest.raises(SettingsError, match="set one, not both"):
        direct.replace(redis_relay_key_file=key_file)
    typed = ["serve", "--redis-relay-key", KEY, f"--redis-relay-key={KEY}", "--listen", "x:1"]
    shown = ["serve", "--redis-relay-key", "(hidden)", "--redis-relay-key=(hidden)"]
    assert hide_secrets(typed) == [*shown, "--listen", "x:1"]
