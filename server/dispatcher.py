"""Feeds the changes in the write-ahead log to each writer, in batches, from its own bookmark."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from server import changelog
from server.changes import UPDATED, Change, Writer
from server.metrics import Metrics
from server.wal import WriteAheadLog

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Jittered exponential backoff: attempt n waits a random 50-100 % of
    min(maximum, initial * 2**n)."""

    initial: float = 0.1
    maximum: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling: float = min(self.maximum, self.initial * 2.0 ** min(attempt, 30))
        return ceiling * random.uniform(0.5, 1.0)


def coalesce(changes: Sequence[Change]) -> list[Change]:
    """The changes with every UPDATE of an id but its last one left out (counts only grow,
    so the last carries all). CREATEs and the order of what remains are kept."""
    last: dict[str, int] = {}
    for index, change in enumerate(changes):
        if change.kind == UPDATED:
            last[change.event.id] = index
    if len(last) == sum(1 for c in changes if c.kind == UPDATED):
        return list(changes)
    return [
        change
        for index, change in enumerate(changes)
        if change.kind != UPDATED or last[change.event.id] == index
    ]


class _WriterFeed:
    """The loop that feeds one writer."""

    def __init__(self, dispatcher: Dispatcher, writer: Writer) -> None:
        self.dispatcher = dispatcher
        self.writer = writer
        self.name = writer.name
        wal = dispatcher.wal
        self.bookmark = wal.register_reader(self.name)
        self.read_position = self.bookmark
        self.pending: list[Change] = []
        self.pending_end = self.bookmark
        self.written = 0
        self.failures = 0
        self.task: asyncio.Task[None] | None = None
        self.leader: _WriterFeed | None = None  # the feed whose commits this one waits for
        self.committed = asyncio.Event()  # set (and replaced) at each bookmark commit

    async def run(self) -> None:
        d = self.dispatcher
        wal = d.wal
        loop = asyncio.get_running_loop()
        first_pending_at = 0.0
        while True:
            if self.pending and (
                len(self.pending) >= d.batch_events
                or loop.time() - first_pending_at >= d.batch_interval_s
            ):
                await self.flush()
                continue
            if d.stopping.is_set() and self.read_position >= wal.end:
                await self.flush()
                return
            timeout = (
                max(0.0, first_pending_at + d.batch_interval_s - loop.time())
                if self.pending
                else None
            )
            if not await wal.wait_beyond(self.read_position, timeout):
                continue
            payloads, end = await wal.read_async(self.read_position, d.read_bytes)
            if not payloads:
                continue
            if not self.pending:
                first_pending_at = loop.time()
            for payload in payloads:
                self.pending.extend(changelog.decode(payload))
            self.read_position = end
            self.pending_end = end

    async def flush(self) -> None:
        """Write the pending changes, retrying until the writer takes them, then commit the
        bookmark. At stop, retrying ends at the dispatcher's deadline (the changes stay in
        the log behind the bookmark)."""
        if not self.pending:
            if self.pending_end != self.bookmark:
                await self._commit(self.pending_end)
            return
        d = self.dispatcher
        await self._leader_caught_up()
        batch = coalesce(self.pending)
        attempt = 0
        while True:
            try:
                await self.writer.write(batch)
                break
            except Exception:
                self.failures += 1
                d.metrics.write_failures.labels(self.name).inc()
                delay = d.backoff.delay(attempt)
                attempt += 1
                log.warning(
                    "writer %s failed a batch of %d changes (attempt %d); retrying in %.2f s",
                    self.name,
                    len(batch),
                    attempt,
                    delay,
                    exc_info=attempt == 1,
                )
                if d.give_up.is_set():
                    raise _GaveUpError from None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await d.give_up.wait()
        self.written += len(batch)
        d.metrics.written.labels(self.name).inc(len(batch))
        self.pending = []
        await self._commit(self.pending_end)

    async def _leader_caught_up(self) -> None:
        """Wait until the followed writer has committed every pending change (at stop, until
        the dispatcher gives up)."""
        leader = self.leader
        give_up = self.dispatcher.give_up
        while leader is not None and leader.bookmark < self.pending_end:
            if give_up.is_set():
                raise _GaveUpError
            committed = asyncio.ensure_future(leader.committed.wait())
            gave_up = asyncio.ensure_future(give_up.wait())
            await asyncio.wait((committed, gave_up), return_when=asyncio.FIRST_COMPLETED)
            committed.cancel()
            gave_up.cancel()

    async def _commit(self, position: int) -> None:
        wal = self.dispatcher.wal
        await wal.commit_bookmark(self.name, position)
        self.bookmark = position
        committed, self.committed = self.committed, asyncio.Event()
        committed.set()
        self.dispatcher.metrics.writer_lag.labels(self.name).set(max(0, wal.end - position))


class _GaveUpError(Exception):
    """Stop was asked and its deadline passed while a writer was failing."""


class Dispatcher:
    """Runs one feed per writer. Each flushes on size (`batch_events` changes) or time
    (`batch_interval_s` after its first pending change, also when traffic stops), advances its
    bookmark only after the writer succeeded, and retries failures with jittered backoff. A
    slow or failing writer only falls behind in the log; ingest and other writers go on.

    `follows` maps a writer's name to the name of another writer: the follower is handed a
    change only once the other has committed it (say, publishing to watchers only what the
    SQL writer has stored, so that what a watcher sees can be queried). Writers named in
    `live_only` start at the end of the log rather than at their bookmark.
    """

    def __init__(
        self,
        wal: WriteAheadLog,
        writers: Sequence[Writer],
        *,
        batch_events: int = 1000,
        batch_interval_s: float = 0.2,
        backoff: Backoff | None = None,
        metrics: Metrics | None = None,
        read_bytes: int = 1 << 20,
        follows: Mapping[str, str] | None = None,
        live_only: Collection[str] = (),
    ) -> None:
        names = [w.name for w in writers]
        if len(set(names)) != len(names):
            raise ValueError(f"writer names must differ: {names}")
        for follower, leader in (follows or {}).items():
            if follower not in names or leader not in names or follower == leader:
                raise ValueError(f"writer {follower!r} cannot follow {leader!r}: {names}")
        self.wal = wal
        self.batch_events = batch_events
        self.batch_interval_s = batch_interval_s
        self.backoff = backoff or Backoff()
        self.metrics = metrics or Metrics()
        self.read_bytes = read_bytes
        self.stopping = asyncio.Event()
        self.give_up = asyncio.Event()
        self.feeds = [_WriterFeed(self, w) for w in writers]
        for follower, leader in (follows or {}).items():
            self.feed(follower).leader = self.feed(leader)
        for name in live_only:  # they pass changes on as they come: no history at start
            feed = self.feed(name)
            feed.read_position = feed.pending_end = max(feed.bookmark, wal.end)

    def start(self) -> None:
        for feed in self.feeds:
            feed.task = asyncio.create_task(feed.run(), name=f"writer-{feed.name}")

    def feed(self, name: str) -> _WriterFeed:
        return next(f for f in self.feeds if f.name == name)

    async def stop(self, timeout: float | None = None) -> bool:
        """Write everything in the log to every writer, then close the writers. A writer
        still failing after `timeout` seconds is left behind its bookmark (its changes stay
        in the log for the next start). Returns whether every writer caught up."""
        self.stopping.set()
        self.wal.wake_readers()
        tasks = [f.task for f in self.feeds if f.task is not None]
        caught_up = True
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            if late:
                self.give_up.set()  # ends retrying; a write that hangs is cancelled
                _, hung = await asyncio.wait(late, timeout=1.0)
                for task in hung:
                    task.cancel()
                if hung:
                    await asyncio.wait(hung)
            for task in tasks:
                if task.cancelled() or task.exception() is not None:
                    caught_up = False
                    if not task.cancelled() and not isinstance(task.exception(), _GaveUpError):
                        log.error("writer feed failed", exc_info=task.exception())
        for feed in self.feeds:
            try:
                await feed.writer.close()
            except Exception:
                log.exception("closing writer %s failed", feed.name)
        return caught_up
