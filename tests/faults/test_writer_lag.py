"""How far behind a writer that cannot write is, from a real `serve` (a syslog collector that
is down): its exact changes and bytes behind and the age of its oldest unwritten change, on the
metrics page and from `protoevents lag --json`, while serve runs, once it stopped and after a
restart; then 0 once the collector listens."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

from protoevents.v1 import proxy_service_pb2
from tests.support.commands import CliRunner
from tests.support.ingest_helpers import make_events
from tests.support.polling import poll
from tests.support.scrape import Samples, scrape, value
from tests.support.serve_process import ServeProcess
from tests.support.syslog_listener import receive_all

CHANGES = "protoevents_writer_lag_changes"
AGE = "protoevents_writer_oldest_unwritten_age_seconds"
BYTES = "protoevents_writer_lag_bytes"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(tmp_path: Path, collector_port: int) -> Path:
    """The SQL writer `db` and a syslog writer `collector` on `collector_port`."""
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'db = "sqlite:///{tmp_path}/events.db"\nshutdown_grace_s = 0.5\n'
        '[[writers]]\nname = "db"\nkind = "sql"\n'
        '[[writers]]\nname = "collector"\nkind = "syslog"\ntransport = "tcp"\n'
        f'address = "127.0.0.1:{collector_port}"\nconnect_timeout_s = 1\n'
    )
    return config


def start(tmp_path: Path, processes: list[ServeProcess], config: Path) -> ServeProcess:
    flags = ("--config", str(config), "--db", f"sqlite:///{tmp_path}/events.db")
    proxy = ServeProcess(tmp_path / "data", *flags, "--metrics-listen", "127.0.0.1:0", jsonl=False)
    processes.append(proxy)
    return proxy


def page(proxy: ServeProcess) -> Samples:
    assert proxy.metrics_url is not None
    return scrape(proxy.metrics_url)


def lag_of(proxy: ServeProcess, writer: str = "collector") -> tuple[float | None, ...]:
    """The writer's changes behind, oldest unwritten age and bytes behind, scraped."""
    samples = page(proxy)
    return tuple(value(samples, name, writer=writer) for name in (CHANGES, AGE, BYTES))


def lag_json(run_cli: CliRunner, *args: str) -> dict[str, dict[str, Any]]:
    done = run_cli("lag", "--json", *args)
    assert (done.returncode, done.stderr) == (0, "")
    return {w["writer"]: w for w in json.loads(done.stdout)["writers"]}


def test_a_writer_that_cannot_write_shows_its_exact_lag_until_it_catches_up(
    tmp_path: Path, processes: list[ServeProcess], run_cli: CliRunner
) -> None:
    collector_port = free_port()
    config = write_config(tmp_path, collector_port)
    data = str(tmp_path / "data")
    proxy = start(tmp_path, processes, config)
    good = make_events(20)
    repeats = make_events(3, message="the same thing, three times")  # 2 merge into the first
    events = [*good, *repeats]
    request = proxy_service_pb2.RecordBatchRequest(events=events)
    assert proxy.stub.RecordBatch(request, timeout=10).result.accepted_count == 23
    # 22 changes: the 20, the first repeat, and one update of it for the two merged.
    poll(lambda: value(page(proxy), BYTES, writer="db") == 0, 30, "the SQL writer to catch up")

    running = page(proxy)
    assert value(running, CHANGES, writer="collector") == 22
    assert (value(running, AGE, writer="collector") or 0) > 0
    behind = value(running, BYTES, writer="collector") or 0
    assert behind > 0
    assert (value(running, CHANGES, writer="db"), value(running, AGE, writer="db")) == (0, 0)

    # While serve runs: the collector saved no bookmark yet, the config names it.
    listed = lag_json(run_cli, "--config", str(config), "--data-dir", data)
    collector = listed["collector"]
    assert (collector["changes_behind"], collector["bytes_behind"]) == (22, behind)
    assert collector["oldest_unwritten_age_s"] > 0 and collector["oldest_unwritten"]
    assert not collector["bookmark_saved"]
    assert (listed["db"]["changes_behind"], listed["db"]["bytes_behind"]) == (0, 0)
    assert listed["db"]["oldest_unwritten_age_s"] == 0 and listed["db"]["bookmark_saved"]
    assert "collector" not in lag_json(run_cli, "--data-dir", data)  # only saved bookmarks

    assert proxy.stop(signal.SIGTERM) == 0  # the collector still down: left behind
    stopped = lag_json(run_cli, "--config", str(config), "--data-dir", data)["collector"]
    assert (stopped["changes_behind"], stopped["bytes_behind"]) == (22, behind)
    assert stopped["oldest_unwritten_age_s"] >= collector["oldest_unwritten_age_s"]

    proxy = start(tmp_path, processes, config)  # the backlog refilled from the log
    restarted = page(proxy)
    assert value(restarted, CHANGES, writer="collector") == 22
    assert value(restarted, BYTES, writer="collector") == behind
    assert (value(restarted, AGE, writer="collector") or 0) >= stopped["oldest_unwritten_age_s"]

    with socket.socket() as listener:  # the collector comes up: the writer catches up
        listener.bind(("127.0.0.1", collector_port))
        listener.listen()
        listener.settimeout(60)
        receive_all(listener, [*good, repeats[0]])
        poll(lambda: lag_of(proxy) == (0, 0, 0), 30, "the collector's lag to be 0")
        now = lag_json(run_cli, "--config", str(config), "--data-dir", data)["collector"]
        shown = (now["changes_behind"], now["bytes_behind"], now["oldest_unwritten_age_s"])
        assert shown == (0, 0, 0)
        assert now["bookmark_saved"] and now["oldest_unwritten"] is None
        assert proxy.stop(signal.SIGTERM) == 0
