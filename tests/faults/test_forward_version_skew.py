"""Version skew between a site and its central proxy: the site upgraded first knows an event
type central does not. Central holds those changes in its quarantine (acknowledged, listed,
counted) and stores the rest; restarted with the new protos it stores them exactly once, with
the site's counts and site; a further restart stores nothing twice."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import pytest

from protoevents.v1 import event_pb2, proxy_service_pb2
from tests.support.commands import CliRunner
from tests.support.ingest_helpers import make_event, make_events
from tests.support.polling import poll
from tests.support.scrape import scrape, value
from tests.support.serve_process import ServeProcess
from tests.support.stored import stored_counts
from tests.support.user_protos import write_user_protos

WIDGET_MODULE = "acme.widgets.v1.widget_events_pb2"
JAMMED = "acme.widgets.v1.WidgetEventType.WIDGET_EVENT_TYPE_JAMMED"
REPEATS = 5


def counts(data_dir: Path) -> dict[str, int]:
    return stored_counts(f"sqlite:///{data_dir}/events.db")


def site_config(path: Path, central: ServeProcess) -> Path:
    path.write_text(
        f'[[writers]]\nkind = "sql"\n\n[[writers]]\nname = "central"\nkind = "forward"\n'
        f'address = "{central.address}"\nsite = "site-a"\n'
    )
    return path


def record(proxy: ServeProcess, events: list[event_pb2.Event]) -> None:
    request = proxy_service_pb2.RecordBatchRequest(events=events)
    result = proxy.stub.RecordBatch(request, timeout=10).result
    assert not result.rejections and not result.quarantined, result


def central_at(data_dir: Path, port: int, *flags: str) -> ServeProcess:
    listen = ("--listen", f"127.0.0.1:{port}", "--metrics-listen", "127.0.0.1:0")
    return ServeProcess(data_dir, *listen, *flags, jsonl=False)


@pytest.mark.timeout(180)
def test_changes_of_a_type_central_does_not_know_are_held_then_stored_once_it_does(
    run_cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = tmp_path / "generated"
    made = run_cli("gen", "--protos", str(write_user_protos(tmp_path)), "--out", str(generated))
    assert made.returncode == 0, made.stderr
    central_dir, site_dir = tmp_path / "central", tmp_path / "site"
    central = central_at(central_dir, 0)
    port = int(central.address.rsplit(":", 1)[1])
    monkeypatch.setenv("PYTHONPATH", str(generated))
    config = site_config(tmp_path / "site.toml", central)
    flags = ("--config", str(config), "--module", WIDGET_MODULE, "--writer-retry-max-s", "0.5")
    site = ServeProcess(site_dir, *flags)

    known = make_events(20)
    newer = [make_event(type=JAMMED, message=f"widget {n} jammed") for n in range(30)]
    # The same jam again and again: the site merges them into one event of count REPEATS,
    # which reaches central as a new event and an update.
    again = [make_event(type=JAMMED, message="widget 99 jammed") for _ in range(REPEATS)]
    record(site, known + newer)
    for event in again:
        record(site, [event])
    poll(lambda: len(counts(site_dir)) == 51, 30, "the site to store every event")
    at_site = counts(site_dir)
    assert at_site[again[0].id] == REPEATS

    # Central stores the known ones and holds the newer ones, acknowledged: the site's
    # forward writer is not held up (its lag is nothing), nothing waits at the site.
    poll(lambda: set(counts(central_dir)) == {e.id for e in known}, 30, "known events at central")
    listed = run_cli("quarantine", "--json", "--data-dir", str(central_dir))
    assert listed.returncode == 0, listed.stderr
    held = json.loads(listed.stdout)
    assert sorted(e["event"]["id"] for e in held["events"]) == sorted(
        {e.id for e in newer} | {again[0].id}
    )
    assert central.metrics_url is not None
    samples = scrape(central.metrics_url)
    assert value(samples, "protoevents_events_quarantined_total", type=JAMMED) == 30 + 2
    assert central.stop(signal.SIGTERM) == 0

    # Central upgraded: restarted with the type, it stores what it held, once, as the site has it.
    upgraded = central_at(central_dir, port, "--module", WIDGET_MODULE)
    poll(lambda: counts(central_dir) == at_site, 30, "central to hold what the site holds")
    listed = run_cli("quarantine", "--json", "--data-dir", str(central_dir))
    assert json.loads(listed.stdout)["count"] == 0
    # New events of the type go straight through now.
    later = make_event(type=JAMMED, message=f"widget {uuid.uuid4()} jammed")
    record(site, [later])
    poll(lambda: later.id in counts(central_dir), 30, "a new jam at central")
    assert upgraded.stop(signal.SIGTERM) == 0

    # Once more: nothing released again, nothing stored twice.
    again_up = central_at(central_dir, port, "--module", WIDGET_MODULE)
    assert again_up.stop(signal.SIGTERM) == 0
    assert counts(central_dir) == {**at_site, later.id: 1}
    assert site.stop(signal.SIGTERM) == 0
