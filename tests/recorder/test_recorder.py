"""The recorder against a real gRPC proxy on a loopback port: delivery, spool, replay, order."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import textwrap
import threading

import grpc
import pytest

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.lab.v1.lab_events_pb2 import LabEventType
from protoevents.recorder import (
    AmbiguousEventTypeError,
    EventHandler,
    Recorder,
    UnknownEventTypeError,
    UnspecifiedEventTypeError,
    grpc_threads,
)
from protoevents.recorder.setaside import read_batches
from protoevents.v1 import severity_pb2
from tests.support.commands import run_script
from tests.support.fake_proxy import FakeProxy, down_proxy
from tests.support.serve_process import ServeProcess

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED
LOST = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST


# -- validation at the call site ----------------------------------------------------------


def test_unknown_type_raises_naming_the_type_and_the_enums(fake_proxy, make_recorder) -> None:
    recorder = make_recorder(fake_proxy.address)
    with pytest.raises(UnknownEventTypeError, match=r"'NOPE'.*ClusterEventType") as raised:
        recorder.record("NOPE", "x")
    assert isinstance(raised.value, ValueError)
    with pytest.raises(UnknownEventTypeError, match="99"):
        recorder.record(99, "x")
    with pytest.raises(UnknownEventTypeError, match="LAB_EVENT_TYPE_NODE_FAILED"):
        recorder.record("LAB_EVENT_TYPE_NODE_FAILED", "another service's type")


def test_zero_value_raises(fake_proxy, make_recorder) -> None:
    recorder = make_recorder(fake_proxy.address)
    with pytest.raises(UnspecifiedEventTypeError):
        recorder.record(ClusterEventType.CLUSTER_EVENT_TYPE_UNSPECIFIED, "x")
    with pytest.raises(UnspecifiedEventTypeError):
        recorder.record("CLUSTER_EVENT_TYPE_UNSPECIFIED", "x")


def test_bare_number_of_two_enums_is_ambiguous(fake_proxy, make_recorder) -> None:
    recorder = make_recorder(fake_proxy.address, event_types=[ClusterEventType, LabEventType])
    with pytest.raises(AmbiguousEventTypeError, match="pass the type's name"):
        recorder.record(ELECTED, "x")
    recorder.record("CLUSTER_EVENT_TYPE_LEADER_ELECTED", "by value name")
    recorder.record(LabEventType.Name(LabEventType.LAB_EVENT_TYPE_NODE_FAILED), "by name")
    assert recorder.flush(10)
    assert sorted(e.type.rsplit(".", 1)[1] for e in fake_proxy.events.values()) == [
        "CLUSTER_EVENT_TYPE_LEADER_ELECTED",
        "LAB_EVENT_TYPE_NODE_FAILED",
    ]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"message": b"bytes"}, TypeError),
        ({"attributes": {"k": 1}}, TypeError),
        ({"attributes": ["k"]}, TypeError),
        ({"data": {"k": object()}}, TypeError),
        ({"obj": 3}, TypeError),
        ({"obj": "no-slash"}, ValueError),
        ({"severity": "loud"}, ValueError),
        ({"severity": 42}, ValueError),
    ],
)
def test_wrong_arguments_raise(fake_proxy, make_recorder, kwargs, error) -> None:
    recorder = make_recorder(fake_proxy.address)
    arguments = {"message": "m", **kwargs}
    with pytest.raises(error):
        recorder.record(ELECTED, **arguments)
    assert recorder.stats().recorded == 0


def test_event_carries_declared_and_given_fields(fake_proxy, make_recorder) -> None:
    recorder = make_recorder(fake_proxy.address)
    default_id = recorder.record(ELECTED, "node-7 leads")
    full_id = recorder.record(
        LOST,
        "leader gone",
        severity="warning",
        obj="Node/prod/node-7",
        attributes={"term": "12"},
        data={"votes": [3, 2], "ok": False},
    )
    assert recorder.flush(10)
    default, full = fake_proxy.events[default_id], fake_proxy.events[full_id]
    assert (
        default.type == "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED"
    )
    assert default.severity == severity_pb2.SEVERITY_INFO
    assert default.category == "cluster"
    assert (default.source.node, default.source.component) == ("node-1", "controller")
    assert default.time.seconds > 0
    assert full.severity == severity_pb2.SEVERITY_WARNING
    assert (full.object.kind, full.object.namespace, full.object.name) == ("Node", "prod", "node-7")
    assert dict(full.attributes) == {"term": "12"}
    assert full.data["votes"] == [3, 2]
    assert full.data["ok"] is False


def test_ids_are_time_ordered_uuid7(fake_proxy, make_recorder) -> None:
    recorder = make_recorder(fake_proxy.address)
    ids = [recorder.record(ELECTED, str(i)) for i in range(200)]
    assert ids == sorted(ids)
    assert all(len(i) == 36 and i[14] == "7" for i in ids)


# -- batching, flush and close -------------------------------------------------------------


def test_exports_when_a_batch_is_full(fake_proxy, make_recorder) -> None:
    recorder = make_recorder(fake_proxy.address, batch_size=10, flush_interval=3600)
    ids = [recorder.record(ELECTED, str(i)) for i in range(10)]
    assert fake_proxy.wait_for(10, timeout=10)
    assert fake_proxy.stored_ids() == ids


def test_exports_at_the_interval(fake_proxy, make_recorder) -> None:
    recorder = make_recorder(fake_proxy.address, batch_size=1000, flush_interval=0.05)
    ids = [recorder.record(ELECTED, str(i)) for i in range(3)]
    assert fake_proxy.wait_for(3, timeout=10)
    assert fake_proxy.stored_ids() == ids


def test_flush_sends_a_partial_batch(fake_proxy, make_recorder) -> None:
    recorder = make_recorder(fake_proxy.address, batch_size=1000, flush_interval=3600)
    ids = [recorder.record(ELECTED, str(i)) for i in range(7)]
    assert recorder.flush(10) is True
    assert fake_proxy.stored_ids() == ids
    stats = recorder.stats()
    assert (stats.recorded, stats.sent, stats.acknowledged) == (7, 7, 7)


def test_close_flushes_then_drops_and_counts_later_events(fake_proxy, make_recorder) -> None:
    recorder = make_recorder(fake_proxy.address, batch_size=1000, flush_interval=3600)
    ids = [recorder.record(ELECTED, str(i)) for i in range(5)]
    assert recorder.close(10) is True
    assert fake_proxy.stored_ids() == ids
    late = recorder.record(ELECTED, "after close")
    assert late not in fake_proxy.events
    assert recorder.stats().dropped == {"closed": 1}


def test_context_manager_closes(fake_proxy, tmp_path) -> None:
    with Recorder(
        component="c", event_types=[ClusterEventType], proxy=fake_proxy.address, spool_dir=tmp_path
    ) as recorder:
        event_id = recorder.record(ELECTED, "x")
    assert fake_proxy.stored_ids() == [event_id]


def test_queue_bound_drops_newest_and_counts(make_recorder) -> None:
    proxy = down_proxy()
    recorder = make_recorder(
        proxy.address, batch_size=10, queue_size=10, flush_interval=3600, backoff_max=3600
    )
    # The delivery thread may move full batches to the spool meanwhile, so count exactly:
    for i in range(500):
        recorder.record(ELECTED, str(i))
    stats = recorder.stats()
    assert stats.recorded + stats.dropped.get("queue_full", 0) == 500
    assert recorder.flush(10)
    assert recorder.stats().spooled == stats.recorded


# -- concurrency ---------------------------------------------------------------------------


def test_sixteen_threads_recording_at_once(fake_proxy, make_recorder) -> None:
    recorder = make_recorder(fake_proxy.address, batch_size=500)
    per_thread: dict[int, list[str]] = {}
    start = threading.Barrier(16)

    def work(n: int) -> None:
        start.wait()
        per_thread[n] = [recorder.record(ELECTED, f"{n}:{i}") for i in range(2000)]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert recorder.flush(30)
    stored = fake_proxy.stored_ids()
    assert len(stored) == 32_000 == fake_proxy.arrivals
    assert set(stored) == {i for ids in per_thread.values() for i in ids}
    position = {event_id: n for n, event_id in enumerate(stored)}
    for ids in per_thread.values():
        assert [position[i] for i in ids] == sorted(position[i] for i in ids)
    assert recorder.stats().acknowledged == 32_000


# -- an unreachable or restarting proxy ----------------------------------------------------


def test_proxy_down_at_start_then_up(make_recorder) -> None:
    proxy = down_proxy()
    recorder = make_recorder(proxy.address, batch_size=100)
    ids = [recorder.record(ELECTED, str(i)) for i in range(1000)]
    assert recorder.flush(10) is True  # safely in the spool
    assert recorder.stats().spooled == 1000
    assert any(recorder.spool_path.glob("*.spool"))

    proxy.start()
    assert recorder.drain(30)
    assert proxy.stored_ids() == ids
    stats = recorder.stats()
    assert stats.replayed == 1000 and stats.dropped == {}
    assert stats.spool_pending == 0
    assert not any(recorder.spool_path.glob("*.spool"))


def test_proxy_restarted_while_recording(fake_proxy, make_recorder) -> None:
    recorder = make_recorder(fake_proxy.address, batch_size=50, flush_interval=0.01)
    ids = [recorder.record(ELECTED, str(i)) for i in range(2000)]
    assert fake_proxy.wait_for(2000, timeout=30)
    fake_proxy.stop()
    ids += [recorder.record(LOST, str(i)) for i in range(2000)]
    assert recorder.flush(10)
    fake_proxy.start()
    ids += [recorder.record(ELECTED, str(i)) for i in range(2000)]
    assert recorder.drain(30)
    assert fake_proxy.stored_ids() == ids


def test_proxy_restarted_every_60_ms_for_3_s(fake_proxy, make_recorder) -> None:
    recorder = make_recorder(fake_proxy.address, batch_size=100, flush_interval=0.01)
    done = threading.Event()
    restarts = 0

    def bounce() -> None:
        nonlocal restarts
        while not done.wait(0.03):
            fake_proxy.stop()
            done.wait(0.03)
            fake_proxy.start()
            restarts += 1

    bouncer = threading.Thread(target=bounce)
    bouncer.start()
    ids: list[str] = []
    timer = threading.Timer(3.0, done.set)
    timer.start()
    while not done.is_set():
        ids.extend(recorder.record(ELECTED, str(len(ids))) for _ in range(50))
        done.wait(0.002)
    bouncer.join()
    assert restarts >= 10
    assert recorder.drain(60)
    assert fake_proxy.stored_ids() == ids  # each once, in recording order
    stats = recorder.stats()
    assert stats.acknowledged + stats.replayed == len(ids)
    assert stats.dropped == {}


def test_killed_recorder_replays_its_spool_on_restart(tmp_path) -> None:
    proxy = down_proxy()
    script = textwrap.dedent(
        f"""
        import os, sys
        from protoevents.recorder import Recorder
        from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
        r = Recorder(component="controller", node="node-1", event_types=[ClusterEventType],
                     proxy={proxy.address!r}, spool_dir={str(tmp_path)!r}, batch_size=100)
        ids = [r.record(ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED, str(i))
               for i in range(1500)]
        assert r.flush(20)
        print("\\n".join(ids), flush=True)
        os.kill(os.getpid(), {int(signal.SIGKILL)})
        """
    )
    child = run_script(script)
    assert child.returncode == -signal.SIGKILL, child.stderr
    ids = child.stdout.split()
    assert len(ids) == 1500

    proxy.start()
    try:
        recorder = Recorder(
            component="controller",
            node="node-1",
            event_types=[ClusterEventType],
            proxy=proxy.address,
            spool_dir=tmp_path,
        )
        assert recorder.drain(30)
        assert recorder.close(10)
        assert proxy.stored_ids() == ids
        assert recorder.stats().replayed == 1500
    finally:
        proxy.stop()


# -- closing: a short-lived process delivers the backlog -------------------------------------


def spooled_files(recorder: Recorder) -> list[str]:
    return sorted(p.name for p in recorder.spool_path.glob("*.spool"))


def close_in_thread(recorder: Recorder, timeout: float) -> bool:
    """`recorder.close(timeout)`, failing the test if it is still waiting after 60 s."""
    result: list[bool] = []
    closer = threading.Thread(target=lambda: result.append(recorder.close(timeout)))
    closer.start()
    closer.join(60)
    assert not closer.is_alive(), f"close({timeout}) waited for a proxy that is down"
    return result[0]


def test_close_delivers_what_was_spooled_while_the_proxy_was_down(
    fake_proxy, make_recorder
) -> None:
    # A backoff of up to a minute: close must not wait it out, nor grpc's reconnect backoff.
    recorder = make_recorder(fake_proxy.address, batch_size=100, backoff_max=60)
    ids = [recorder.record(ELECTED, "before")]
    assert recorder.flush(10)
    fake_proxy.stop()
    ids += [recorder.record(ELECTED, str(i)) for i in range(1000)]
    assert recorder.flush(10)  # safely in the spool
    assert recorder.stats().spool_pending == 1000

    fake_proxy.start()
    assert recorder.close(10) is True
    assert fake_proxy.stored_ids() == ids
    stats = recorder.stats()
    assert (stats.replayed, stats.spool_pending, stats.dropped) == (1000, 0, {})
    assert spooled_files(recorder) == []


def test_a_short_lived_recorder_delivers_the_backlog_an_earlier_one_left(
    fake_proxy, make_recorder
) -> None:
    fake_proxy.stop()
    earlier = make_recorder(fake_proxy.address, batch_size=100)
    left = [earlier.record(ELECTED, str(i)) for i in range(500)]
    assert close_in_thread(earlier, 300) is True  # spooled, without waiting 300 s
    assert earlier.stats().spool_pending == 500

    fake_proxy.start()
    later = make_recorder(fake_proxy.address)  # a cron job: one event, then close
    assert later.spool_path == earlier.spool_path
    last = later.record(LOST, "the job's one event")
    assert later.close(10) is True
    assert fake_proxy.stored_ids() == [*left, last]
    stats = later.stats()
    assert stats.acknowledged + stats.replayed == 501
    assert (stats.spool_pending, stats.dropped) == (0, {})
    assert spooled_files(later) == []


def test_close_with_the_proxy_down_returns_at_once_leaving_the_spool_to_a_later_recorder(
    make_recorder,
) -> None:
    proxy = down_proxy()
    recorder = make_recorder(proxy.address, batch_size=100)
    ids = [recorder.record(ELECTED, str(i)) for i in range(300)]
    assert close_in_thread(recorder, 300) is True  # safely spooled
    stats = recorder.stats()
    assert (stats.spooled, stats.spool_pending, stats.dropped) == (300, 300, {})
    assert spooled_files(recorder) != []

    proxy.start()
    try:
        later = make_recorder(proxy.address)
        assert later.drain(30)
        assert proxy.stored_ids() == ids
        assert later.close(10) is True
        assert spooled_files(later) == []
    finally:
        proxy.stop()


def test_close_to_a_proxy_that_does_not_answer_keeps_its_timeout_and_spools(
    fake_proxy, make_recorder
) -> None:
    fake_proxy.hold.clear()  # the proxy takes the stream but never acknowledges
    try:
        recorder = make_recorder(fake_proxy.address, batch_size=100)
        ids = [recorder.record(ELECTED, str(i)) for i in range(200)]
        assert close_in_thread(recorder, 2) is True  # what was in flight went to the spool
        stats = recorder.stats()
        assert (stats.acknowledged, stats.spool_pending, stats.dropped) == (0, 200, {})
    finally:
        fake_proxy.hold.set()
    later = make_recorder(fake_proxy.address)
    assert later.drain(30)
    assert sorted(fake_proxy.stored_ids()) == sorted(ids)  # each once
    assert later.close(10) is True
    assert spooled_files(later) == []


def test_cli_record_delivers_what_an_earlier_run_left_in_the_spool(run_cli, tmp_path) -> None:
    proxy = down_proxy()
    args = ["--component", "cron", "--node", "node-1", "--spool-dir", str(tmp_path)]
    # A proxy that is down is told at once: no waiting for the 600 s (or run_cli's 120 s).
    first = run_cli("record", "CLUSTER_EVENT_TYPE_LEADER_LOST", "first", *args,
                    "--proxy", proxy.address, "--timeout", "600")  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert list(tmp_path.rglob("*.spool"))
    proxy.start()
    try:
        second = run_cli("record", "CLUSTER_EVENT_TYPE_LEADER_LOST", "second", *args,
                         "--proxy", proxy.address)  # fmt: skip
        assert second.returncode == 0, second.stderr
        assert proxy.stored_ids() == [first.stdout.strip(), second.stdout.strip()]
        assert not list(tmp_path.rglob("*.spool"))
    finally:
        proxy.stop()


def test_spool_cap_drops_the_oldest_and_counts_exactly(make_recorder) -> None:
    proxy = down_proxy()
    recorder = make_recorder(
        proxy.address, batch_size=50, spool_max_bytes=64 * 1024, flush_interval=3600
    )
    ids = []
    for i in range(40):
        ids += [recorder.record(ELECTED, f"{i}:{j}:" + "x" * 200) for j in range(50)]
        assert recorder.flush(10) is (recorder.stats().dropped == {})
    dropped = recorder.stats().dropped["spool_full"]
    assert 0 < dropped < 2000
    assert recorder.stats().spool_pending == 2000 - dropped

    proxy.start()
    assert recorder.drain(30)
    assert proxy.stored_ids() == ids[dropped:]
    proxy.stop()


def test_rejected_events_are_set_aside_not_retried(fake_proxy, make_recorder) -> None:
    fake_proxy.reject_types = {
        "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST"
    }
    recorder = make_recorder(fake_proxy.address)
    kept = [recorder.record(ELECTED, "kept") for _ in range(3)]
    refused = [recorder.record(LOST, "refused") for _ in range(2)]
    assert recorder.drain(10)
    assert fake_proxy.stored_ids() == kept
    stats = recorder.stats()
    assert stats.rejected == {"UNKNOWN_TYPE": 2}
    assert stats.set_aside == {"event:UNKNOWN_TYPE": 2}
    assert (stats.acknowledged, stats.dropped) == (3, {})
    assert fake_proxy.arrivals == 5
    recorder.close(5)
    (batch,) = read_batches(recorder.dead_letter_path)
    assert [e.id for e in batch.events] == refused
    assert batch.stage == "recorder"
    assert batch.reason.startswith("UNKNOWN_TYPE: unknown event type ")


def test_a_batch_refused_as_malformed_is_set_aside_after_a_second_try(
    fake_proxy, make_recorder
) -> None:
    fake_proxy.abort_code = grpc.StatusCode.INVALID_ARGUMENT
    recorder = make_recorder(fake_proxy.address, batch_size=5)
    refused = [recorder.record(ELECTED, str(i)) for i in range(5)]
    assert recorder.drain(10)  # set aside, not dropped
    stats = recorder.stats()
    assert (stats.set_aside, stats.dropped) == ({"batch:INVALID_ARGUMENT": 5}, {})
    assert fake_proxy.batches == 0 and fake_proxy.aborted == 2  # the second time alone
    fake_proxy.abort_code = None
    event_id = recorder.record(ELECTED, "after")
    assert recorder.drain(10)
    assert fake_proxy.stored_ids() == [event_id]
    (batch,) = read_batches(recorder.dead_letter_path)
    assert [e.id for e in batch.events] == refused
    assert batch.reason == "INVALID_ARGUMENT: refused batch 2"


def test_slow_proxy_does_not_block_record(fake_proxy, make_recorder) -> None:
    fake_proxy.hold.clear()
    recorder = make_recorder(fake_proxy.address, batch_size=10, flush_interval=0.01)
    ids = [recorder.record(ELECTED, str(i)) for i in range(5000)]
    assert recorder.stats().recorded == 5000
    fake_proxy.hold.set()
    assert fake_proxy.wait_for(5000, timeout=30)
    assert fake_proxy.stored_ids() == ids


# -- processes and event loops -------------------------------------------------------------


# Both processes of a fork script dump their stacks and exit 1 if they hang, well before
# run_script's own timeout: a hang in gRPC shows where it is instead of a bare timeout.
_FORK_WATCHDOG = textwrap.dedent(
    """
    import faulthandler, os
    from protoevents.recorder import grpc_threads
    grpc_at_fork = []  # registered first, so it runs last: after the recorder's own hook
    os.register_at_fork(before=lambda: grpc_at_fork.append(grpc_threads.alive()))
    faulthandler.dump_traceback_later(25, exit=True)
    """
)
_FORK = textwrap.dedent(
    """
    faulthandler.cancel_dump_traceback_later()  # its thread would not survive the fork
    pid = os.fork()
    faulthandler.dump_traceback_later(25, exit=True)
    if pid == 0:
        print(r.record(5, "child"), r.close(10), r.stats().recorded, flush=True)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(status, grpc_at_fork, flush=True)
    print(r.record(4, "parent after fork"), r.close(10), r.stats().recorded, flush=True)
    """
)


def test_forked_child_records_with_its_own_state(fake_proxy, tmp_path) -> None:
    # A component process (no gRPC server in it, unlike this test process) forks a worker.
    script = _FORK_WATCHDOG + textwrap.dedent(
        f"""
        from protoevents.recorder import Recorder
        from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
        r = Recorder(component="controller", node="node-1", event_types=[ClusterEventType],
                     proxy={fake_proxy.address!r}, spool_dir={str(tmp_path)!r})
        print(r.record(4, "parent before fork"), r.flush(10))
        """
    )
    result = run_script(script + _FORK)
    assert result.returncode == 0, result.stderr
    before, child, forked, after = (line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert before[1] == "True"
    assert child[1].split() == ["True", "1"], "the child starts with its own, empty state"
    assert forked == ["0", "[[]]"], "the child exited 0; gRPC ran no thread at the fork"
    assert after[1].split() == ["True", "2"]
    assert set(fake_proxy.stored_ids()) == {before[0], child[0], after[0]}


@pytest.mark.skipif(sys.platform != "linux", reason="gRPC's threads are found in /proc")
def test_fork_after_a_failed_stream_waits_for_grpc_to_stop(tmp_path) -> None:
    # A proxy that takes the connection but never speaks HTTP/2: the stream fails ("timed out
    # before receiving SETTINGS frame") and the failed call keeps its channel, and with it
    # gRPC core and all its threads, alive in a reference cycle. A fork then left the child
    # gRPC's state without its threads: it hung or aborted in its first channel.
    script = _FORK_WATCHDOG + textwrap.dedent(
        f"""
        import socket
        from protoevents.recorder import Recorder
        from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
        silent = socket.create_server(("127.0.0.1", 0))
        r = Recorder(component="controller", node="node-1", event_types=[ClusterEventType],
                     proxy="127.0.0.1:%d" % silent.getsockname()[1],
                     spool_dir={str(tmp_path)!r}, ack_timeout=1.0)
        print(r.record(4, "parent before fork"), r.flush(20), r.stats().spooled)
        """
    )
    result = run_script(script + _FORK)
    assert result.returncode == 0, result.stderr
    before, child, forked, after = (line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert before[1].split() == ["True", "1"], "the stream failed and the event was spooled"
    assert forked == ["0", "[[]]"], "the child exited 0; gRPC ran no thread at the fork"
    assert child[1].split() == ["True", "1"], "the child spooled its event: gRPC worked"
    assert after[1].split() == ["True", "2"]


def test_grpc_threads_are_found_while_grpc_runs(fake_proxy) -> None:
    # This process serves the fake proxy: gRPC core runs, and its threads are named.
    if sys.platform != "linux":
        pytest.skip("gRPC's threads are found in /proc")
    assert grpc_threads.supported()
    running = grpc_threads.wait_gone(0)  # at once: they do not end while gRPC serves
    assert any(name.startswith("grpc_") for name in running), running


def test_usable_from_asyncio_without_blocking_the_loop(fake_proxy, make_recorder) -> None:
    fake_proxy.hold.clear()
    recorder = make_recorder(fake_proxy.address)

    async def main() -> tuple[bool, int]:
        recorder.record(ELECTED, "from a coroutine")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                if ticks == 5:
                    fake_proxy.hold.set()  # the loop ran while aflush waited
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        flushed = await recorder.aflush(10)
        ticker.cancel()
        return flushed, ticks

    flushed, ticks = asyncio.run(main())
    assert flushed and ticks >= 5
    assert len(fake_proxy.events) == 1


def test_logging_handler_records_log_calls(fake_proxy, make_recorder) -> None:
    recorder = make_recorder(fake_proxy.address)
    logger = logging.getLogger("tests.recorder.handler")
    logger.propagate = False
    handler = EventHandler(recorder, "CLUSTER_EVENT_TYPE_LEADER_LOST")
    logger.addHandler(handler)
    try:
        logger.warning("lost leader %s", "node-7")
    finally:
        logger.removeHandler(handler)
    assert recorder.flush(10)
    (event,) = fake_proxy.events.values()
    assert event.message == "lost leader node-7"
    assert event.severity == severity_pb2.SEVERITY_WARNING
    assert event.attributes["logger"] == "tests.recorder.handler"
    assert event.type.endswith("CLUSTER_EVENT_TYPE_LEADER_LOST")


# -- the command line ----------------------------------------------------------------------


def test_cli_record_prints_the_id_once_acknowledged(fake_proxy, run_cli, tmp_path) -> None:
    result = run_cli(
        "record",
        "CLUSTER_EVENT_TYPE_LEADER_LOST",
        "node-7 went away",
        "--component",
        "controller",
        "--node",
        "node-7",
        "--severity",
        "error",
        "--object",
        "Node/node-7",
        "--attr",
        "term=12",
        "--proxy",
        fake_proxy.address,
        "--spool-dir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    event = fake_proxy.events[result.stdout.strip()]
    assert event.severity == severity_pb2.SEVERITY_ERROR
    assert (event.object.kind, event.object.name) == ("Node", "node-7")
    assert dict(event.attributes) == {"term": "12"}


def test_cli_record_spools_when_the_proxy_is_down(run_cli, tmp_path) -> None:
    proxy = down_proxy()
    result = run_cli(
        "record", "CLUSTER_EVENT_TYPE_LEADER_LOST", "m", "--component", "c",
        "--proxy", proxy.address, "--spool-dir", str(tmp_path), "--timeout", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.rglob("*.spool"))


def test_cli_record_refuses_an_unknown_type(run_cli, tmp_path) -> None:
    result = run_cli("record", "NOPE", "m", "--component", "c", "--spool-dir", str(tmp_path))
    assert result.returncode == 2
    assert "unknown event type 'NOPE'" in result.stderr


def test_cli_record_exits_1_naming_the_reason_when_the_proxy_rejects_the_event(
    run_cli, tmp_path, processes
) -> None:
    proxy = ServeProcess(tmp_path / "data")
    processes.append(proxy)
    result = run_cli(
        "record", "CLUSTER_EVENT_TYPE_LEADER_LOST", "x" * 5000, "--component", "c",
        "--proxy", proxy.address, "--spool-dir", str(tmp_path / "spool"),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "the proxy refused the event (FIELD_TOO_LARGE); it is kept in" in result.stderr
    assert "dead-letter" in result.stderr


def test_cli_record_says_when_the_proxy_merged_the_event_into_an_earlier_repeat(
    run_cli, tmp_path, processes
) -> None:
    proxy = ServeProcess(tmp_path / "data")
    processes.append(proxy)
    args = ("record", "CLUSTER_EVENT_TYPE_LEADER_LOST", "node-7 went away", "--component", "c",
            "--proxy", proxy.address, "--spool-dir", str(tmp_path / "spool"))  # fmt: skip
    first, repeat = run_cli(*args), run_cli(*args)
    assert (first.returncode, repeat.returncode) == (0, 0), repeat.stderr
    assert first.stderr == ""
    assert "the proxy merged the event into an earlier identical one as a repeat" in (repeat.stderr)


def test_an_integer_a_double_cannot_hold_exactly_is_refused_at_record(
    fake_proxy: FakeProxy, make_recorder: type[Recorder]
) -> None:
    recorder = make_recorder(fake_proxy.address)
    with pytest.raises(ValueError, match=r"data\['n'\]: 9007199254740993 cannot be stored exactly"):
        recorder.record(ELECTED, "m", data={"n": 2**53 + 1})
    with pytest.raises(ValueError, match=r"data\['a'\]\[1\]\['b'\]: -9007199254740993"):
        recorder.record(ELECTED, "m", data={"a": [1, {"b": -(2**53) - 1}]})
    kept = recorder.record(ELECTED, "m", data={"n": 2**53, "flag": True, "x": 0.5})
    assert recorder.flush(5)
    assert fake_proxy.stored_ids() == [kept]
    assert fake_proxy.events[kept].data["n"] == 2**53
