"""`protoevents spool`: list spools and dead-letter stores, replay them to a real `serve`."""

from __future__ import annotations

import json
import re
import signal
import textwrap
from pathlib import Path

import pytest

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.proxy.cli.spool import human_age, human_bytes
from protoevents.recorder import Recorder
from tests.support.commands import CliRunner, run_script
from tests.support.fake_proxy import FakeProxy, down_proxy
from tests.support.polling import poll
from tests.support.serve_process import ServeProcess, serve
from tests.support.stored import assert_each_stored_once, row_count

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED
LOST = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST
LOST_NAME = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST"


def cells(table: list[str]) -> list[dict[str, str]]:
    """The rows of a table `print_table` printed, by column name."""
    header = [(m.group(), m.start()) for m in re.finditer(r"\S+(?: \S+)*", table[0])]
    ends = [start for _, start in header[1:]] + [None]
    return [
        {name: line[start:end].strip() for (name, start), end in zip(header, ends, strict=True)}
        for line in table[1:]
    ]


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


def test_a_slot_left_by_a_process_that_exited_is_listed_and_replayed_once(
    run_cli: CliRunner, tmp_path: Path, processes: list[ServeProcess]
) -> None:
    spool, down = tmp_path / "spool", down_proxy()
    child = run_script(
        textwrap.dedent(
            f"""
            from protoevents.recorder import Recorder
            from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
            r = Recorder(component="nightly", node="node-1", event_types=[ClusterEventType],
                         proxy={down.address!r}, spool_dir={str(spool)!r}, batch_size=100)
            ids = [r.record(ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED, f"run {{n}}")
                   for n in range(300)]
            print(*ids, r.close(600))
            """
        )
    )  # the job's component is gone: no recorder of it will start again
    assert child.returncode == 0, child.stderr
    *ids, closed = child.stdout.split()
    assert (closed, len(ids)) == ("True", 300)
    slot = spool / "node-1" / "nightly" / "slot-0"
    on_disk = sum(p.stat().st_size for p in slot.glob("*.spool"))

    (info,) = json.loads(run_cli("spool", "--spool-dir", str(spool), "--json").stdout)
    assert info["slot"] == str(slot)
    assert (info["pending_events"], info["pending_bytes"], info["held"]) == (300, on_disk, False)
    assert 0 <= info["oldest_age_s"] < 3600
    table = run_cli("spool", "--spool-dir", str(spool)).stdout.splitlines()
    (row,) = cells(table[:-1])
    assert row["SLOT"] == "node-1/nightly/slot-0"  # as `replay` takes it, under --spool-dir
    assert (row["PENDING"], row["BYTES"], row["HELD"]) == ("300", human_bytes(on_disk), "no")
    assert re.fullmatch(r"\d+ s|\d+ min \d+ s", row["OLDEST"]), row
    assert re.fullmatch(
        rf"1 slot under {re.escape(str(spool))}: 300 events pending "
        rf"\({re.escape(human_bytes(on_disk))}\), oldest \d+ (s|min \d+ s); 0 set aside",
        table[-1],
    )

    url = f"sqlite:///{tmp_path}/events.db"
    proxy = serve(processes, tmp_path / "data", url)
    listed_slot = row["SLOT"]
    replayed = run_cli("spool", "--spool-dir", str(spool), "replay", listed_slot,
                       "--proxy", proxy.address, "--json")  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == {
        "delivered": 300, "set_aside": 0, "left": 0, "error": "", "set_aside_reasons": {}
    }  # fmt: skip
    assert not list(slot.glob("*.spool"))
    (info,) = json.loads(run_cli("spool", "--spool-dir", str(spool), "--json").stdout)
    assert (info["pending_events"], info["pending_bytes"], info["oldest_age_s"]) == (0, 0, None)
    poll(lambda: row_count(url) >= 300, 30, "the writer to store the events")
    assert proxy.stop(signal.SIGTERM) == 0
    assert_each_stored_once(url, ids)


def test_an_empty_spool_folder_says_so(run_cli: CliRunner, tmp_path: Path) -> None:
    listed = run_cli("spool", "--spool-dir", str(tmp_path))
    assert (listed.returncode, listed.stdout) == (0, f"no spool slots under {tmp_path}\n")


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (62_716, "61.2 KiB"), (5 << 30, "5.0 GiB")],
)
def test_sizes_are_shown_in_binary_units(size: int, shown: str) -> None:
    assert human_bytes(size) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (0.4, "0 s"), (59.9, "59 s"), (312, "5 min 12 s"), (3 * 3600 + 245, "3 h 4 min"),
     (2 * 86400 + 5 * 3600 + 59, "2 d 5 h")],
)  # fmt: skip
def test_ages_are_shown_in_human_units(seconds: float | None, shown: str) -> None:
    assert human_age(seconds) == shown
