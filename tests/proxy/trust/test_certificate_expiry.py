"""A certificate close to expiry: a warning at most once a day, and the seconds it has left
as the gauge protoevents_tls_certificate_expiry_seconds."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import pytest

from protoevents.proxy.tls import DAY_S, CertificateReloader, ServerTLS
from tests.support.ingest_helpers import proxy_settings
from tests.support.live_proxy import LiveProxy
from tests.support.pki import Pki, served_serial

TLS_LOG = "protoevents.proxy.tls"
GAUGE = "protoevents_tls_certificate_expiry_seconds"


def expiring_in(days: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)


def tls_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == TLS_LOG]


def test_a_proxy_whose_certificate_expires_soon_warns_and_shows_the_time_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = Pki.make(tmp_path / "pki")
    pki.issue_proxy(not_after=expiring_in(3))
    settings = proxy_settings(tmp_path / "proxy", **pki.server_settings())
    with caplog.at_level(logging.WARNING, logger=TLS_LOG):
        proxy = LiveProxy(settings)
    try:
        (warning,) = tls_warnings(caplog)
        assert f"in {pki.cert_file} expires in 3.0 days" in warning
        left = proxy.proxy.metrics.registry.get_sample_value(GAUGE, {"file": str(pki.cert_file)})
        assert left is not None and 3 * DAY_S - 120 < left <= 3 * DAY_S

        renewed = pki.issue_proxy(not_after=expiring_in(90))  # renewed: the gauge follows
        assert served_serial(proxy.address, pki.ca_file) == renewed
        left = proxy.proxy.metrics.registry.get_sample_value(GAUGE, {"file": str(pki.cert_file)})
        assert left is not None and 89 * DAY_S < left <= 90 * DAY_S
        assert len(tls_warnings(caplog)) == 1
    finally:
        proxy.stop()


def test_a_proxy_without_tls_has_no_expiry_sample(tmp_path: Path) -> None:
    proxy = LiveProxy(proxy_settings(tmp_path / "proxy"))
    try:
        families = {m.name: m for m in proxy.proxy.metrics.registry.collect()}
        assert families[GAUGE].samples == []  # not a 0 that would read as "expired now"
    finally:
        proxy.stop()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.datetime.now(datetime.UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("days", "window_days"), [(10.0, 14.0), (20.0, 30.0)])
def test_the_warning_comes_at_most_once_a_day(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, days: float, window_days: float
) -> None:
    pki = Pki.make(tmp_path / "pki")
    pki.issue_proxy(not_after=expiring_in(days))
    clock = Clock()
    tls = ServerTLS(pki.cert_file, pki.key_file, expiry_warning_s=window_days * DAY_S)
    with caplog.at_level(logging.WARNING, logger=TLS_LOG):
        reloader = CertificateReloader(tls, clock=clock)
        for _ in range(5):  # handshakes and the periodic check within the day
            assert reloader.fetch() is None
            reloader.check_expiry()
        assert len(tls_warnings(caplog)) == 1
        clock.now += DAY_S - 1
        reloader.check_expiry()
        assert len(tls_warnings(caplog)) == 1
        clock.now += 1
        reloader.check_expiry()
        assert len(tls_warnings(caplog)) == 2
        assert f"expires in {days - 1:.1f} days" in tls_warnings(caplog)[-1]
        clock.now += days * DAY_S
        reloader.check_expiry()
    assert "expired 1.0 days ago" in tls_warnings(caplog)[-1]


def test_a_certificate_far_from_expiry_is_not_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = Pki.make(tmp_path / "pki")
    pki.issue_proxy(not_after=expiring_in(15))
    with caplog.at_level(logging.WARNING, logger=TLS_LOG):
        reloader = CertificateReloader(ServerTLS(pki.cert_file, pki.key_file))
        reloader.check_expiry()
    assert tls_warnings(caplog) == []
    assert 14 * DAY_S < reloader.seconds_left() <= 15 * DAY_S
