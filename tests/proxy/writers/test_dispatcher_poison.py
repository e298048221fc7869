"""The dispatcher with writers that refuse changes for good, and feeds that fail."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from protoevents.proxy.changes import Change, PermanentWriteError
from protoevents.proxy.dispatcher import Dispatcher
from protoevents.proxy.wal import WriteAheadLog
from protoevents.recorder.setaside import SetAside, SetAsideInUseError, read_batches
from tests.support.ingest_helpers import FAST_RETRY, MemoryWriter, make_events, run, wait_until
from tests.support.wal import append


class RefusingWriter(MemoryWriter):
    """A writer that refuses, for good, every batch holding one of `poison` (by event id)."""

    def __init__(self, name: str, poison: set[str]) -> None:
        super().__init__(name)
        self.poison = poison

    async def write(self, changes: Sequence[Change]) -> None:
        self.attempts += 1
        refused = [c.event.id for c in changes if c.event.id in self.poison]
        if refused:
            raise PermanentWriteError(f"WRONGTYPE for {refused[0]}")
        self.batches.append(list(changes))


def test_a_refused_change_is_set_aside_and_the_writer_moves_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path / "wal")
        events = make_events(40)
        poison = {events[7].id, events[30].id}
        refusing = RefusingWriter("redis", poison)
        steady = MemoryWriter("sql")
        d = Dispatcher(
            wal,
            [refusing, steady],
            backoff=FAST_RETRY,
            batch_interval_s=0.01,
            max_attempts=3,
            set_aside_dir=tmp_path / "set-aside",
        )
        d.start()
        await append(wal, events)
        await wait_until(lambda: wal.bookmark("redis") == wal.end)
        assert refusing.ids == [e.id for e in events if e.id not in poison]  # in log order
        assert steady.ids == [e.id for e in events]
        assert d.feed("redis").set_aside == 2
        assert d.metrics.set_aside.labels("redis")._value.get() == 2
        assert len(read_batches(tmp_path / "set-aside" / "redis")) == 2  # listing is fine...
        with pytest.raises(SetAsideInUseError, match="in use by another process"):
            SetAside(tmp_path / "set-aside" / "redis")  # ...holding it while serving is not
        await d.stop()
        await wal.close()
        batches = read_batches(tmp_path / "set-aside" / "redis")
        assert [(b.stage, [e.id for e in b.events]) for b in batches] == [
            ("writer:redis", [events[7].id]),
            ("writer:redis", [events[30].id]),
        ]
        assert batches[0].reason == f"WRONGTYPE for {events[7].id}"
        assert read_batches(tmp_path / "set-aside" / "sql") == []
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert f"writer redis refuses the new-event change of event {events[7].id}" in "\n".join(
            errors
        )

    run(main())


def test_a_transient_failure_is_retried_for_ever_and_never_set_aside(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path / "wal")
        flaky = MemoryWriter("flaky", fail_times=12)  # far more than max_attempts
        d = Dispatcher(
            wal,
            [flaky],
            backoff=FAST_RETRY,
            batch_interval_s=0.01,
            max_attempts=2,
            set_aside_dir=tmp_path / "set-aside",
        )
        d.start()
        events = make_events(5)
        await append(wal, events)
        await wait_until(lambda: flaky.ids == [e.id for e in events])
        assert d.feed("flaky").set_aside == 0
        await d.stop()
        await wal.close()

    run(main())


def test_a_writer_failing_is_reported_with_the_time_it_started_and_cleared_on_success(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        now = [100.0]
        wal = await WriteAheadLog.open(tmp_path / "wal")
        writer = MemoryWriter("w", fail_times=1_000_000)
        states: list[float | None] = []
        d = Dispatcher(
            wal, [writer], backoff=FAST_RETRY, batch_interval_s=0.01, clock=lambda: now[0]
        )
        d.on_state = lambda: states.append(d.feed("w").failing_since)
        d.start()
        await append(wal, make_events(3))
        await wait_until(lambda: writer.attempts >= 3)
        assert d.feed("w").failing_since == 100.0
        now[0] = 160.0
        writer.fail_times = 0
        await wait_until(lambda: writer.ids != [])
        assert d.feed("w").failing_since is None
        assert states[0] == 100.0 and states[-1] is None
        await d.stop()
        await wal.close()

    run(main())


def test_a_feed_that_fails_outside_the_writer_is_restarted_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path / "wal")
        writer = MemoryWriter("w")
        d = Dispatcher(wal, [writer], backoff=FAST_RETRY, batch_interval_s=0.01)
        read = wal.read_records_async
        failures = [3]

        async def failing_read(position: int, max_bytes: int = 4 << 20) -> object:
            if failures[0] > 0:
                failures[0] -= 1
                raise OSError(5, "Input/output error")
            return await read(position, max_bytes)

        monkeypatch.setattr(wal, "read_records_async", failing_read)
        d.start()
        events = make_events(10)
        await append(wal, events)
        await wait_until(lambda: writer.ids == [e.id for e in events])
        assert d.feed("w").restarts == 3
        assert d.metrics.feed_restarts.labels("w")._value.get() == 3
        await d.stop()
        await wal.close()
        logged = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(logged) == 3
        assert logged[0].getMessage().startswith("writer w: its feed failed; restarting it")

    run(main())


def test_a_feed_restarting_at_stop_gives_up_at_the_deadline(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path / "wal")
        writer = MemoryWriter("w")
        d = Dispatcher(wal, [writer], batch_interval_s=0.01)

        async def broken(position: int, max_bytes: int = 4 << 20) -> object:
            raise OSError(5, "Input/output error")

        wal.read_records_async = broken  # type: ignore[method-assign]
        d.start()
        await append(wal, make_events(1))
        await wait_until(lambda: d.feed("w").restarts >= 1)
        assert not await asyncio.wait_for(d.stop(timeout=0.2), 5)
        await wal.close()

    run(main())
