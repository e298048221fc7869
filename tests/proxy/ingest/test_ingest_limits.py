"""Ingest's own limits: calls admitted in total and per client, idle Record streams ended with
OK; health is never refused for them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protoevents.proxy.admission import Admission, AdmissionRefusedError, client_of
from protoevents.proxy.app import run_proxy
from protoevents.v1 import proxy_service_pb2, proxy_service_pb2_grpc
from tests.support.ingest_helpers import make_events, proxy_settings
from tests.support.wal import logged_changes

R = proxy_service_pb2


@pytest.mark.parametrize(
    ("peer", "client"),
    [
        ("ipv4:10.0.0.7:5123", "10.0.0.7"),
        ("ipv6:[::1]:5123", "::1"),
        ("ipv6:[fe80::1%25eth0]:80", "fe80::1%25eth0"),
        ("unix:/run/proxy.sock", "unix:/run/proxy.sock"),
    ],
)
def test_a_client_is_the_host_of_its_peer_address(peer: str, client: str) -> None:
    assert client_of(peer) == client


def test_admission_counts_calls_in_total_and_per_client() -> None:
    admission = Admission(max_calls=3, max_per_client=2)
    a1 = admission.admit("ipv4:10.0.0.1:1000")
    admission.admit("ipv4:10.0.0.1:1001")
    with pytest.raises(AdmissionRefusedError, match=r"client 10\.0\.0\.1 has 2 ingest streams"):
        admission.admit("ipv4:10.0.0.1:1002")
    b1 = admission.admit("ipv4:10.0.0.2:1000")
    with pytest.raises(AdmissionRefusedError, match=r"3 ingest streams open, its limit"):
        admission.admit("ipv4:10.0.0.3:1000")
    admission.release(b1)
    admission.release(a1)
    assert admission.open == 1
    admission.admit("ipv4:10.0.0.1:1003")  # its place is free again
    assert admission.refused == 2


def test_an_idle_record_stream_is_ended_with_ok_and_health_answers_beside_held_streams(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        settings = proxy_settings(tmp_path, max_ingest_streams=2, idle_stream_timeout_s=0.5)
        async with run_proxy(settings) as proxy:
            channel = grpc.aio.insecure_channel(proxy.address)
            stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)
            held = asyncio.Event()
            sent = [make_events(1), make_events(1)]

            def requests(events: list[object]) -> AsyncIterator[R.RecordRequest]:
                async def gen() -> AsyncIterator[R.RecordRequest]:
                    yield R.RecordRequest(sequence=1, events=events)  # type: ignore[arg-type]
                    await held.wait()

                return gen()

            streams = [stub.Record(requests(events)) for events in sent]
            for stream in streams:
                assert (await stream.read()).sequence == 1  # type: ignore[union-attr]
            # Both ingest slots are taken: ingest refuses, health still answers.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.RecordBatch(R.RecordBatchRequest(events=make_events(1)))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            # The client sends nothing more: the proxy ends both streams, status OK.
            for stream in streams:
                assert await stream.read() == grpc.aio.EOF
                assert await stream.code() == grpc.StatusCode.OK
            closed = proxy.metrics.registry.get_sample_value(
                "protoevents_idle_streams_closed_total"
            )
            assert closed == 2
            result = await stub.RecordBatch(R.RecordBatchRequest(events=make_events(1)))
            assert result.result.accepted_count == 1  # the slots are free again
            logged = {c.event.id for c in await logged_changes(proxy.wal)}
            assert {e.id for events in sent for e in events} <= logged
            held.set()
            await channel.close()

    asyncio.run(main())
