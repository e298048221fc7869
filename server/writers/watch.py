"""The watch publishers: writers that hand stored changes to watchers, through this proxy's
hub or, across proxies, the Redis channel its relay (and every other proxy's) listens to."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.exceptions import RedisError

from protoevents.proxy.changes import Change
from protoevents.proxy.watch.hub import ChangeHub
from protoevents.proxy.watch.redis_bus import DEFAULT_CHANNEL, connect, describe, publish

log = logging.getLogger(__name__)


class HubWriter:
    """The writer that publishes the changes handed to it to this proxy's hub: live only, and
    it follows the writer that stores, so watchers see what can already be queried. It is
    `idle` while nobody watches: then its feed does not even decode the changes."""

    live_only = True
    follows_store = True

    def __init__(self, hub: ChangeHub, name: str = "watch") -> None:
        self.name = name
        self.hub = hub

    @property
    def idle(self) -> bool:
        return not self.hub

    async def write(self, changes: Sequence[Change]) -> None:
        self.hub.publish(changes)

    async def close(self) -> None:
        """Nothing to release: watch streams end with the server."""


class RedisWatchWriter:
    """The writer that publishes this proxy's stored changes on the channel, signed with the
    relay's key.

    Best effort: a batch Redis does not take is dropped (counted and logged once per
    outage), because watchers are cut off with UNAVAILABLE while Redis is down anyway and
    catch up with `replay_count`; keeping the batch would hold the write-ahead log back until
    ingest stops. Live only, and it follows the writer that stores, like HubWriter.
    """

    live_only = True
    follows_store = True

    def __init__(
        self, url: str, key: bytes, channel: str = DEFAULT_CHANNEL, name: str = "redis-watch"
    ) -> None:
        self.name = name
        self.url = url
        self.channel = channel
        self._key = key
        self.client = connect(url)
        self.published = 0
        self.dropped = 0
        self._failing = False

    async def write(self, changes: Sequence[Change]) -> None:
        try:
            await publish(self.client, self.channel, changes, self._key)
        except (RedisError, OSError) as exc:
            self.dropped += len(changes)
            if not self._failing:
                self._failing = True
                log.warning(
                    "%s: Redis at %s is unreachable (%s); changes are not published to "
                    "watchers until it is back",
                    self.name,
                    describe(self.url),
                    exc,
                )
            return
        if self._failing:
            self._failing = False
            log.info("%s: publishing to Redis at %s again", self.name, describe(self.url))
        self.published += len(changes)

    async def close(self) -> None:
        await self.client.aclose()
