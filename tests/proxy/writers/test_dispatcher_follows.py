"""A writer that follows another gets a change only once the other has committed it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from protoevents.proxy import changelog
from protoevents.proxy.dispatcher import Dispatcher
from protoevents.proxy.wal import WriteAheadLog
from tests.support.ingest_helpers import MemoryWriter, make_events, wait_until


def test_a_follower_waits_for_its_leader_and_keeps_the_log_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        wal = await WriteAheadLog.open(tmp_path / "wal")
        leader = MemoryWriter("sql", held=True)
        follower = MemoryWriter("watch")
        dispatcher = Dispatcher(
            wal, [leader, follower], batch_interval_s=0.01, follows={"watch": "sql"}
        )
        dispatcher.start()
        first = make_events(3)
        await wal.append(changelog.encode((e.SerializeToString() for e in first), [], []))
        await wait_until(lambda: leader.attempts == 1)
        await asyncio.sleep(0.05)  # room for a wrong follower to run ahead (not a sync)
        assert follower.changes == []
        leader.gate.set()
        await wait_until(lambda: len(follower.changes) == 3)
        assert leader.ids == [e.id for e in first]
        second = make_events(2)
        await wal.append(changelog.encode((e.SerializeToString() for e in second), [], []))
        await wait_until(lambda: len(follower.changes) == 5)
        assert follower.ids == [e.id for e in first + second] == leader.ids
        assert await dispatcher.stop(timeout=5)
        await wal.close()

    asyncio.run(scenario())


def test_a_follower_of_a_failing_leader_gives_up_at_stop(tmp_path: Path) -> None:
    async def scenario() -> None:
        wal = await WriteAheadLog.open(tmp_path / "wal")
        leader = MemoryWriter("sql", fail_times=1_000_000)
        follower = MemoryWriter("watch")
        dispatcher = Dispatcher(
            wal, [leader, follower], batch_interval_s=0.01, follows={"watch": "sql"}
        )
        dispatcher.start()
        events = make_events(2)
        await wal.append(changelog.encode((e.SerializeToString() for e in events), [], []))
        await wait_until(lambda: leader.attempts >= 1)
        assert not await dispatcher.stop(timeout=0.2)
        assert follower.changes == []
        await wal.close()

    asyncio.run(scenario())


def test_a_live_only_writer_starts_at_the_end_of_the_log(tmp_path: Path) -> None:
    async def scenario() -> None:
        wal = await WriteAheadLog.open(tmp_path / "wal")
        history = make_events(2)
        await wal.append(changelog.encode((e.SerializeToString() for e in history), [], []))
        keeper = MemoryWriter("sql")
        live = MemoryWriter("watch")
        dispatcher = Dispatcher(wal, [keeper, live], batch_interval_s=0.01, live_only=["watch"])
        dispatcher.start()
        new = make_events(1)
        await wal.append(changelog.encode((e.SerializeToString() for e in new), [], []))
        await wait_until(lambda: len(keeper.changes) == 3 and len(live.changes) == 1)
        assert live.ids == [new[0].id]
        assert await dispatcher.stop(timeout=5)
        await wal.close()

    asyncio.run(scenario())
