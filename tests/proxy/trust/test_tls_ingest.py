"""A proxy serving mTLS on loopback: recorders with the right certificates are stored; one
trusting another CA, one without a client certificate and a plaintext one are refused with
UNAVAILABLE, and the recorder spools what it could not deliver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.recorder import ClientTLS, ClientTLSError, Recorder
from protoevents.recorder.tls import secure_channel
from protoevents.v1 import proxy_service_pb2, proxy_service_pb2_grpc
from tests.support.ingest_helpers import make_events, proxy_settings
from tests.support.live_proxy import LiveProxy
from tests.support.pki import PROXY_NAME, Pki
from tests.support.polling import eventually

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_proxy(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProxy]:
    folder = tmp_path_factory.mktemp("mtls-proxy")
    settings = proxy_settings(folder, writer_batch_interval_ms=10, **pki.server_settings(mtls=True))
    proxy = LiveProxy(settings)
    yield proxy
    proxy.stop()


def record_batch(address: str, tls: ClientTLS | None) -> proxy_service_pb2.BatchResult:
    with secure_channel(address, tls) as channel:
        stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)
        request = proxy_service_pb2.RecordBatchRequest(events=make_events(2))
        return stub.RecordBatch(request, timeout=10).result


def test_a_recorder_with_the_right_certificates_is_stored(
    mtls_proxy: LiveProxy, pki: Pki, make_recorder: type[Recorder]
) -> None:
    recorder = make_recorder(mtls_proxy.address, tls=pki.client())
    ids = [recorder.record(ELECTED, f"over mTLS {n}") for n in range(50)]
    assert recorder.drain(30), recorder.stats()
    assert recorder.stats().acknowledged == 50
    eventually(lambda: mtls_proxy.stored(ids) == dict.fromkeys(ids, 1))


@pytest.mark.parametrize("name", [PROXY_NAME, "elsewhere.events.internal"])
def test_the_name_checked_is_the_server_name_given(
    mtls_proxy: LiveProxy, pki: Pki, name: str
) -> None:
    tls = ClientTLS(pki.ca_file, pki.client_cert, pki.client_key, server_name=name)
    if name == PROXY_NAME:  # in the certificate, though not the address dialled
        assert record_batch(mtls_proxy.address, tls).accepted_count == 2
        return
    with pytest.raises(grpc.RpcError) as refused:
        record_batch(mtls_proxy.address, tls)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("client", ["another CA", "no client certificate", "plaintext"])
def test_a_client_the_proxy_does_not_trust_or_that_does_not_trust_it_is_unavailable(
    mtls_proxy: LiveProxy, pki: Pki, tmp_path: Path, client: str
) -> None:
    tls: ClientTLS | None = None
    if client == "another CA":
        other = Pki.make(tmp_path / "other")
        tls = ClientTLS(other.ca_file, pki.client_cert, pki.client_key)
    elif client == "no client certificate":
        tls = pki.client(certificate=False)
    with pytest.raises(grpc.RpcError) as refused:
        record_batch(mtls_proxy.address, tls)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, refused.value


def test_a_recorder_trusting_another_ca_spools_and_stores_nothing(
    mtls_proxy: LiveProxy, pki: Pki, tmp_path: Path, make_recorder: type[Recorder]
) -> None:
    other = Pki.make(tmp_path / "other")
    recorder = make_recorder(
        mtls_proxy.address, tls=ClientTLS(other.ca_file, pki.client_cert, pki.client_key)
    )
    ids = [recorder.record(ELECTED, f"to a proxy it does not trust {n}") for n in range(5)]
    assert recorder.flush(30)  # safely in the spool
    eventually(lambda: recorder.stats().spooled == 5)
    stats = recorder.stats()
    assert stats.acknowledged == 0 and not stats.dropped and not stats.set_aside, stats
    assert mtls_proxy.stored(ids) == {}


def test_a_recorder_without_its_client_certificate_spools(
    mtls_proxy: LiveProxy, pki: Pki, make_recorder: type[Recorder]
) -> None:
    recorder = make_recorder(mtls_proxy.address, tls=pki.client(certificate=False))
    ids = [recorder.record(ELECTED, f"without a certificate {n}") for n in range(3)]
    assert recorder.flush(30)
    eventually(lambda: recorder.stats().spooled == 3)
    assert recorder.stats().acknowledged == 0
    assert mtls_proxy.stored(ids) == {}


def test_unreadable_or_half_given_client_files_are_refused_at_once(
    pki: Pki, tmp_path: Path, make_recorder: type[Recorder]
) -> None:
    with pytest.raises(ClientTLSError, match="needs its key"):
        ClientTLS(pki.ca_file, cert_file=pki.client_cert)
    missing = tmp_path / "missing.pem"
    with pytest.raises(ClientTLSError, match=f"cannot read the CA file {missing}"):
        make_recorder("127.0.0.1:1", tls=ClientTLS(ca_file=missing))


def test_a_recorder_takes_changed_tls_files_after_a_failed_stream(
    mtls_proxy: LiveProxy, pki: Pki, tmp_path: Path, make_recorder: type[Recorder]
) -> None:
    """Its CA file first holds another CA (refused: it spools), then the right one: the
    next connection trusts the proxy and delivers the spool, no new recorder needed."""
    ca_file = tmp_path / "trusted.pem"
    ca_file.write_bytes(Pki.make(tmp_path / "other").ca_file.read_bytes())
    recorder = make_recorder(
        mtls_proxy.address, tls=ClientTLS(ca_file, pki.client_cert, pki.client_key)
    )
    ids = [recorder.record(ELECTED, f"before the CA was fixed {n}") for n in range(3)]
    eventually(lambda: recorder.stats().spooled == 3)
    ca_file.write_bytes(pki.ca_file.read_bytes())
    assert recorder.drain(30), recorder.stats()
    eventually(lambda: mtls_proxy.stored(ids) == dict.fromkeys(ids, 1))
