"""The metrics page and `/healthz` of a real `serve` (`--metrics-listen`), scraped over HTTP
and parsed with prometheus_client's parser while events flow and a writer fails for real (a
syslog collector that is not up yet), then recovers."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

from protoevents.v1 import event_pb2, proxy_service_pb2
from tests.support.ingest_helpers import make_event, make_events
from tests.support.paths import ROOT
from tests.support.polling import poll
from tests.support.scrape import healthz, scrape, value
from tests.support.serve_process import ServeProcess
from tests.support.syslog_listener import receive_all


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(tmp_path: Path, processes: list[ServeProcess], collector_port: int) -> ServeProcess:
    """`serve` with the SQL writer `db` and a syslog writer `collector` on `collector_port`,
    stuck after 1 s of failures, its metrics on a port of their own."""
    db = f"sqlite:///{tmp_path}/events.db"
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'db = "{db}"\nwriter_stuck_after_s = 1.0\n'
        '[[writers]]\nname = "db"\nkind = "sql"\n'
        '[[writers]]\nname = "collector"\nkind = "syslog"\ntransport = "tcp"\n'
        f'address = "127.0.0.1:{collector_port}"\nconnect_timeout_s = 1\n'
    )
    flags = ("--config", str(config), "--db", db, "--metrics-listen", "127.0.0.1:0")
    proxy = ServeProcess(tmp_path / "data", *flags, jsonl=False)
    processes.append(proxy)
    return proxy


def record(proxy: ServeProcess, events: list[event_pb2.Event]) -> proxy_service_pb2.BatchResult:
    request = proxy_service_pb2.RecordBatchRequest(events=events)
    return proxy.stub.RecordBatch(request, timeout=10).result


def test_counters_move_as_events_flow_and_healthz_follows_a_failing_writer(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    collector_port = free_port()
    proxy = start(tmp_path, processes, collector_port)
    assert proxy.metrics_url is not None
    health_url = proxy.metrics_url.removesuffix("/metrics") + "/healthz"
    code, body = healthz(health_url)
    assert (code, body["status"], body["problems"]) == (200, "SERVING", [])
    before = scrape(proxy.metrics_url)
    assert value(before, "protoevents_events_received_total") == 0
    assert value(before, "protoevents_watchers") == 0

    good = make_events(20)
    repeats = make_events(3, message="the same thing, three times")  # 2 merge into the first
    nameless = make_event(source=event_pb2.EventSource())
    result = record(proxy, [*good, *repeats, nameless])
    assert (result.accepted_count, len(result.rejections)) == (23, 1)
    assert record(proxy, good[:5]).duplicate_count == 5

    page = scrape(proxy.metrics_url)
    assert value(page, "protoevents_events_received_total") == 29
    assert value(page, "protoevents_events_accepted_total") == 23
    assert value(page, "protoevents_events_duplicates_total") == 5
    assert value(page, "protoevents_dedup_merges_total") == 2
    reason = "REJECTION_REASON_MISSING_SOURCE"
    assert value(page, "protoevents_events_rejected_total", reason=reason) == 1
    assert (value(page, "protoevents_wal_written_bytes_total") or 0) > 0
    assert (value(page, "protoevents_wal_fsyncs_total") or 0) >= 1

    def collector_stuck() -> bool:
        code, body = healthz(health_url)
        return code == 503 and any("writer collector" in p for p in body["problems"])

    poll(collector_stuck, 30, "/healthz to answer 503 naming the collector")
    code, body = healthz(health_url)
    assert body["status"] == "NOT_SERVING"
    assert body["services"]["protoevents.writer.collector"] == "NOT_SERVING"
    assert body["services"]["protoevents.writer.db"] == "SERVING"
    stuck = scrape(proxy.metrics_url)
    assert (value(stuck, "protoevents_writer_lag_bytes", writer="collector") or 0) > 0
    assert (value(stuck, "protoevents_writer_failed_batches_total", writer="collector") or 0) >= 1
    # 22 changes: the 20, the first repeat, and one update of it for the two merged.
    assert value(stuck, "protoevents_writer_written_changes_total", writer="db") == 22
    assert value(stuck, "protoevents_writer_lag_bytes", writer="db") == 0

    with socket.socket() as collector:  # the collector comes up: the writer catches up
        collector.bind(("127.0.0.1", collector_port))
        collector.listen()
        collector.settimeout(60)
        receive_all(collector, [*good, repeats[0]])

        def caught_up() -> bool:
            page = scrape(proxy.metrics_url or "")
            return value(page, "protoevents_writer_lag_bytes", writer="collector") == 0

        poll(caught_up, 30, "the collector's lag to be back to 0")
        poll(lambda: healthz(health_url)[0] == 200, 30, "/healthz to answer 200 again")
        after = scrape(proxy.metrics_url)
        assert value(after, "protoevents_writer_lag_bytes", writer="db") == 0
        assert value(after, "protoevents_writer_written_changes_total", writer="collector") == 22
        assert proxy.stop(signal.SIGTERM) == 0


def test_metrics_are_off_by_default_and_a_taken_address_stops_serve(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    plain = ServeProcess(tmp_path / "plain", jsonl=False)
    processes.append(plain)
    assert plain.metrics_url is None
    assert plain.stop(signal.SIGTERM) == 0
    assert plain.process.stdout is not None
    assert plain.process.stdout.read() == ""  # no second line: nothing listens for HTTP

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        flags = ["--listen", "127.0.0.1:0", "--metrics-listen", address]
        data = ["--data-dir", str(tmp_path / "data"), "--db", f"sqlite:///{tmp_path}/e.db"]
        done = subprocess.run(
            [sys.executable, "-m", "protoevents.proxy.cli", "serve", *flags, *data],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert f"protoevents serve: metrics_listen: address {address} is in use by" in done.stderr
    assert "listening on" not in done.stdout
