"""Feeds the changes in the write-ahead log to each writer, in batches, from its own bookmark."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from protoevents.proxy.backlog import Backlog
from protoevents.proxy.changes import (
    CREATED,
    UPDATED,
    Change,
    PermanentWriteError,
    Writer,
    has_trait,
    merge_repeats,
)
from protoevents.proxy.metrics import Metrics
from protoevents.proxy.record_cache import DEFAULT_MAX_BYTES, Record, RecordCache
from protoevents.proxy.wal import WriteAheadLog
from protoevents.recorder.backoff import Backoff
from protoevents.recorder.setaside import SetAside, make_batch

log = logging.getLogger(__name__)


class _WriterFeed:
    """The loop that feeds one writer."""

    def __init__(self, dispatcher: Dispatcher, writer: Writer) -> None:
        self.dispatcher = dispatcher
        self.writer = writer
        self.name = writer.name
        wal = dispatcher.wal
        self.bookmark = wal.register_reader(self.name)
        self.read_position = self.bookmark
        self.pending: list[Record] = []  # read, not written yet
        self.pending_count = 0  # their changes (1 a record while they are not decoded)
        self.pending_end = self.bookmark
        self.written = 0
        self.failures = 0
        self.restarts = 0
        self.set_aside = 0  # changes set aside since start
        self.skipped = 0  # records passed while the writer was idle
        self.failing_since: float | None = None  # monotonic time of the first failure in a row
        self.last_error = ""  # of the last failed write, for health to say what is wrong
        self.restarting = False  # the feed failed and waits to start again
        self.store: SetAside | None = None  # where this writer's refused changes go
        self.task: asyncio.Task[None] | None = None
        self.leader: _WriterFeed | None = None  # the feed whose commits this one waits for
        self.committed = asyncio.Event()  # set (and replaced) at each bookmark commit
        self.skipped_to = 0  # a live-only feed starts at the end of the log: none before it
        metrics = dispatcher.metrics
        metrics.writer_lag.labels(self.name).set_function(self.lag)
        if dispatcher.backlog is not None:
            metrics.writer_lag_changes.labels(self.name).set_function(self.changes_behind)
            metrics.writer_oldest_age.labels(self.name).set_function(self.oldest_age)

    def lag(self) -> int:
        """Bytes of log this writer has still to write (read at each scrape, also from the
        metrics server's thread: it only reads two integers)."""
        return max(0, self.dispatcher.wal.end - max(self.bookmark, self.skipped_to))

    def changes_behind(self) -> int:
        """Changes this writer has still to write (from any thread: the backlog locks)."""
        backlog = self.dispatcher.backlog
        if backlog is None:
            return 0
        position = max(self.bookmark, self.skipped_to)
        return backlog.behind(position, self.dispatcher.wal.end).changes

    def oldest_age(self) -> float:
        """Seconds since the oldest change this writer has still to write was appended (0
        when it has none; from any thread)."""
        backlog = self.dispatcher.backlog
        if backlog is None:
            return 0.0
        return backlog.age(max(self.bookmark, self.skipped_to), self.dispatcher.wal.end)

    async def supervise(self) -> None:
        """Run the feed; when it fails for any reason, log it and start it again from its
        bookmark after a backoff (ends at stop once the dispatcher gives up)."""
        d = self.dispatcher
        attempt = 0
        while True:
            start_bookmark = self.bookmark
            try:
                await self.run()
                return
            except _GaveUpError:
                raise
            except Exception:
                if self.bookmark != start_bookmark:
                    attempt = 0  # it made progress before failing: not the same failure
                self.restarts += 1
                d.metrics.feed_restarts.labels(self.name).inc()
                delay = d.backoff.delay(attempt)
                attempt += 1
                log.exception(
                    "writer %s: its feed failed; restarting it from its bookmark (%d) in %.2f s",
                    self.name,
                    self.bookmark,
                    delay,
                )
                self.restarting = True
                self._failing()
                self.pending, self.pending_count = [], 0
                self.read_position = self.pending_end = self.bookmark
                if d.give_up.is_set():
                    raise _GaveUpError from None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await d.give_up.wait()
                self.restarting = False

    def _failing(self) -> None:
        if self.failing_since is None:
            self.failing_since = self.dispatcher.clock()
        self.dispatcher.state_changed()

    def _succeeded(self) -> None:
        if self.failing_since is not None or self.restarting:
            self.failing_since = None
            self.restarting = False
            self.dispatcher.state_changed()

    async def run(self) -> None:
        d = self.dispatcher
        wal = d.wal
        loop = asyncio.get_running_loop()
        first_pending_at = 0.0
        while True:
            if self.pending and (
                self.pending_count >= d.batch_events
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
            records, end = await d.records.read(self.read_position, d.read_bytes)
            if not records:
                continue
            if not self.pending:
                first_pending_at = loop.time()
            self._take(records)
            self.read_position = end
            self.pending_end = end
            d.records.drop_passed()

    def _take(self, records: list[Record]) -> None:
        """Add read records to the pending ones, decoding them unless the writer is idle."""
        self.pending.extend(records)
        if has_trait(self.writer, "idle"):
            self.pending_count += len(records)
            return
        for record in records:
            self.pending_count += len(record.changes())

    async def flush(self) -> None:
        """Write the pending changes, retrying until the writer takes them, then commit the
        bookmark. At stop, retrying ends at the dispatcher's deadline (the changes stay in
        the log behind the bookmark). A writer idle once the leader has them is handed
        nothing: the records are passed undecoded."""
        if not self.pending:
            if self.pending_end != self.bookmark:
                await self._commit(self.pending_end)
            return
        await self._leader_caught_up()
        if has_trait(self.writer, "idle"):
            self.skipped += len(self.pending)
        else:
            batch = merge_repeats([c for record in self.pending for c in record.changes()])
            refused = await self._write(batch, isolate=False)
            if refused is not None:
                await self._isolate(batch, refused)
        self.pending, self.pending_count = [], 0
        await self._commit(self.pending_end)

    async def _write(self, batch: list[Change], *, isolate: bool) -> PermanentWriteError | None:
        """Write `batch`, retrying transient failures with backoff for as long as they last.
        Returns the refusal, the batch not written, once the writer refused it permanently
        `max_attempts` times (once when `isolate`: the batch was refused whole before); with
        no set-aside store, refusals are retried like any failure."""
        d = self.dispatcher
        attempt = refusals = 0
        while True:
            try:
                await self.writer.write(batch)
                break
            except Exception as exc:
                self.failures += 1
                d.metrics.write_failures.labels(self.name).inc()
                permanent = isinstance(exc, PermanentWriteError) and self.store is not None
                refusals += permanent
                self.last_error = str(exc) or type(exc).__name__
                if permanent and (isolate or refusals >= d.max_attempts):
                    assert isinstance(exc, PermanentWriteError)
                    if not isolate:
                        log.error(
                            "writer %s refused a batch of %d changes %d times (%s); finding "
                            "the changes it refuses to set them aside",
                            self.name,
                            len(batch),
                            refusals,
                            exc,
                        )
                    return exc
                self._failing()
                delay = d.backoff.delay(attempt)
                attempt += 1
                log.warning(
                    "writer %s failed a batch of %d changes (attempt %d%s); retrying in %.2f s",
                    self.name,
                    len(batch),
                    attempt,
                    ", refused" if permanent else "",
                    delay,
                    exc_info=attempt == 1,
                )
                if d.give_up.is_set():
                    raise _GaveUpError from None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await d.give_up.wait()
        self._succeeded()
        self.written += len(batch)
        d.metrics.written.labels(self.name).inc(len(batch))
        return None

    async def _isolate(self, batch: list[Change], refused: PermanentWriteError) -> None:
        """Write a batch the writer refuses in halves, in order, down to the single changes
        it refuses, and set those aside."""
        if len(batch) == 1:
            await self._set_aside(batch[0], str(refused))
            return
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            refusal = await self._write(half, isolate=True)
            if refusal is not None:
                await self._isolate(half, refusal)

    async def _set_aside(self, change: Change, reason: str) -> None:
        """Keep a refused change in this writer's set-aside store (retrying while the disk
        refuses it: nothing is dropped), count it and log it."""
        d = self.dispatcher
        batch = make_batch(
            f"writer:{self.name}",
            reason,
            [change.event] if change.kind == CREATED else [],
            [change.event] if change.kind == UPDATED else [],
        )
        attempt = 0
        while self.store is not None:
            try:
                await asyncio.to_thread(self.store.put, batch)
                break
            except OSError as exc:
                self._failing()
                delay = d.backoff.delay(attempt)
                attempt += 1
                log.error("writer %s: cannot set a change aside (%s)", self.name, exc)
                if d.give_up.is_set():
                    raise _GaveUpError from None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await d.give_up.wait()
        self.set_aside += 1
        d.metrics.set_aside.labels(self.name).inc()
        log.error(
            "writer %s refuses the %s change of event %s (%s); set aside in %s",
            self.name,
            "update" if change.kind == UPDATED else "new-event",
            change.event.id,
            reason,
            self.store.directory if self.store is not None else "",
        )

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

    A batch a writer refuses permanently (PermanentWriteError) `max_attempts` times in a row
    is written in halves down to the changes it refuses, which go to that writer's store in
    `set_aside_dir/<writer>/` (a `protoevents.recorder.setaside.SetAside`, held while the dispatcher
    runs); the writer then moves on. A feed that fails for any other reason is restarted from
    its bookmark with backoff. `on_state` is called when a writer starts or stops failing.

    The feeds read the log through one RecordCache (`records`, holding at most `cache_bytes`
    of records): each record is read and decoded once for all of them. A writer that says it
    is `idle` (no one to hand changes to now) is handed nothing: its feed passes the records
    without decoding them, still after the followed writer committed them.

    With a `backlog` (the one ingest fills), each writer's changes behind and the age of the
    oldest are metrics too.
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
        cache_bytes: int = DEFAULT_MAX_BYTES,
        follows: Mapping[str, str] | None = None,
        live_only: Collection[str] = (),
        max_attempts: int = 5,
        set_aside_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        backlog: Backlog | None = None,
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
        self.backoff = backoff or Backoff(initial=0.1, maximum=30.0)
        self.metrics = metrics or Metrics()
        self.read_bytes = read_bytes
        self.max_attempts = max_attempts
        self.clock = clock
        self.backlog = backlog  # what ingest appended: each writer's changes behind, by metric
        self.on_state: Callable[[], None] | None = None
        self.stopping = asyncio.Event()
        self.give_up = asyncio.Event()
        self.feeds = [_WriterFeed(self, w) for w in writers]
        self.records = RecordCache(wal, self._low_water, cache_bytes)
        for follower, leader in (follows or {}).items():
            self.feed(follower).leader = self.feed(leader)
        for name in live_only:  # they pass changes on as they come: no history at start
            feed = self.feed(name)
            feed.read_position = feed.pending_end = feed.skipped_to = max(feed.bookmark, wal.end)
        if set_aside_dir is not None:
            try:
                for feed in self.feeds:
                    feed.store = SetAside(set_aside_dir / feed.name)
            except BaseException:
                self.close_stores()
                raise

    def start(self) -> None:
        for feed in self.feeds:
            feed.task = asyncio.create_task(feed.supervise(), name=f"writer-{feed.name}")

    def state_changed(self) -> None:
        if self.on_state is not None:
            self.on_state()

    def close_stores(self) -> None:
        for feed in self.feeds:
            if feed.store is not None:
                feed.store.close()
                feed.store = None

    def _low_water(self) -> int:
        """The smallest read position of the feeds: records before it are passed by all."""
        return min((f.read_position for f in self.feeds), default=self.wal.end)

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
        self.close_stores()
        return caught_up
