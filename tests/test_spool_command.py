"""`protoevents spool`: list spools and dead-letter stores, replay them to a real `serve`."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from recorder import Recorder
from tests.conftest import CliRunner
from tests.fake_proxy import FakeProxy
from tests.faults.harness import assert_each_stored_once, poll, row_count
from tests.serve_process import ServeProcess
from tests.test_pipeline import serve

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED
LOST = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST
LOST_NAME = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST"


def _recorder(proxy: str, spool: Path) -> Recorder:
    return Recorder(
        component="controller",
        node="node-1",
        event_types=[ClusterEventType],
        proxy=proxy,
        spool_dir=spool,
        backoff_max=0.2,
    )


def test_spool_lists_and_replays_a_left_spool_and_its_dead_letter_store(
    run_cli: CliRunner, tmp_path: Path, processes: list[ServeProcess]
) -> None:
    spool = tmp_path / "spool"
    old_proxy = FakeProxy().start()  # a proxy that does not know LEADER_LOST
    old_proxy.reject_types = {LOST_NAME}
    recorder = _recorder(old_proxy.address, spool)
    refused = [recorder.record(LOST, f"lost {n}") for n in range(5)]
    assert recorder.drain(10)
    assert recorder.stats().set_aside == {"event:UNKNOWN_TYPE": 5}
    old_proxy.stop()
    left = [recorder.record(ELECTED, f"left {n}") for n in range(40)]
    assert recorder.close(10)  # spooled; the component then goes away for good
    slot = spool / "node-1" / "controller" / "slot-0"

    listed = run_cli("spool", "--spool-dir", str(spool), "--json")
    assert listed.returncode == 0, listed.stderr
    (info,) = json.loads(listed.stdout)
    assert info["slot"] == str(slot)
    assert (info["pending_events"], info["held"]) == (40, False)
    assert info["oldest_age_s"] >= 0
    assert (info["dead_letter_batches"], info["dead_letter_events"]) == (1, 5)
    ((reason, count),) = info["dead_letter_reasons"].items()
    assert count == 1 and reason.startswith("UNKNOWN_TYPE: unknown event type")
    table = run_cli("spool", "--spool-dir", str(spool))
    assert "node-1/controller/slot-0" in table.stdout and "5 in 1" in table.stdout

    unreachable = run_cli("spool", "replay", str(slot), "--proxy", old_proxy.address,
                          "--timeout", "1")  # fmt: skip
    assert unreachable.returncode == 2
    assert f"proxy {old_proxy.address} unreachable" in unreachable.stderr

    live = _recorder(old_proxy.address, spool)  # a live recorder holds slot-0 again
    held = run_cli("spool", "replay", str(slot), "--proxy", old_proxy.address)
    assert held.returncode == 2
    assert "held by a live recorder" in held.stderr
    assert live.close(10)

    old_proxy.start()  # still refuses the type: the events stay set aside
    again = run_cli("spool", "replay-dead-letter", str(slot), "--proxy", old_proxy.address,
                    "--json")  # fmt: skip
    assert again.returncode == 1, again.stderr
    assert json.loads(again.stdout)["left"] == 5
    old_proxy.stop()

    url = f"sqlite:///{tmp_path}/events.db"
    proxy = serve(processes, tmp_path / "data", url)
    replayed = run_cli("spool", "replay", str(slot), "--proxy", proxy.address, "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["delivered"] == 40
    fixed = run_cli("spool", "replay-dead-letter", str(slot), "--proxy", proxy.address,
                    "--json")  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(fixed.stdout) == {
        "delivered": 5, "set_aside": 0, "left": 0, "error": "", "set_aside_reasons": {}
    }  # fmt: skip
    (info,) = json.loads(run_cli("spool", "--spool-dir", str(spool), "--json").stdout)
    assert (info["pending_events"], info["dead_letter_events"]) == (0, 0)
    poll(lambda: row_count(url) >= 45, 30, "the writer to store the events")
    assert proxy.stop(signal.SIGTERM) == 0
    assert_each_stored_once(url, left + refused)


def test_spool_replay_of_a_folder_that_is_no_slot_is_a_usage_error(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    result = run_cli("spool", "replay", str(tmp_path), "--proxy", "127.0.0.1:1")
    assert result.returncode == 2
    assert "is not a spool slot" in result.stderr
