"""The quarantine of unknown event types: persisted before the ack, answered once per id, stored
once the type is known, and UNAVAILABLE (nothing acknowledged) when it cannot be written.

A proxy "from older protos" is one whose registry leaves out the cluster service; the cluster
events the tests send are then of a type it does not know, and the full registry knows them.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from protoevents.proxy import changelog
from protoevents.proxy.app import run_proxy
from protoevents.proxy.ingest import Ingest
from protoevents.proxy.metrics import Metrics
from protoevents.proxy.quarantine import Quarantine, QuarantineFull, read_quarantine
from protoevents.proxy.validation import Limits, Validator
from protoevents.proxy.wal import WriteAheadLog
from protoevents.recorder.registry import BUILTIN_MODULES, Registry
from protoevents.v1 import event_pb2, proxy_service_pb2, proxy_service_pb2_grpc, severity_pb2
from tests.support.ingest_helpers import make_event, make_events, proxy_settings

T = TypeVar("T")
R = proxy_service_pb2
NIC_ADMITTED = "protoevents.nic.v1.NicEventType.NIC_EVENT_TYPE_ADMITTED"
NEWER = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED"


def older_registry() -> Registry:
    """The built-in types but the cluster service's (as if built before they were added)."""
    return Registry.from_modules([m for m in BUILTIN_MODULES if ".cluster." not in m])


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def open_ingest(data: Path, registry: Registry, quarantine: Quarantine) -> Ingest:
    wal = await WriteAheadLog.open(data / "wal")
    validator = Validator(registry, Limits(max_batch_events=100))
    ingest = Ingest(wal, validator, quarantine=quarantine, metrics=quarantine.metrics)
    await ingest.restore()
    await ingest.release_quarantined()
    return ingest


async def close(ingest: Ingest) -> None:
    await ingest.wal.close()
    assert ingest.quarantine is not None
    await ingest.quarantine.close()


async def logged_ids(wal: WriteAheadLog) -> list[str]:
    ids: list[str] = []
    for payload in await asyncio.to_thread(lambda: list(wal.scan())):
        ids.extend(changelog.decode_ids(payload))
    return ids


def held_ids(data: Path) -> list[str]:
    return [e.id for b in read_quarantine(data / "quarantine") for e in b.events]


def known(count: int) -> list[event_pb2.Event]:
    return make_events(count, type=NIC_ADMITTED)


def test_unknown_types_are_quarantined_beside_stored_known_ones_and_a_resend_is_held_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()

    async def main() -> None:
        metrics = Metrics()
        quarantine = await Quarantine.open(tmp_path / "quarantine", metrics=metrics, clock=clock)
        ingest = await open_ingest(tmp_path, older_registry(), quarantine)
        good, newer = known(2), make_events(2)
        batch = R.RecordBatchRequest(events=[good[0], newer[0], good[1], newer[1]])
        # Resent while the first write is in flight: answered once that write is done.
        result, early = await asyncio.gather(
            ingest.record(batch), ingest.record(R.RecordBatchRequest(events=newer))
        )
        assert [q.event_id for q in early.quarantined] == [e.id for e in newer]
        assert (result.accepted_count, result.duplicate_count, list(result.rejections)) == (
            2,
            0,
            [],
        )
        assert [(q.index, q.event_id) for q in result.quarantined] == [
            (1, newer[0].id),
            (3, newer[1].id),
        ]
        assert result.quarantined[0].detail == f"type {NEWER!r} is not a known event type"
        assert await logged_ids(ingest.wal) == [e.id for e in good]
        assert held_ids(tmp_path) == [e.id for e in newer]

        # Resent later, twice at once: answered again, held once.
        resend = R.RecordBatchRequest(events=newer)
        first, second = await asyncio.gather(ingest.record(resend), ingest.record(resend))
        for again in (first, second):
            assert [q.event_id for q in again.quarantined] == [e.id for e in newer]
            assert (again.accepted_count, again.duplicate_count) == (0, 0)
        # A resend of an id in the same batch twice: the repeat is a duplicate.
        twice = await ingest.record(R.RecordBatchRequest(events=[newer[0], newer[0]]))
        assert (len(twice.quarantined), twice.duplicate_count) == (1, 1)
        assert held_ids(tmp_path) == [e.id for e in newer]
        assert metrics.quarantined.labels(NEWER)._value.get() == 2
        assert metrics.quarantine_events._value.get() == 2

        # One warning per type per interval, naming the type and how many.
        clock.now += 30
        await ingest.record(R.RecordBatchRequest(events=make_events(3)))
        clock.now += 31
        await ingest.record(R.RecordBatchRequest(events=make_events(1)))
        await close(ingest)

    with caplog.at_level(logging.WARNING, logger="protoevents.proxy.quarantine"):
        run(main())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"quarantined 2 event(s) of type {NEWER}, unknown")
    assert warnings[1].startswith(f"quarantined 4 event(s) of type {NEWER}, unknown")


def test_quarantined_events_are_stored_once_the_type_is_known_and_a_repeated_release_stores_none(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        older = await open_ingest(
            tmp_path, older_registry(), await Quarantine.open(tmp_path / "quarantine")
        )
        newer = make_events(5)
        still_unknown = make_event(type="acme.v9.Widget.WIDGET_JAMMED")
        mixed = R.RecordBatchRequest(events=[*newer[:3], still_unknown, *known(1)])
        assert len((await older.record(mixed)).quarantined) == 4
        assert len((await older.record(R.RecordBatchRequest(events=newer[3:]))).quarantined) == 2
        await close(older)
        saved = tmp_path / "saved-quarantine"
        shutil.copytree(tmp_path / "quarantine", saved)

        current = await open_ingest(
            tmp_path, Registry.builtin(), await Quarantine.open(tmp_path / "quarantine")
        )
        logged = await logged_ids(current.wal)
        assert sorted(logged[1:]) == sorted(e.id for e in newer)
        assert held_ids(tmp_path) == [still_unknown.id]
        assert current.metrics.quarantine_released._value.get() == 5
        changes = [c.event for p in current.wal.scan() for c in changelog.decode(p)]
        stored = next(e for e in changes if e.id == newer[0].id)
        assert (stored.category, stored.severity) == ("cluster", severity_pb2.SEVERITY_INFO)
        await close(current)

        # A crash between storing and rewriting the quarantine: the old one comes back whole.
        shutil.rmtree(tmp_path / "quarantine")
        shutil.copytree(saved, tmp_path / "quarantine")
        again = await open_ingest(
            tmp_path, Registry.builtin(), await Quarantine.open(tmp_path / "quarantine")
        )
        assert await logged_ids(again.wal) == logged, "a repeated release logged something"
        assert again.metrics.duplicates._value.get() == 5
        assert held_ids(tmp_path) == [still_unknown.id]
        await close(again)

    run(main())


def test_a_full_quarantine_refuses_the_batch_whole(tmp_path: Path) -> None:
    async def main() -> None:
        quarantine = await Quarantine.open(tmp_path / "quarantine", max_bytes=600)
        ingest = await open_ingest(tmp_path, older_registry(), quarantine)
        assert len((await ingest.record(R.RecordBatchRequest(events=make_events(2)))).quarantined)
        good = known(1)
        with pytest.raises(QuarantineFull, match="quarantine of unknown event types is full"):
            await ingest.record(R.RecordBatchRequest(events=[*good, *make_events(2)]))
        assert good[0].id not in await logged_ids(ingest.wal)
        await close(ingest)

    run(main())


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def test_a_quarantine_on_a_full_disk_answers_unavailable_and_recovers_once_there_is_room(
    tmp_path: Path, small_disk: Path
) -> None:
    """Over gRPC, on a real full disk (ENOSPC): nothing of the batch is acknowledged; once
    space is free, the resend is quarantined and held once; after a restart with the type
    known, every event is stored once."""
    settings = proxy_settings(tmp_path / "data", db=f"sqlite:///{tmp_path}/events.db")
    settings.data_dir.mkdir()
    (settings.data_dir / "quarantine").symlink_to(small_disk)

    async def main() -> None:
        good, newer = known(2), make_events(3)
        batch = R.RecordBatchRequest(events=[*good, *newer])
        async with run_proxy(settings, registry=older_registry()) as proxy:
            filler = fill(small_disk)
            async with grpc.aio.insecure_channel(proxy.address) as channel:
                stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.RecordBatch(batch, timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "could not persist events of unknown types" in str(refused.value.details())
                assert "No space left on device" in str(refused.value.details())
                filler.unlink()
                result = (await stub.RecordBatch(batch, timeout=10)).result
            assert [q.event_id for q in result.quarantined] == [e.id for e in newer]
            assert result.duplicate_count == 2  # persisted by the refused try, never acked
        assert sorted(held_ids(settings.data_dir)) == sorted(e.id for e in newer)
        async with run_proxy(settings) as proxy:
            assert proxy.metrics.quarantine_released._value.get() == 3
            ids = await logged_ids(proxy.wal)
        assert sorted(ids) == sorted(e.id for e in [*good, *newer])
        assert held_ids(settings.data_dir) == []

    run(main())
