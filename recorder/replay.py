"""Listing spool slots and replaying a slot or its dead-letter store, for `protoevents spool`.

A slot is replayed only while no live recorder holds it (its `lock`), and a dead-letter store
only while no recorder is setting batches aside into it, so replays never race a recorder.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from protoevents.recorder.deadletter import DeadLetter, dead_letter_dir
from protoevents.recorder.errors import SpoolInUseError
from protoevents.recorder.setaside import (
    SetAside,
    SetAsideBatch,
    SetAsideInUseError,
    make_batch,
    read_batches,
)
from protoevents.recorder.spool import Spool
from protoevents.recorder.statuses import Verdict, verdict
from protoevents.v1 import event_pb2, proxy_service_pb2

_NO_CAP = 1 << 62
# Sends one batch of events to the proxy; raises grpc.RpcError when it refuses the batch.
Send = Callable[[Sequence[event_pb2.Event]], proxy_service_pb2.BatchResult]


@dataclass
class SlotInfo:
    """What one spool slot holds."""

    path: Path
    pending_events: int
    pending_bytes: int
    oldest_time_ns: int | None  # the time of the oldest pending event
    held: bool  # a live recorder holds the slot
    dead_letter_batches: int
    dead_letter_events: int
    dead_letter_reasons: dict[str, int]


@dataclass
class ReplayReport:
    """What a replay did: events delivered, set aside (refused for good), and left behind."""

    delivered: int = 0
    set_aside: int = 0
    left: int = 0
    error: str = ""
    reasons: Counter[str] = field(default_factory=Counter)


def slots(base: Path) -> Iterator[Path]:
    """Every spool slot under a spool folder (`NODE/COMPONENT/slot-N`)."""
    yield from sorted(p for p in base.glob("*/*/slot-*") if p.is_dir())


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def slot_info(slot: Path) -> SlotInfo:
    """Read a slot without changing a byte (a live recorder may hold it)."""
    spool = Spool(slot, max_bytes=_NO_CAP, repair=False)
    oldest = None
    entry = spool.next_unread()
    if entry is not None:
        events = proxy_service_pb2.RecordRequest.FromString(entry.payload).events
        oldest = min((e.time.ToNanoseconds() for e in events), default=None)
    fd = _try_lock(slot / "lock")
    if fd is not None:
        os.close(fd)
    batches = read_batches(dead_letter_dir(slot))
    reasons = Counter(b.reason for b in batches)
    return SlotInfo(
        path=slot,
        pending_events=spool.pending_events,
        pending_bytes=spool.size_bytes,
        oldest_time_ns=oldest,
        held=fd is None,
        dead_letter_batches=len(batches),
        dead_letter_events=sum(len(b.events) for b in batches),
        dead_letter_reasons=dict(reasons),
    )


def _set_aside_rejected(
    events: Sequence[event_pb2.Event], result: proxy_service_pb2.BatchResult
) -> list[SetAsideBatch]:
    by_id = {e.id: e for e in events}
    groups: dict[str, list[event_pb2.Event]] = {}
    for rejection in result.rejections:
        reason = proxy_service_pb2.RejectionReason.Name(rejection.reason)
        key = f"{reason.removeprefix('REJECTION_REASON_')}: {rejection.detail}"
        if rejection.event_id in by_id:
            groups.setdefault(key, []).append(by_id[rejection.event_id])
    return [make_batch("recorder", reason, rejected) for reason, rejected in groups.items()]


def _refusal(error: grpc.RpcError) -> tuple[Verdict, str]:
    code: grpc.StatusCode = error.code()
    details: str = error.details() or ""
    return verdict(code, details), f"{code.name}: {details}"


def replay_slot(slot: Path, send: Send) -> ReplayReport:
    """Send a slot's spooled batches, oldest first, removing each the proxy takes; stops at
    the first it cannot take now. What it refuses for good goes to the dead-letter store.
    Raises SpoolInUseError while a live recorder holds the slot (it replays it itself)."""
    lock = _try_lock(slot / "lock")
    if lock is None:
        raise SpoolInUseError(f"{slot} is held by a live recorder, which replays it itself")
    report = ReplayReport()
    spool = Spool(slot, max_bytes=_NO_CAP)
    dead = DeadLetter(dead_letter_dir(slot))
    try:
        while (entry := spool.next_unread()) is not None:
            events = proxy_service_pb2.RecordRequest.FromString(entry.payload).events
            aside: list[SetAsideBatch] = []
            try:
                result = send(events)
            except grpc.RpcError as error:
                judged, reason = _refusal(error)
                if judged is not Verdict.BAD_BATCH:
                    report.error = reason
                    break
                aside = [make_batch("recorder", reason, events)]
            else:
                aside = _set_aside_rejected(events, result)
                report.delivered += entry.count - sum(len(b.events) for b in aside)
            for batch in aside:
                dead.put(batch)
                report.set_aside += len(batch.events)
                report.reasons[batch.reason] += len(batch.events)
            spool.acknowledge(entry)
        report.left = spool.pending_events
    finally:
        spool.compact()  # what was delivered from a segment it stopped in stays removed
        spool.close()
        dead.close()
        os.close(lock)
    return report


def _chunks(
    events: Sequence[event_pb2.Event], max_bytes: int
) -> Iterator[Sequence[event_pb2.Event]]:
    start, size = 0, 0
    for index, event in enumerate(events):
        n = event.ByteSize() + 8
        if index > start and size + n > max_bytes:
            yield events[start:index]
            start, size = index, 0
        size += n
    if start < len(events):
        yield events[start:]


def replay_dead_letter(
    directory: Path, send: Send, *, max_batch_bytes: int = 7 << 19, wait_s: float = 10.0
) -> ReplayReport:
    """Send again the batches of a dead-letter store (after the cause was fixed), cut into
    batches of at most `max_batch_bytes`; each one the proxy takes is removed. Events it
    rejects again are set aside again, at the end. Waits up to `wait_s` for a recorder that is
    setting batches aside to release the store (raises SetAsideInUseError after that)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            store = SetAside(directory)
            break
        except SetAsideInUseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # a recorder releases the store 5 s after its last put
    report = ReplayReport()
    again: list[SetAsideBatch] = []

    def deliver(batch: SetAsideBatch) -> bool:
        for chunk in _chunks(batch.events, max_batch_bytes):
            try:
                result = send(chunk)
            except grpc.RpcError as error:
                report.error = _refusal(error)[1]
                return False
            rejected = _set_aside_rejected(chunk, result)
            again.extend(rejected)
            report.delivered += len(chunk) - sum(len(b.events) for b in rejected)
        return True

    with store:
        store.replay(deliver)
        for batch in again:
            store.put(batch)
            report.set_aside += len(batch.events)
            report.reasons[batch.reason] += len(batch.events)
        report.left = store.pending_events
    return report
