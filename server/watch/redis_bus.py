"""Changes over a Redis pub/sub channel, so that watchers of every proxy see every change.

The payload of a message is one serialized `protoevents.v1.WatchEventsResponse` (kind and
event) per change, signed with the relay's shared key (watch/signing.py); what publishes it
signed (this module's `publish`, the Redis writer given the key) feeds the watchers of every
proxy subscribed to the channel. A message without a valid signature is dropped, counted in
`protoevents_relay_forged_total` and logged at most once per `FORGED_LOG_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from google.protobuf.message import DecodeError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from protoevents.proxy.changes import CREATED, UPDATED, Change, watch_message
from protoevents.proxy.metrics import Metrics
from protoevents.proxy.statuses import UnavailableError
from protoevents.proxy.throttle import Throttle
from protoevents.proxy.watch.hub import ChangeHub, Outgoing
from protoevents.proxy.watch.signing import ForgedMessageError, sign, verify
from protoevents.recorder.backoff import Backoff
from protoevents.v1 import query_service_pb2

log = logging.getLogger(__name__)

DEFAULT_CHANNEL = "protoevents:changes"
FORGED_LOG_INTERVAL_S = 60.0


def connect(url: str) -> aioredis.Redis:
    """A client that fails fast when Redis is down (callers have their own retry policy)."""
    client: aioredis.Redis = aioredis.Redis.from_url(
        url, socket_connect_timeout=2.0, socket_timeout=5.0, retry=Retry(NoBackoff(), 0)
    )
    return client


def decode(payload: bytes) -> Change:
    """The change of a message; ValueError when it is not a WatchEventsResponse of a
    CREATED or UPDATED event."""
    try:
        message = query_service_pb2.WatchEventsResponse.FromString(payload)
    except DecodeError as exc:
        raise ValueError(f"not a WatchEventsResponse: {exc}") from None
    if message.kind not in (CREATED, UPDATED) or not message.event.id:
        raise ValueError(f"not a CREATED or UPDATED change: kind {message.kind}")
    return Change(message.kind, message.event)


async def publish(
    client: aioredis.Redis, channel: str, changes: Sequence[Change], key: bytes
) -> None:
    """Publish each change, in order, signed with `key`, in one round trip. Raises
    RedisError."""
    if not changes:
        return
    async with client.pipeline(transaction=False) as pipe:
        for change in changes:
            pipe.publish(channel, sign(key, channel, watch_message(change)))
        await pipe.execute()


def describe(url: str) -> str:
    """The URL with its password hidden, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class RedisRelay:
    """Subscribes to the channel and feeds the hub of this proxy, reconnecting with backoff.

    While it is not subscribed, `ensure_connected` raises UnavailableError; losing the
    subscription ends every watch with UNAVAILABLE (changes in between would be missed).
    """

    def __init__(
        self,
        url: str,
        hub: ChangeHub,
        key: bytes,
        channel: str = DEFAULT_CHANNEL,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.channel = channel
        self.hub = hub
        self._key = key
        self.metrics = metrics or Metrics()
        self._forged = Throttle(FORGED_LOG_INTERVAL_S, clock)
        self.connected = asyncio.Event()
        self.failed = asyncio.Event()  # set (and replaced) at each failed connection attempt
        self.error = "not connected yet"
        self.backoff = Backoff(initial=0.1, maximum=5.0)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redis-watch-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def ensure_connected(self, timeout: float = 2.0) -> None:
        """Return once subscribed; raise UnavailableError when the next connection attempt
        fails or none succeeds within `timeout` seconds."""
        if not self.connected.is_set():
            waits = [asyncio.ensure_future(e.wait()) for e in (self.connected, self.failed)]
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
        if not self.connected.is_set():
            raise UnavailableError(
                f"WatchEvents needs Redis at {describe(self.url)}, which is unreachable "
                f"({self.error}); ingest goes on, watch again later"
            )

    async def _run(self) -> None:
        attempt = 0
        while True:
            client = connect(self.url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    confirmed = await pubsub.get_message(timeout=5.0)
                    if confirmed is None or confirmed.get("type") != "subscribe":
                        raise ConnectionError("no confirmation of the subscription")
                    attempt = 0
                    self.connected.set()
                    log.info("watching changes on Redis %s %s", describe(self.url), self.channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._relay(message["data"])
                    raise ConnectionError("the subscription ended")
            except (RedisError, OSError) as exc:
                self.error = str(exc) or type(exc).__name__
            finally:
                await client.aclose()
            failed, self.failed = self.failed, asyncio.Event()
            failed.set()
            if self.connected.is_set():
                self.connected.clear()
                log.warning("lost Redis at %s: %s", describe(self.url), self.error)
                self.hub.fail_all(
                    UnavailableError(
                        f"lost the connection to Redis at {describe(self.url)} ({self.error}); "
                        "watch again (replay_count catches up)"
                    )
                )
            await asyncio.sleep(self.backoff.delay(attempt))
            attempt += 1

    def _relay(self, message: bytes) -> None:
        try:
            payload = verify(self._key, self.channel, message)
        except ForgedMessageError as exc:
            self._count_forged(exc)
            return
        try:
            change = decode(payload)
        except ValueError as exc:
            log.warning("ignored a message on %s: %s", self.channel, exc)
            return
        self.hub.publish_encoded([Outgoing.of(change, payload)])

    def _count_forged(self, forged: ForgedMessageError) -> None:
        self.metrics.relay_forged.labels(forged.reason).inc()
        count = self._forged.add("forged", 1)
        if count is not None:
            log.warning(
                "dropped %d message%s on Redis channel %s not signed with the relay key "
                "(redis_relay_key), the last with %s: a publisher without the key, or a "
                "proxy with another one (logged at most once per %.0f s)",
                count,
                "" if count == 1 else "s",
                self.channel,
                forged,
                FORGED_LOG_INTERVAL_S,
            )
