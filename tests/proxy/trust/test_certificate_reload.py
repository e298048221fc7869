"""Certificate files rewritten under a running proxy: new connections are served the renewed
certificate without a restart; bad files are logged and the last good certificate goes on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.proxy.app import start_proxy
from protoevents.proxy.tls import TLSConfigError
from protoevents.recorder import Recorder
from tests.support.ingest_helpers import proxy_settings, run
from tests.support.live_proxy import LiveProxy
from tests.support.pki import Pki, served_serial
from tests.support.polling import eventually

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED
TLS_LOG = "protoevents.proxy.tls"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.make(tmp_path / "pki")


@pytest.fixture
def tls_proxy(pki: Pki, tmp_path: Path) -> Iterator[LiveProxy]:
    folder = tmp_path / "proxy"
    settings = proxy_settings(folder, writer_batch_interval_ms=10, **pki.server_settings())
    proxy = LiveProxy(settings)
    yield proxy
    proxy.stop()


def record_and_store(proxy: LiveProxy, recorder: Recorder, message: str) -> None:
    event_id = recorder.record(ELECTED, message)
    assert recorder.drain(30), recorder.stats()
    eventually(lambda: proxy.stored([event_id]) == {event_id: 1})


def test_a_renewed_certificate_is_served_to_new_connections(
    tls_proxy: LiveProxy, pki: Pki, make_recorder: type[Recorder]
) -> None:
    first = served_serial(tls_proxy.address, pki.ca_file)
    assert first == tls_proxy.proxy.tls.current.serial  # type: ignore[union-attr]
    connected = make_recorder(tls_proxy.address, tls=pki.client(certificate=False))
    record_and_store(tls_proxy, connected, "before the renewal")

    renewed = pki.issue_proxy()
    assert renewed != first
    assert served_serial(tls_proxy.address, pki.ca_file) == renewed
    assert served_serial(tls_proxy.address, pki.ca_file) == renewed  # and it stays
    record_and_store(tls_proxy, connected, "on the connection made before")
    fresh = make_recorder(tls_proxy.address, tls=pki.client(certificate=False), component="fresh")
    record_and_store(tls_proxy, fresh, "on a connection made after")


@pytest.mark.parametrize("damage", ["garbage certificate", "key of another", "missing key"])
def test_bad_files_keep_the_last_good_certificate_and_are_logged(
    tls_proxy: LiveProxy, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    good = served_serial(tls_proxy.address, pki.ca_file)
    if damage == "garbage certificate":
        pki.cert_file.write_text("not a certificate\n")
        expected = f"tls_cert_file {pki.cert_file}: not a PEM certificate"
    elif damage == "key of another":
        pki.key_file.write_bytes(pki.client_key.read_bytes())
        expected = f"tls_key_file {pki.key_file} is not the key of the certificate"
    else:
        pki.key_file.unlink()
        expected = f"cannot read the tls_key_file {pki.key_file}"
    with caplog.at_level(logging.WARNING, logger=TLS_LOG):
        assert served_serial(tls_proxy.address, pki.ca_file) == good
        assert served_serial(tls_proxy.address, pki.ca_file) == good
    warnings = [r.getMessage() for r in caplog.records if r.name == TLS_LOG]
    assert len(warnings) == 1, warnings  # once, not at every connection
    assert expected in warnings[0] and "last good certificate" in warnings[0]

    renewed = pki.issue_proxy()  # fixed: the renewed files are taken
    assert served_serial(tls_proxy.address, pki.ca_file) == renewed


def test_a_proxy_does_not_start_on_bad_files(pki: Pki, tmp_path: Path) -> None:
    pki.cert_file.write_text("")
    settings = proxy_settings(tmp_path / "proxy", **pki.server_settings())
    with pytest.raises(TLSConfigError, match=f"tls_cert_file {pki.cert_file}: not a PEM"):
        run(start_proxy(settings))
    assert not (tmp_path / "proxy" / "wal").exists()  # refused before anything was opened
