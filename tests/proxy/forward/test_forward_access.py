"""Who may forward for which site, over real mutual TLS: a site's certificate proves its
identity, the access file says the sites it forwards for, and a claim of another site is
PERMISSION_DENIED, counted, with nothing stored; a proxy of a chain forwards for the sites
behind it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from protoevents.proxy.changes import CREATED, Change
from protoevents.proxy.writers.forward import ForwardOptions, ForwardWriter
from protoevents.v1 import event_pb2
from tests.support.access_file import Entry, write_access_file
from tests.support.events import stored_event
from tests.support.ingest_helpers import proxy_settings
from tests.support.live_proxy import LiveProxy
from tests.support.pki import Pki, write_issued
from tests.support.polling import eventually

SITE_A = Entry(
    "site-a", ["forward"], sites=["site-a"], certificates=["site-a.sites.example"], token=None
)
REGION = Entry(
    "region-1",
    ["forward"],
    sites=["region-1", "site-*"],
    certificates=["region-1.sites.example"],
    token=None,
)
RECORDER = Entry("lab", ["record"], ["*/*"], certificates=["lab.example"], token=None)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def central(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProxy]:
    folder = tmp_path_factory.mktemp("central")
    access = write_access_file(folder / "access.toml", SITE_A, REGION, RECORDER)
    settings = proxy_settings(
        folder / "data",
        access_file=access,
        writer_batch_interval_ms=10,
        **pki.server_settings(mtls=True),
    )
    live = LiveProxy(settings)
    yield live
    live.stop()


def writer(central: LiveProxy, pki: Pki, name: str, site: str) -> ForwardWriter:
    """A forward writer presenting a certificate issued for `name`."""
    cert, key = write_issued(pki, name)
    address = f"127.0.0.1:{central.proxy.port}"
    options = ForwardOptions(
        address=address, site=site, ca_file=pki.ca_file, cert_file=cert, key_file=key
    )
    return ForwardWriter(options)


def forward(central: LiveProxy, writer: ForwardWriter, *events: event_pb2.Event) -> None:
    try:
        central.run(writer.write([Change(CREATED, e) for e in events]))
    finally:
        central.run(writer.close())


def denials(central: LiveProxy, reason: str) -> float:
    sample = central.proxy.metrics.registry.get_sample_value(
        "protoevents_denials_total", {"reason": reason}
    )
    return sample or 0.0


def event(site: str = "") -> event_pb2.Event:
    made = stored_event(1, event_id=str(uuid.uuid4()))
    made.site = site
    return made


def test_a_site_forwards_for_itself(central: LiveProxy, pki: Pki) -> None:
    mine = event()
    forward(central, writer(central, pki, "site-a.sites.example", "site-a"), mine)
    eventually(lambda: central.stored([mine.id]) == {mine.id: 1})


def test_a_site_claiming_another_site_is_permission_denied(central: LiveProxy, pki: Pki) -> None:
    before = denials(central, "site_forbidden")
    claim = event()
    site_a = writer(central, pki, "site-a.sites.example", "site-b")
    with pytest.raises(ConnectionError) as refused:
        forward(central, site_a, claim)
    assert str(refused.value).endswith(
        "PERMISSION_DENIED: request 1: identity 'site-a' may not forward events of site "
        "'site-b' (its sites: site-a)"
    )
    # The claim may hide in an event of a request naming the right site, too.
    hidden = event("site-b")
    with pytest.raises(ConnectionError, match="may not forward events of site 'site-b'"):
        forward(central, writer(central, pki, "site-a.sites.example", "site-a"), event(), hidden)
    assert denials(central, "site_forbidden") == before + 2
    forward(central, writer(central, pki, "site-a.sites.example", "site-a"), event())  # barrier
    assert central.stored([claim.id, hidden.id]) == {}


def test_a_region_forwards_for_the_sites_behind_it(central: LiveProxy, pki: Pki) -> None:
    behind, own = event("site-a"), event()
    forward(central, writer(central, pki, "region-1.sites.example", "region-1"), behind, own)
    eventually(lambda: central.stored([behind.id, own.id]) == {behind.id: 1, own.id: 1})


def test_an_identity_without_the_forward_role_is_refused(central: LiveProxy, pki: Pki) -> None:
    with pytest.raises(ConnectionError) as refused:
        forward(central, writer(central, pki, "lab.example", "lab"), event())
    assert "PERMISSION_DENIED" in str(refused.value)
    assert "identity 'lab' lacks role 'forward'" in str(refused.value)


def test_a_certificate_the_access_file_does_not_name_is_unauthenticated(
    central: LiveProxy, pki: Pki
) -> None:
    with pytest.raises(ConnectionError) as refused:
        forward(central, writer(central, pki, "stranger.example", "site-a"), event())
    assert "UNAUTHENTICATED" in str(refused.value)
    assert "(stranger.example) proves no identity of the access file" in str(refused.value)


def test_forwarding_to_a_proxy_it_does_not_trust_fails_without_storing(
    central: LiveProxy, pki: Pki, tmp_path: Path
) -> None:
    other = Pki.make(tmp_path / "other")
    cert, key = write_issued(pki, "site-a.sites.example")
    options = ForwardOptions(
        address=f"127.0.0.1:{central.proxy.port}",
        site="site-a",
        ca_file=other.ca_file,  # not the CA of central's certificate
        cert_file=cert,
        key_file=key,
    )
    lost = event()
    with pytest.raises(ConnectionError, match="UNAVAILABLE"):
        forward(central, ForwardWriter(options), lost)
    assert central.stored([lost.id]) == {}
