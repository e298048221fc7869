"""Site identity over real mutual TLS between real `serve` processes: a site whose certificate
proves identity site-a, claiming site-b, is refused by central (PERMISSION_DENIED, counted,
nothing stored) while the site keeps its events; once central's access file lets site-a
forward for site-b, every one of them arrives, once, as site-b's."""

from __future__ import annotations

import signal
from pathlib import Path

from protoevents.recorder.setaside import read_batches
from protoevents.v1 import proxy_service_pb2
from tests.support.access_file import Entry, write_access_file
from tests.support.health import NOT_SERVING, SERVING, status
from tests.support.ingest_helpers import make_events
from tests.support.pki import Pki, write_issued
from tests.support.polling import poll
from tests.support.scrape import scrape, value
from tests.support.serve_process import ServeProcess
from tests.support.stored import stored_counts, stored_sites

SITE_A = "site-a.sites.example"


def test_a_site_proven_as_site_a_may_not_forward_as_site_b(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    pki = Pki.make(tmp_path / "pki")
    access = tmp_path / "access.toml"
    identity = Entry("site-a", ["forward"], sites=["site-a"], certificates=[SITE_A], token=None)
    write_access_file(access, identity)
    central = ServeProcess(
        tmp_path / "central",
        "--tls-cert-file", str(pki.cert_file),
        "--tls-key-file", str(pki.key_file),
        "--tls-client-ca-file", str(pki.ca_file),
        "--access-file", str(access),
        "--metrics-listen", "127.0.0.1:0",
        jsonl=False,
    )  # fmt: skip
    processes.append(central)
    cert, key = write_issued(pki, SITE_A)
    config = tmp_path / "site.toml"
    config.write_text(
        'writer_stuck_after_s = 1.0\nwriter_retry_max_s = 0.5\n[[writers]]\nkind = "sql"\n'
        f'[[writers]]\nname = "central"\nkind = "forward"\naddress = "{central.address}"\n'
        f'site = "site-b"\nca_file = "{pki.ca_file}"\ncert_file = "{cert}"\n'
        f'key_file = "{key}"\n'
    )
    site = ServeProcess(tmp_path / "site", "--config", str(config), jsonl=False, follow_log=True)
    processes.append(site)
    events = make_events(25)
    request = proxy_service_pb2.RecordBatchRequest(events=events)
    assert site.stub.RecordBatch(request, timeout=10).result.accepted_count == 25

    assert central.metrics_url is not None
    url = central.metrics_url

    def denied() -> float:
        return value(scrape(url), "protoevents_denials_total", reason="site_forbidden") or 0.0

    poll(lambda: denied() >= 1, 30, "central to deny site-b's changes")
    refusal = "identity 'site-a' may not forward events of site 'site-b' (its sites: site-a)"
    poll(lambda: refusal in site.log(), 30, "the site to log why")
    writer = "protoevents.writer.central"
    poll(lambda: status(site.channel, writer) == NOT_SERVING, 30, "the forward writer stuck")
    assert status(site.channel, "") == SERVING  # the site keeps taking events meanwhile
    at_central = f"sqlite:///{tmp_path}/central/events.db"
    assert stored_counts(at_central) == {}

    # Central's operator lets site-a forward for site-b: the file is read again on change.
    identity.sites = ["site-a", "site-b"]
    write_access_file(access, identity)
    ids = [e.id for e in events]
    poll(lambda: stored_counts(at_central) == dict.fromkeys(ids, 1), 60, "events at central")
    assert set(stored_sites(at_central).values()) == {"site-b"}
    poll(lambda: status(site.channel, writer) == SERVING, 30, "the forward writer to recover")
    assert read_batches(tmp_path / "site" / "set-aside" / "central") == []  # none set aside
    assert site.stop(signal.SIGTERM) == 0
    assert central.stop(signal.SIGTERM) == 0
