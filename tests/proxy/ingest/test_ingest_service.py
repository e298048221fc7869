"""Ingest: the domain class alone, then EventProxyService on a real loopback server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protoevents.proxy.app import PROXY_SERVICE, Proxy, run_proxy
from protoevents.proxy.changes import CREATED, UPDATED
from protoevents.proxy.dedup import Deduplicator
from protoevents.proxy.ingest import Ingest
from protoevents.proxy.validation import Limits, MalformedBatchError, Validator
from protoevents.proxy.wal import LogFull, WriteAheadLog
from protoevents.recorder.registry import Registry
from protoevents.v1 import event_pb2, proxy_service_pb2, proxy_service_pb2_grpc
from tests.support.ingest_helpers import make_event, make_events, proxy_settings, wait_until
from tests.support.wal import logged_changes

T = TypeVar("T")
R = proxy_service_pb2


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def batch_of(events: list[event_pb2.Event]) -> proxy_service_pb2.RecordBatchRequest:
    return proxy_service_pb2.RecordBatchRequest(events=events)


async def open_ingest(folder: Path, **wal_options: Any) -> Ingest:
    wal = await WriteAheadLog.open(folder, **wal_options)
    ingest = Ingest(wal, Validator(Registry.builtin(), Limits(max_batch_events=100)))
    await ingest.restore()
    return ingest


# -- the domain class --------------------------------------------------------------------


def test_accepted_events_are_logged_completed_and_rejections_do_not_spoil_the_batch(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        ingest = await open_ingest(tmp_path)
        good = make_events(3)
        bad = make_event(type="")
        result = await ingest.record(batch_of([good[0], bad, good[1], good[2]]))
        assert (result.accepted_count, result.duplicate_count) == (3, 0)
        (rejection,) = result.rejections
        assert (rejection.index, rejection.event_id) == (1, bad.id)
        assert rejection.reason == R.REJECTION_REASON_MISSING_TYPE
        logged = await logged_changes(ingest.wal)
        assert [c.event.id for c in logged] == [e.id for e in good]
        stored = logged[0].event
        assert (stored.count, stored.category) == (1, "cluster")
        assert stored.first_time == stored.last_time == stored.time
        assert stored.received_time.seconds > 0
        await ingest.wal.close()

    run(main())


def test_duplicate_ids_in_a_batch_across_batches_and_across_restart_are_stored_once(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        ingest = await open_ingest(tmp_path)
        events = make_events(4)
        first = await ingest.record(batch_of([events[0], events[1], events[0]]))
        assert (first.accepted_count, first.duplicate_count) == (2, 1)
        second = await ingest.record(batch_of([events[1], events[2]]))
        assert (second.accepted_count, second.duplicate_count) == (1, 1)
        await ingest.wal.close()
        restarted = await open_ingest(tmp_path)
        third = await restarted.record(batch_of([events[0], events[1], events[2], events[3]]))
        assert (third.accepted_count, third.duplicate_count) == (1, 3)
        logged = await logged_changes(restarted.wal)
        assert sorted(c.event.id for c in logged) == sorted(e.id for e in events)
        await restarted.wal.close()

    run(main())


def test_dedup_decisions_are_logged_once_with_the_last_update_per_batch(tmp_path: Path) -> None:
    async def main() -> None:
        ingest = await open_ingest(tmp_path)
        ingest.dedup = Deduplicator()
        batch = [*make_events(3, message="disk full"), make_event(message="other")]
        result = await ingest.record(batch_of(batch))
        assert result.accepted_count == 4
        await ingest.record(batch_of(make_events(2, message="disk full")))
        logged = await logged_changes(ingest.wal)
        summary = [(c.kind, c.event.id, c.event.count, c.event.message) for c in logged]
        assert summary == [
            (CREATED, batch[0].id, 1, "disk full"),
            (CREATED, batch[3].id, 1, "other"),
            (UPDATED, batch[0].id, 3, "disk full"),  # the batch's two repeats, as one update
            (UPDATED, batch[0].id, 5, "disk full"),
        ]
        # The merged repeats' own ids are remembered too: resending them is a duplicate.
        again = await ingest.record(batch_of(batch[1:3]))
        assert (again.accepted_count, again.duplicate_count) == (0, 2)
        await ingest.wal.close()

    run(main())


def test_a_full_log_refuses_the_batch_before_deciding_anything(tmp_path: Path) -> None:
    async def main() -> None:
        ingest = await open_ingest(tmp_path, segment_bytes=4096, max_bytes=8192)
        ingest.wal.register_reader("stuck")  # a writer that never reads
        acked: list[str] = []
        batch = make_events(5)
        with pytest.raises(LogFull, match="write-ahead log is full"):
            for _ in range(100):
                batch = make_events(5)
                await ingest.record(batch_of(batch))
                acked.extend(e.id for e in batch)
        # The refused batch is not remembered: its resend is accepted once there is room.
        assert not any(e.id in ingest.recent for e in batch)
        logged = await logged_changes(ingest.wal)
        assert [c.event.id for c in logged] == acked
        await ingest.wal.close()

    run(main())


def test_malformed_batches_are_refused_whole(tmp_path: Path) -> None:
    async def main() -> None:
        ingest = await open_ingest(tmp_path)
        with pytest.raises(MalformedBatchError, match="no events"):
            await ingest.record(batch_of([]))
        with pytest.raises(MalformedBatchError, match="101 events; the limit is 100"):
            await ingest.record(batch_of(make_events(101)))
        assert await logged_changes(ingest.wal) == []
        await ingest.wal.close()

    run(main())


# -- over gRPC ---------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


async def requests(
    batches: list[list[event_pb2.Event]], first: int = 1
) -> AsyncIterator[proxy_service_pb2.RecordRequest]:
    for offset, events in enumerate(batches):
        yield proxy_service_pb2.RecordRequest(sequence=first + offset, events=events)


def stub_of(proxy: Proxy) -> tuple[grpc.aio.Channel, proxy_service_pb2_grpc.EventProxyServiceStub]:
    channel = grpc.aio.insecure_channel(proxy.address)
    return channel, proxy_service_pb2_grpc.EventProxyServiceStub(channel)


def test_record_stream_acknowledges_each_batch_with_its_sequence_while_several_are_in_flight(
    folder: Path,
) -> None:
    async def main() -> None:
        async with run_proxy(proxy_settings(folder)) as proxy:
            # Hold the log's writes until all five batches have been read and decided: their
            # acks can then only come from batches that were in flight together.
            release = threading.Event()
            write_group = proxy.wal._write_group

            def held_write(records: list[bytes], sync: bool) -> int:
                release.wait(10)
                return write_group(records, sync)

            proxy.wal._write_group = held_write  # type: ignore[method-assign]
            channel, stub = stub_of(proxy)
            batches = [make_events(10) for _ in range(5)]
            call = stub.Record(requests(batches, first=41))
            responses: list[proxy_service_pb2.RecordResponse] = []

            async def read_all() -> None:
                async for response in call:
                    responses.append(response)

            reading = asyncio.ensure_future(read_all())
            received = "protoevents_events_received_total"
            await wait_until(lambda: proxy.metrics.registry.get_sample_value(received) == 50)
            assert responses == []  # nothing acknowledged before it is persisted
            release.set()
            await asyncio.wait_for(reading, 10)
            assert [r.sequence for r in responses] == [41, 42, 43, 44, 45]
            assert all(r.result.accepted_count == 10 for r in responses)
            assert proxy.wal.fsyncs <= 2  # at most the first batch alone, then the rest
            await channel.close()

    run(main())


def test_record_batch_answers_rejections_and_duplicates(folder: Path) -> None:
    async def main() -> None:
        async with run_proxy(proxy_settings(folder)) as proxy:
            channel, stub = stub_of(proxy)
            events = [*make_events(2), make_event(severity=9)]
            response = await stub.RecordBatch(R.RecordBatchRequest(events=events))
            assert response.result.accepted_count == 2
            (rejection,) = response.result.rejections
            assert (rejection.index, rejection.reason) == (2, R.REJECTION_REASON_INVALID_SEVERITY)
            assert rejection.detail == "severity 9 is not a defined Severity value"
            again = await stub.RecordBatch(R.RecordBatchRequest(events=events[:2]))
            assert (again.result.accepted_count, again.result.duplicate_count) == (0, 2)
            await channel.close()

    run(main())


def test_malformed_batches_get_invalid_argument_and_the_server_stays_up(folder: Path) -> None:
    async def main() -> None:
        settings = proxy_settings(folder, max_batch_events=5)
        async with run_proxy(settings) as proxy:
            channel, stub = stub_of(proxy)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RecordBatch(R.RecordBatchRequest())
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.details() == "the batch has no events"

            call = stub.Record(requests([make_events(2), make_events(6), make_events(1)]))
            acked = []
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for response in call:
                    acked.append(response.sequence)
            assert acked == [1]  # the batch before the bad one is answered first
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.details() == "batch 2: the batch has 6 events; the limit is 5"

            ok = await stub.RecordBatch(R.RecordBatchRequest(events=make_events(1)))
            assert ok.result.accepted_count == 1
            await channel.close()

    run(main())


def test_a_full_log_answers_resource_exhausted_and_keeps_what_was_acknowledged(
    folder: Path,
) -> None:
    async def main() -> None:
        settings = proxy_settings(folder, wal_segment_bytes=65536, wal_max_bytes=131072)
        async with run_proxy(settings) as proxy:
            proxy.wal.register_reader("stuck")  # a writer that never reads
            channel, stub = stub_of(proxy)
            acked: list[str] = []
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                for _ in range(1000):
                    batch = make_events(50)
                    await stub.RecordBatch(R.RecordBatchRequest(events=batch))
                    acked.extend(e.id for e in batch)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "write-ahead log is full" in (caught.value.details() or "")
            assert acked
            logged = await logged_changes(proxy.wal)
            assert [c.event.id for c in logged] == acked
            await channel.close()

    run(main())


def test_limits_on_message_size_and_concurrent_ingest_calls(folder: Path) -> None:
    async def main() -> None:
        settings = proxy_settings(folder, max_message_bytes=4096, max_ingest_streams=1)
        async with run_proxy(settings) as proxy:
            channel, stub = stub_of(proxy)
            big = make_events(40)  # about 8 KB
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RecordBatch(R.RecordBatchRequest(events=big))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

            hold = asyncio.Event()

            async def held() -> AsyncIterator[proxy_service_pb2.RecordRequest]:
                yield proxy_service_pb2.RecordRequest(sequence=1, events=make_events(1))
                await hold.wait()

            stream = stub.Record(held())
            assert (await stream.read()).sequence == 1  # type: ignore[union-attr]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RecordBatch(R.RecordBatchRequest(events=make_events(1)))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit (max_ingest_streams)" in (caught.value.details() or "")
            hold.set()
            assert await stream.read() == grpc.aio.EOF
            await channel.close()

    run(main())


def test_health_is_serving_and_reflection_lists_the_service(folder: Path) -> None:
    async def main() -> None:
        async with run_proxy(proxy_settings(folder)) as proxy:
            channel = grpc.aio.insecure_channel(proxy.address)
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", PROXY_SERVICE):
                answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for reply in reflect.ServerReflectionInfo(iter([request])):
                names = {s.name for s in reply.list_services_response.service}
                assert "protoevents.v1.EventProxyService" in names
                break
            await proxy.stop()
            with pytest.raises(grpc.aio.AioRpcError):
                await health.Check(health_pb2.HealthCheckRequest(service=""))
            await channel.close()

    run(main())


def test_health_turns_not_serving_when_the_proxy_stops(folder: Path) -> None:
    async def main() -> None:
        async with run_proxy(proxy_settings(folder, shutdown_grace_s=1.0)) as proxy:
            channel = grpc.aio.insecure_channel(proxy.address)
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=PROXY_SERVICE))
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING  # type: ignore[union-attr]
            stopping = asyncio.ensure_future(proxy.stop())
            second = await watch.read()
            assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING  # type: ignore[union-attr]
            await stopping
            await channel.close()

    run(main())


def not_utf8_batch() -> bytes:
    """A RecordBatchRequest whose one event's message is not UTF-8 (no client would build it)."""
    event = make_event(message="XXXX").SerializeToString().replace(b"XXXX", b"\xff\xfe\xfd\xfc")
    return b"\x0a" + len(event).to_bytes(1, "little") + event


def test_requests_that_do_not_parse_get_invalid_argument(folder: Path) -> None:
    async def main() -> None:
        async with run_proxy(proxy_settings(folder)) as proxy:
            channel = grpc.aio.insecure_channel(proxy.address)
            raw_batch = channel.unary_unary(
                "/protoevents.v1.EventProxyService/RecordBatch",
                request_serializer=bytes,
                response_deserializer=R.RecordBatchResponse.FromString,
            )
            for garbage in (not_utf8_batch(), b"\xff\xff\xff\xff"):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await raw_batch(garbage)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert caught.value.details() == (
                    "the request is not a valid protoevents.v1.RecordBatchRequest: corrupt "
                    "wire format, or a string field that is not UTF-8"
                )
            raw_stream = channel.stream_stream(
                "/protoevents.v1.EventProxyService/Record",
                request_serializer=bytes,
                response_deserializer=R.RecordResponse.FromString,
            )
            good = R.RecordRequest(sequence=1, events=make_events(1)).SerializeToString()
            call = raw_stream(iter([good, b"\x12\x05\xff\xff\xff\xff\xff"]))
            assert (await call.read()).sequence == 1  # type: ignore[union-attr]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call.read()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid protoevents.v1.RecordRequest" in (caught.value.details() or "")
            _, stub = stub_of(proxy)
            ok = await stub.RecordBatch(R.RecordBatchRequest(events=make_events(1)))
            assert ok.result.accepted_count == 1
            await channel.close()

    run(main())
