"""Forced alerts from the recorder and `protoevents record --alert` to a real `serve`: sent,
spooled and replayed, merged only with repeats asking the same, stored and shown."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import grpc
import pytest

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.proxy.db.engine import create_engine
from protoevents.proxy.query.store import EventStore
from protoevents.v1 import query_service_pb2, query_service_pb2_grpc
from tests.support.commands import CliRunner
from tests.support.serve_process import ServeProcess

LOST = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST


def stored(data: Path, ids: list[str]) -> dict[str, tuple[bool, int]]:
    """(alert, count) of each of `ids` stored in the SQLite database of a stopped serve."""
    engine = create_engine(f"sqlite:///{data}/events.db")
    try:
        store = EventStore(engine)
        found = {event_id: store.get_event(event_id) for event_id in ids}
    finally:
        engine.dispose()
    return {i: (e.alert, e.count) for i, e in found.items() if e is not None}


def shown_alerts(jsonl: Path) -> dict[str, bool]:
    """Each event id in a JSON lines file, and whether its line shows `"alert": true`."""
    shown: dict[str, bool] = {}
    for line in jsonl.read_text().splitlines():
        event = json.loads(line)["event"]
        shown[event["id"]] = event.get("alert", False)
    return shown


@pytest.mark.parametrize("alert", ["yes", 1, None])
def test_alert_must_be_a_bool(make_recorder, fake_proxy, alert: object) -> None:
    recorder = make_recorder(fake_proxy.address)
    with pytest.raises(TypeError, match="alert must be a bool"):
        recorder.record(LOST, "m", alert=alert)
    assert recorder.stats().recorded == 0


def test_forced_alerts_are_stored_as_such_also_after_the_spool_and_merge_only_together(
    make_recorder, processes: list[ServeProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = ServeProcess(data)
    processes.append(first)
    recorder = make_recorder(first.address)
    forced = recorder.record(LOST, "node-7 went away", alert=True)
    plain = recorder.record(LOST, "node-7 went away")
    recorder.record(LOST, "node-7 went away", alert=True)  # merged into `forced`
    recorder.record(LOST, "node-7 went away")  # merged into `plain`
    assert recorder.flush(10)
    assert recorder.stats().merged == 2
    assert first.stop(signal.SIGTERM) == 0

    # Recorded while the proxy is down: spooled, and replayed once it is back.
    spooled = recorder.record(LOST, "node-7 still away", alert=True)
    assert recorder.flush(10)
    assert list(recorder.spool_path.glob("*.spool"))
    port = first.address.rsplit(":", 1)[1]
    second = ServeProcess(data, "--listen", f"127.0.0.1:{port}")
    processes.append(second)
    assert recorder.drain(30)
    assert recorder.stats().replayed == 1

    # The query service reads the flag back.
    with grpc.insecure_channel(second.address) as channel:
        query = query_service_pb2_grpc.EventQueryServiceStub(channel)
        got = {
            event_id: query.GetEvent(query_service_pb2.GetEventRequest(id=event_id), timeout=10)
            for event_id in (forced, plain)
        }
    assert {i: (r.event.alert, r.event.count) for i, r in got.items()} == {
        forced: (True, 2),
        plain: (False, 2),
    }
    assert second.stop(signal.SIGTERM) == 0
    assert stored(data, [forced, plain, spooled]) == {
        forced: (True, 2),
        plain: (False, 2),
        spooled: (True, 1),
    }
    assert shown_alerts(second.jsonl) == {forced: True, plain: False, spooled: True}


def test_cli_record_alert_flag(
    run_cli: CliRunner, processes: list[ServeProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    proxy = ServeProcess(data)
    processes.append(proxy)
    args = ("record", "CLUSTER_EVENT_TYPE_LEADER_LOST", "node-7 went away", "--component", "c",
            "--proxy", proxy.address, "--spool-dir", str(tmp_path / "spool"))  # fmt: skip
    forced, plain = run_cli(*args, "--alert"), run_cli(*args)
    assert (forced.returncode, plain.returncode) == (0, 0), (forced.stderr, plain.stderr)
    # Not merged: the plain event differs from the forced alert by the flag alone.
    assert "merged" not in plain.stderr
    assert proxy.stop(signal.SIGTERM) == 0
    ids = [forced.stdout.strip(), plain.stdout.strip()]
    assert stored(data, ids) == {ids[0]: (True, 1), ids[1]: (False, 1)}
    assert "--alert" in run_cli("record", "--help").stdout
