"""A relay: a site whose only writer forwards. It opens no database, forwards every event to
central once, says FAILED_PRECONDITION to queries of stored events (naming why), and still
shows live changes to watchers."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import pytest

from protoevents.v1 import proxy_service_pb2, query_service_pb2, query_service_pb2_grpc
from tests.support.ingest_helpers import make_events
from tests.support.polling import poll
from tests.support.serve_process import ServeProcess
from tests.support.stored import stored_counts


def test_a_relay_keeps_only_its_log_and_forwards_everything_once(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    central = ServeProcess(tmp_path / "central", jsonl=False)
    processes.append(central)
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[[writers]]\nname = "central"\nkind = "forward"\naddress = "{central.address}"\n'
        'site = "site-a"\n'
    )
    relay = ServeProcess(tmp_path / "relay", "--config", str(config), jsonl=False)
    processes.append(relay)
    queries = query_service_pb2_grpc.EventQueryServiceStub(relay.channel)
    watch = queries.WatchEvents(query_service_pb2.WatchEventsRequest(), timeout=30)
    events = make_events(30)
    request = proxy_service_pb2.RecordBatchRequest(events=events)
    assert relay.stub.RecordBatch(request, timeout=10).result.accepted_count == 30

    ids = [e.id for e in events]
    at_central = f"sqlite:///{tmp_path}/central/events.db"
    poll(lambda: stored_counts(at_central) == dict.fromkeys(ids, 1), 30, "events at central")
    seen = [next(watch).event.id for _ in ids]  # live changes, as they pass the relay
    assert seen == ids
    watch.cancel()
    assert not (tmp_path / "relay" / "events.db").exists()
    with pytest.raises(grpc.RpcError) as refused:
        queries.ListEvents(query_service_pb2.ListEventsRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "this proxy stores no events (no writer of kind sql)" in refused.value.details()
    with pytest.raises(grpc.RpcError) as replay:
        request_replay = query_service_pb2.WatchEventsRequest(replay_count=5)
        next(queries.WatchEvents(request_replay, timeout=10))
    assert replay.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert relay.stop(signal.SIGTERM) == 0
