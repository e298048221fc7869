"""The Redis writer (kind `redis`): the most recent events per source, and every change on a
pub/sub channel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from protoevents.proxy.changes import UPDATED, Change, PermanentWriteError, watch_message
from protoevents.proxy.watch.signing import sign
from protoevents.proxy.writers import redis_keys
from protoevents.proxy.writers.base import BuildContext, WriterConfigError, WriterOptions
from protoevents.v1 import event_pb2

REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class RedisOptions(WriterOptions):
    """Recent events per source and a pub/sub channel of changes (see RedisWriter)."""

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "protoevents"
    recent_max: int = 1000
    channel: str = "protoevents:changes"
    publish: bool = True
    connect_timeout_s: float = 5.0
    timeout_s: float = 10.0

    def validate(self) -> None:
        if urlsplit(self.url).scheme not in REDIS_SCHEMES:
            raise WriterConfigError(
                "url", self.url, "expected a redis://, rediss:// or unix:// URL"
            )
        if not self.key_prefix:
            raise WriterConfigError("key_prefix", self.key_prefix, "must not be empty")
        if self.publish and not self.channel:
            raise WriterConfigError("channel", self.channel, "must not be empty")
        for key in ("recent_max", "connect_timeout_s", "timeout_s"):
            if getattr(self, key) <= 0:
                raise WriterConfigError(key, getattr(self, key), "must be greater than 0")


Options = RedisOptions


# One call per batch. KEYS: a stream and a hash per change, then the set of streams.
# ARGV: channel, recent_max, publish flag, then per change: kind, id, event, message.
# Every key's type is checked before anything changes: a script that fails half-way keeps
# what it did before the error, and a retry would then skip the event it half stored.
_APPLY_BATCH = """
local channel, max, publish = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local sources = KEYS[#KEYS]
local expected = {'stream', 'hash'}
for i = 1, #KEYS - 1 do
  local found = redis.call('TYPE', KEYS[i])['ok']
  if found ~= 'none' and found ~= expected[2 - i % 2] then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. found ..
      ', not a ' .. expected[2 - i % 2])
  end
end
local found = redis.call('TYPE', sources)['ok']
if found ~= 'none' and found ~= 'set' then
  return redis.error_reply('WRONGTYPE ' .. sources .. ' holds a ' .. found .. ', not a set')
end
for i = 0, (#KEYS - 1) / 2 - 1 do
  local stream, hash = KEYS[2 * i + 1], KEYS[2 * i + 2]
  local at = 4 + 4 * i
  local kind, id, event, message = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local known = redis.call('HEXISTS', hash, id) == 1
  if kind == 'U' or not known then
    redis.call('HSET', hash, id, event)
  end
  if not known then
    redis.call('XADD', stream, '*', 'id', id)
    redis.call('SADD', sources, stream)
    local excess = redis.call('XLEN', stream) - max
    if excess > 0 then
      for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', excess)) do
        redis.call('HDEL', hash, entry[2][2])
        redis.call('XDEL', stream, entry[1])
      end
    end
  end
  if publish then
    redis.call('PUBLISH', channel, message)
  end
end
return #KEYS
"""


# Errors Redis answers that pass by themselves (memory, a busy script, loading, failover);
# any other error reply (WRONGTYPE, a bad argument) answers the same batch the same way.
_PASSING_ERRORS = (
    "OOM",
    "BUSY",
    "LOADING",
    "READONLY",
    "MASTERDOWN",
    "NOREPLICAS",
    "TRYAGAIN",
    "CLUSTERDOWN",
)


class RedisWriter:
    """Keeps the `recent_max` most recent events of each source (node, component; and site,
    for events forwarded from one) and publishes every change.

    Per source, with `n` the length of the node in UTF-8 bytes (server/writers/redis_keys.py
    builds the names): the stream `{prefix}:stream:{n}:{node}:{component}` orders the events
    by their first arrival (entries `id=<event id>`), the hash
    `{prefix}:events:{n}:{node}:{component}` maps each id to the event as it now stands
    (serialized `protoevents.v1.Event`): a dedup update replaces the hash entry and keeps the
    event's place in the stream. The set `{prefix}:sources` lists the streams. No two sources
    share a key, and no stream is named like a hash or the set, whatever the node and
    component hold. Past `recent_max`, the oldest entries leave the stream and the hash
    together. Every change is published on `channel` as a serialized
    `protoevents.v1.WatchEventsResponse` (kind CREATED or UPDATED, and the event), signed
    as the relay signs (watch/signing.py) when the proxy has a relay key.

    A batch is one script call: one round trip, applied atomically. Replays (after a crash or
    a failed call) leave the stored state as it was, but publish again: subscribers can see a
    change twice. A key of the wrong type (set by something else) refuses the whole batch.
    """

    def __init__(
        self, options: RedisOptions, name: str = "redis", relay_key: bytes | None = None
    ) -> None:
        self.name = name
        self.options = options
        self.relay_key = relay_key
        self.client = aioredis.Redis.from_url(
            options.url,
            socket_connect_timeout=options.connect_timeout_s,
            socket_timeout=options.timeout_s,
        )
        self._apply = self.client.register_script(_APPLY_BATCH)
        self.sources_key = redis_keys.sources_key(options.key_prefix)

    def stream_key(self, event: event_pb2.Event) -> str:
        """The stream of the event's source."""
        source = event.source
        prefix = self.options.key_prefix
        return redis_keys.stream_key(prefix, source.node, source.component, event.site)

    def events_key(self, event: event_pb2.Event) -> str:
        """The hash of the event's source."""
        source = event.source
        prefix = self.options.key_prefix
        return redis_keys.events_key(prefix, source.node, source.component, event.site)

    async def write(self, changes: Sequence[Change]) -> None:
        if not changes:
            return
        keys: list[str] = []
        args: list[bytes | str | int] = [
            self.options.channel,
            self.options.recent_max,
            int(self.options.publish),
        ]
        for change in changes:
            keys += [self.stream_key(change.event), self.events_key(change.event)]
            args += [
                "U" if change.kind == UPDATED else "C",
                change.event.id,
                change.event.SerializeToString(),
                self._message(change) if self.options.publish else b"",
            ]
        keys.append(self.sources_key)
        try:
            await self._apply(keys=keys, args=args)
        except aioredis.ResponseError as exc:
            if str(exc).startswith(_PASSING_ERRORS):
                raise
            raise PermanentWriteError(f"Redis refused the batch: {exc}") from exc

    def _message(self, change: Change) -> bytes:
        """What is published for `change`: signed for the relay when the proxy has its key."""
        message = watch_message(change)
        if self.relay_key is None:
            return message
        return sign(self.relay_key, self.options.channel, message)

    async def close(self) -> None:
        await self.client.aclose()


def build(options: RedisOptions, name: str, context: BuildContext) -> RedisWriter:
    return RedisWriter(options, name=name, relay_key=context.relay_key)
