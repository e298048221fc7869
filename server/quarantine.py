"""The quarantine: events of types the proxy does not know yet, kept with their bytes until it does.

An event whose only fault is a type of newer protos (`protoevents.proxy.validation.UnknownType`) is
put here, durably, before its batch is acknowledged, and answered in `BatchResult.quarantined`. At
start the proxy hands every quarantined event whose type it now knows back to ingest, which stores
it like any other (idempotent by id), and keeps the rest.

`<data_dir>/quarantine/` holds numbered generations, each a set-aside store
(`protoevents.recorder.setaside`, stage "quarantine"). Events are appended to the newest. A release
writes what stays into a new generation, fsyncs it, then deletes the older ones whole: a crash at
any point leaves every event in at least one generation, and an event found twice is one event
(listings and releases go by id). A write that fails leaves its generation behind (its torn tail is
cut when it is next opened) and the next write starts a new one.

Changes forwarded by another proxy (`protoevents.proxy.forwarded`) of types unknown here are held
too, as batches of stage "forwarded" with their new events and updates, each kept as it came (its
site and count); a release hands them back to the forwarded path, one new event per id and its
highest update, so no count goes back.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Container, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from protoevents.proxy.changes import CREATED, UPDATED, Change, merge_repeats
from protoevents.proxy.metrics import Metrics
from protoevents.proxy.throttle import Throttle
from protoevents.proxy.validation import UnknownType, Validator
from protoevents.proxy.wal import LogFull
from protoevents.recorder.files import fsync_dir
from protoevents.recorder.setaside import SetAside, make_batch, read_batches
from protoevents.v1 import event_pb2, proxy_service_pb2, set_aside_pb2

log = logging.getLogger(__name__)

STAGE = "quarantine"
FORWARDED = "forwarded"
# Distinct types counted under their own label; the rest share "other", so that a client
# sending made-up type names cannot grow the metrics without bound.
MAX_TYPE_LABELS = 100
OTHER_TYPES = "other"

Unknown = tuple[int, event_pb2.Event, str]  # index in the batch, the event, the detail
Record = Callable[[proxy_service_pb2.RecordBatchRequest], Awaitable[proxy_service_pb2.BatchResult]]
# Store forwarded changes (new events, updates), as the forwarded path does; returns how many
# it stored or held (fewer: some were refused).
Forward = Callable[[list[event_pb2.Event], list[event_pb2.Event]], Awaitable[int]]


class QuarantineFull(LogFull):
    """The quarantine is at its size cap; nothing of the batch was decided."""


class QuarantineUnavailable(Exception):  # noqa: N818 - the name says what the caller must handle
    """The quarantine could not be written (the disk refused it); nothing was acknowledged."""


def generations(directory: Path) -> list[Path]:
    """The generation folders of a quarantine, oldest first (none when it does not exist)."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(found, key=lambda p: int(p.name))


def held_events(
    batches: Iterable[set_aside_pb2.SetAsideBatch],
) -> Iterator[tuple[set_aside_pb2.SetAsideBatch, event_pb2.Event]]:
    """Each quarantined event once (by id, first seen; a forwarded update when no new event
    of its id is held), with the batch it was put in."""
    seen: set[str] = set()
    for batch in batches:
        for event in (*batch.events, *batch.updates):
            if event.id not in seen:
                seen.add(event.id)
                yield batch, event


def read_quarantine(directory: Path) -> list[set_aside_pb2.SetAsideBatch]:
    """Every batch of every generation, oldest first, read-only (works while serve runs)."""
    return [b for g in generations(directory) for b in read_batches(g)]


def _reason(details: Iterable[str]) -> str:
    distinct = sorted(set(details))
    if len(distinct) == 1:
        return distinct[0]
    return f"{len(distinct)} unknown event types: " + "; ".join(distinct)


class Quarantine:
    """The quarantine store of one proxy (see the module docstring); made by `open`.

    State (the ids held, writes in flight) lives on the event loop; the store is touched only
    by one I/O thread, so writes land in the order they were submitted.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 1 << 30,
        metrics: Metrics | None = None,
        log_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.metrics = metrics or Metrics()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quarantine")
        self._stores: list[SetAside] = []  # held generations, oldest first; the last is written
        self._broken = False  # the last write failed: the next one starts a new generation
        self._held: list[set_aside_pb2.SetAsideBatch] = []
        self.ids: set[str] = set()
        self._writing: dict[str, asyncio.Future[int]] = {}
        self._size = 0
        self._labels: set[str] = set()
        self._warnings = Throttle(log_interval_s, clock)
        self._failures = Throttle(log_interval_s, clock)

    @classmethod
    async def open(
        cls,
        directory: Path,
        *,
        max_bytes: int = 1 << 30,
        metrics: Metrics | None = None,
        log_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> Quarantine:
        """Take the store (SetAsideInUseError when another process holds it) and load it."""
        quarantine = cls(
            directory,
            max_bytes=max_bytes,
            metrics=metrics,
            log_interval_s=log_interval_s,
            clock=clock,
        )
        await asyncio.get_running_loop().run_in_executor(quarantine._io, quarantine._load)
        return quarantine

    @property
    def pending_events(self) -> int:
        return len(self.ids)

    # -- ingest ----------------------------------------------------------------------------

    def check_room(self, size: int) -> None:
        """Raise QuarantineFull when `size` more bytes would take the store over its cap."""
        if self._size + size > self.max_bytes:
            raise QuarantineFull(
                f"the quarantine of unknown event types is full ({self._size} of "
                f"{self.max_bytes} bytes used; `protoevents quarantine` lists it): retry later"
            )

    def admit(
        self, unknown: list[Unknown], accepted: Container[str], also: Container[str]
    ) -> tuple[list[proxy_service_pb2.EventQuarantine], int, asyncio.Future[int] | None]:
        """Quarantine a batch's events of unknown types. Returns their result entries, the
        number of duplicates (ids in `accepted` or `also`, or repeated), and a future that
        completes once every entry is persisted (failing with QuarantineUnavailable). An id
        already quarantined is answered again without being written again."""
        entries: list[proxy_service_pb2.EventQuarantine] = []
        fresh: list[event_pb2.Event] = []
        details: list[str] = []
        waits: list[asyncio.Future[int]] = []
        seen: set[str] = set()
        duplicates = 0
        for index, event, detail in unknown:
            event_id = event.id
            if event_id in accepted or event_id in also or event_id in seen:
                duplicates += 1
                continue
            seen.add(event_id)
            entries.append(
                proxy_service_pb2.EventQuarantine(index=index, event_id=event_id, detail=detail)
            )
            if event_id in self.ids:
                writing = self._writing.get(event_id)
                if writing is not None and writing not in waits:
                    waits.append(writing)
                continue
            fresh.append(event)
            details.append(detail)
        if fresh:
            waits.append(self._put(make_batch(STAGE, _reason(details), fresh)))
        if not waits:
            return entries, duplicates, None
        if len(waits) == 1:
            return entries, duplicates, waits[0]
        return entries, duplicates, asyncio.ensure_future(_all(waits))

    def hold(
        self, created: list[event_pb2.Event], updated: list[event_pb2.Event], details: list[str]
    ) -> asyncio.Future[int]:
        """Hold forwarded changes of unknown types (`details` says why, per change). Written
        even when their ids are held already: an update may raise a count. The future
        completes once they are persisted (failing with QuarantineUnavailable)."""
        return self._put(make_batch(FORWARDED, _reason(details), created, updated))

    def _put(self, batch: set_aside_pb2.SetAsideBatch) -> asyncio.Future[int]:
        events = [*batch.events, *batch.updates]
        ids = [e.id for e in events]
        self.ids.update(ids)
        future = asyncio.get_running_loop().run_in_executor(self._io, self._write, batch)
        for event_id in ids:
            self._writing[event_id] = future
        types = Counter(e.type for e in events)
        future.add_done_callback(lambda done: self._written(done, ids, types))
        return future

    def _write(self, batch: set_aside_pb2.SetAsideBatch) -> int:
        """Append one batch (I/O thread); returns its size."""
        try:
            if self._broken or not self._stores:
                self._stores.append(SetAside(self._next_generation()))
                fsync_dir(self.directory)
                self._broken = False
            self._stores[-1].put(batch)
        except OSError as exc:
            self._broken = True
            raise QuarantineUnavailable(
                f"the proxy could not persist events of unknown types in its quarantine "
                f"({exc.strerror or exc}); retry later"
            ) from exc
        return batch.ByteSize()

    def _written(self, done: asyncio.Future[int], ids: list[str], types: Counter[str]) -> None:
        for event_id in ids:
            if self._writing.get(event_id) is done:
                del self._writing[event_id]
        failure = done.exception() if not done.cancelled() else asyncio.CancelledError()
        if failure is not None:
            self.ids.difference_update(ids)
            self.metrics.quarantine_events.set(len(self.ids))
            failed = self._failures.add("write", 1)
            if failed is not None:
                log.error("%s (%d failed write(s) since the last report)", failure, failed)
            return
        self._size += done.result()
        metrics = self.metrics
        metrics.quarantine_events.set(len(self.ids))
        for type_name, count in types.items():
            metrics.quarantined.labels(self._label(type_name)).inc(count)
            reported = self._warnings.add(type_name, count)
            if reported is not None:
                log.warning(
                    "quarantined %d event(s) of type %s, unknown to this proxy (%d held; "
                    "`protoevents quarantine` lists them): they are stored once it is started "
                    "with the type",
                    reported,
                    type_name,
                    len(self.ids),
                )

    def _label(self, type_name: str) -> str:
        labels = self._labels
        if type_name in labels:
            return type_name
        if len(labels) < MAX_TYPE_LABELS:
            labels.add(type_name)
            return type_name
        return OTHER_TYPES

    # -- start: load and release -----------------------------------------------------------

    def _next_generation(self) -> Path:
        existing = generations(self.directory)
        number = int(existing[-1].name) + 1 if existing else 1
        return self.directory / f"{number:012d}"

    def _load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for folder in generations(self.directory):
            self._stores.append(SetAside(folder))
        self._held = [b for s in self._stores for b in s.batches()]
        self.ids = {e.id for _, e in held_events(self._held)}
        self._size = sum(s.size_bytes for s in self._stores)
        self.metrics.quarantine_events.set(len(self.ids))

    async def release(
        self, validator: Validator, record: Record, forward: Forward | None = None
    ) -> int:
        """Hand every held event whose type `validator` now knows back: recorded ones to
        `record` (ingest), forwarded ones to `forward`; then keep only the rest. Runs at
        start, before serving. Returns the events released."""
        staying: dict[str, str] = {}  # id -> the reason it stays (a new one when rejected)
        recorded = [b for b in self._held if b.stage != FORWARDED]
        forwarded = [b for b in self._held if b.stage == FORWARDED] if forward else []
        candidates = [(b.reason, e) for b, e in held_events(recorded)]
        releasable = self._releasable(candidates, validator, staying, False)
        created, updated = self._releasable_forwarded(forwarded, validator, staying)
        if forward is None:
            for batch in self._held:
                if batch.stage == FORWARDED:
                    staying.update((e.id, batch.reason) for e in (*batch.events, *batch.updates))
        if not releasable and not created and not updated and len(self._stores) <= 1:
            self._held = []
            return 0
        reasons = {e.id: b.reason for b in self._held for e in (*b.events, *b.updates)}
        per_batch = validator.limits.max_batch_events
        released = await self._ingest(releasable, per_batch, record)
        for event in releasable[released:]:
            staying[event.id] = reasons[event.id]
        if forward is not None and (created or updated):
            done = await self._forward(created, updated, per_batch, forward)
            for event in (*created, *updated)[done:]:
                staying[event.id] = reasons[event.id]
            released += len({e.id for e in (*created, *updated)[:done]} - set(staying))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, self._compact, staying)
        self.metrics.quarantine_released.inc(released)
        self.metrics.quarantine_events.set(len(self.ids))
        if released:
            log.info(
                "released %d quarantined event(s) whose types are now known; %d stay quarantined",
                released,
                len(self.ids),
            )
        return released

    @staticmethod
    def _releasable(
        held: Iterable[tuple[str, event_pb2.Event]],
        validator: Validator,
        staying: dict[str, str],
        forwarded: bool,
    ) -> list[event_pb2.Event]:
        """The held events (each with the reason it is held) whose type is now known and
        which pass; the others are added to `staying`, with a new reason when the type is
        known but the event is rejected."""
        releasable: list[event_pb2.Event] = []
        for reason, event in held:
            probe = event_pb2.Event()
            probe.CopyFrom(event)
            outcome = validator.inspect(probe, forwarded=forwarded)
            if isinstance(outcome, int):
                releasable.append(event)
            elif isinstance(outcome, UnknownType):
                staying[event.id] = reason
            else:
                staying[event.id] = f"type now known, but rejected: {outcome[1]}"
                log.error(
                    "quarantined event %s of type %s is still kept: %s",
                    event.id,
                    event.type,
                    outcome[1],
                )
        return releasable

    def _releasable_forwarded(
        self,
        batches: list[set_aside_pb2.SetAsideBatch],
        validator: Validator,
        staying: dict[str, str],
    ) -> tuple[list[event_pb2.Event], list[event_pb2.Event]]:
        """The forwarded changes to release: each id's first new event, and its update
        raised to the highest count and latest last time held (`changes.merge_repeats`)."""
        held = [Change(CREATED, e) for b in batches for e in b.events]
        held += [Change(UPDATED, e) for b in batches for e in b.updates]
        reasons = {e.id: b.reason for b in batches for e in (*b.events, *b.updates)}
        merged = merge_repeats(held)
        candidates = [(reasons[c.event.id], c.event) for c in merged]
        good = {e.id for e in self._releasable(candidates, validator, staying, True)}
        good -= set(staying)
        created = [c.event for c in merged if c.kind == CREATED and c.event.id in good]
        updated = [c.event for c in merged if c.kind == UPDATED and c.event.id in good]
        return created, updated

    async def _ingest(self, events: list[event_pb2.Event], per_batch: int, record: Record) -> int:
        """Record `events` in batches; returns how many, from the first, are persisted."""
        done = 0
        while done < len(events):
            chunk = events[done : done + per_batch]
            try:
                result = await record(proxy_service_pb2.RecordBatchRequest(events=chunk))
            except Exception as exc:
                log.warning(
                    "release of quarantined events stopped, %d left for the next start: %s",
                    len(events) - done,
                    exc,
                )
                return done
            if result.rejections or result.quarantined:
                log.error("release of quarantined events: %s", result)
                return done
            done += len(chunk)
        return done

    async def _forward(
        self,
        created: list[event_pb2.Event],
        updated: list[event_pb2.Event],
        per_batch: int,
        forward: Forward,
    ) -> int:
        """Hand forwarded changes on in batches (new events first); returns how many, from
        the first, are stored."""
        total = len(created) + len(updated)
        done = 0
        while done < total:
            end = min(total, done + per_batch)
            fresh = created[done:end]
            more = updated[max(0, done - len(created)) : max(0, end - len(created))]
            try:
                stored = await forward(fresh, more)
            except Exception as exc:
                log.warning(
                    "release of quarantined forwarded changes stopped, %d left for the next "
                    "start: %s",
                    total - done,
                    exc,
                )
                return done
            if stored < end - done:
                return done
            done = end
        return done

    def _compact(self, staying: dict[str, str]) -> None:
        """Write what stays into a new generation, then delete the older ones (I/O thread).
        A recorded event is kept once (by id); forwarded updates are all kept."""
        kept: list[set_aside_pb2.SetAsideBatch] = []
        seen: set[str] = set()
        for batch in self._held:
            events = [(e, staying[e.id]) for e in batch.events if e.id in staying]
            events = [(e, r) for e, r in events if e.id not in seen]
            seen.update(e.id for e, _ in events)
            updates = [(e, staying[e.id]) for e in batch.updates if e.id in staying]
            for reason in dict.fromkeys(r for _, r in (*events, *updates)):
                rest = make_batch(
                    batch.stage,
                    reason,
                    (e for e, r in events if r == reason),
                    (e for e, r in updates if r == reason),
                )
                rest.set_aside_time.CopyFrom(batch.set_aside_time)
                kept.append(rest)
        old = self._stores
        self._stores = []
        if kept:
            store = SetAside(self._next_generation())
            for batch in kept:
                store.put(batch)
            fsync_dir(self.directory)
            self._stores.append(store)
        for store in old:
            store.close()
            shutil.rmtree(store.directory, ignore_errors=True)
        fsync_dir(self.directory)
        self._held = []
        self.ids = {e.id for b in kept for e in (*b.events, *b.updates)}
        self._size = sum(s.size_bytes for s in self._stores)

    async def close(self) -> None:
        """Let writes in flight finish, then release the store."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, self._close)
        self._io.shutdown(wait=True)

    def _close(self) -> None:
        for store in self._stores:
            store.close()
        self._stores = []


async def _all(futures: list[asyncio.Future[int]]) -> int:
    """Wait for every future; raise the first failure (retrieving every outcome)."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    for outcome in results:
        if isinstance(outcome, BaseException):
            raise outcome
    return 0
