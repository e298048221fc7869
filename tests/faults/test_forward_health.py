"""Health of a site while its central proxy is away, over real gRPC from real `serve`
processes: the forward writer's own status says it is stuck, but the site keeps taking events
(its log rides the outage out) and says so; central back, everything arrives once."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from protoevents.v1 import proxy_service_pb2
from tests.support.health import NOT_SERVING, SERVING, status
from tests.support.ingest_helpers import make_events
from tests.support.polling import poll
from tests.support.serve_process import ServeProcess
from tests.support.stored import stored_counts


def test_a_site_serves_while_central_is_away_and_its_forward_writer_says_it_is_stuck(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on, until central does
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "site.toml"
    config.write_text(
        'writer_stuck_after_s = 1.0\nwriter_retry_max_s = 0.5\n[[writers]]\nkind = "sql"\n'
        f'[[writers]]\nname = "central"\nkind = "forward"\naddress = "127.0.0.1:{port}"\n'
        'site = "site-a"\ntimeout_s = 2\n'
    )
    site = ServeProcess(tmp_path / "site", "--config", str(config), jsonl=False)
    processes.append(site)
    first = make_events(20)
    request = proxy_service_pb2.RecordBatchRequest(events=first)
    assert site.stub.RecordBatch(request, timeout=10).result.accepted_count == 20

    writer = "protoevents.writer.central"
    poll(lambda: status(site.channel, writer) == NOT_SERVING, 30, "the forward writer stuck")
    assert status(site.channel, "") == SERVING
    assert status(site.channel, "protoevents.v1.EventProxyService") == SERVING
    assert status(site.channel, "protoevents.writer.sql") == SERVING
    more = make_events(20)
    request = proxy_service_pb2.RecordBatchRequest(events=more)
    assert site.stub.RecordBatch(request, timeout=10).result.accepted_count == 20
    ids = [e.id for e in first + more]
    at_site = f"sqlite:///{tmp_path}/site/events.db"
    poll(lambda: stored_counts(at_site) == dict.fromkeys(ids, 1), 30, "events at the site")

    central = ServeProcess(tmp_path / "central", "--listen", f"127.0.0.1:{port}", jsonl=False)
    processes.append(central)
    at_central = f"sqlite:///{tmp_path}/central/events.db"
    poll(lambda: stored_counts(at_central) == dict.fromkeys(ids, 1), 30, "events at central")
    poll(lambda: status(site.channel, writer) == SERVING, 30, "the forward writer to recover")
    assert site.stop(signal.SIGTERM) == 0
    assert central.stop(signal.SIGTERM) == 0
