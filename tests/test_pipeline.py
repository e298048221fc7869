"""The whole pipeline: recorders -> `protoevents serve` (a process) -> SQLite / PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import sqlalchemy as sa

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.proxy.db import migrate
from protoevents.recorder import Recorder
from tests.support.commands import run_python
from tests.support.serve_process import ServeProcess, serve
from tests.support.stored import stored_counts

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED


def make_recorder(address: str, spool: Path, component: str) -> Recorder:
    return Recorder(
        component=component,
        node="node-1",
        event_types=[ClusterEventType],
        proxy=address,
        spool_dir=spool,
        batch_size=200,
        flush_interval=0.02,
        backoff_max=0.2,
    )


def test_recorders_to_database_store_each_event_once(
    database_url: str, tmp_path: Path, processes: list[ServeProcess]
) -> None:
    proxy = serve(processes, tmp_path / "data", database_url)
    recorded: list[str] = []
    for component in ("scheduler", "controller"):
        with make_recorder(proxy.address, tmp_path / "spool", component) as recorder:
            recorded += [recorder.record(ELECTED, f"{component} {i}") for i in range(3000)]
            assert recorder.drain(60)
    assert proxy.stop(signal.SIGTERM) == 0
    assert stored_counts(database_url) == dict.fromkeys(recorded, 1)


def test_repeats_collapse_into_one_row_with_their_count(
    database_url: str, tmp_path: Path, processes: list[ServeProcess]
) -> None:
    proxy = serve(processes, tmp_path / "data", database_url)
    with make_recorder(proxy.address, tmp_path / "spool", "controller") as recorder:
        first = recorder.record(ELECTED, "node-7 leads", obj="Node/node-7")
        for _ in range(999):
            recorder.record(ELECTED, "node-7 leads", obj="Node/node-7")
        other = recorder.record(ELECTED, "node-8 leads", obj="Node/node-8")
        assert recorder.drain(30)
        stats = recorder.stats()
    assert (stats.acknowledged, stats.merged) == (1001, 999)  # the acks said which merged
    assert proxy.stop(signal.SIGTERM) == 0
    assert stored_counts(database_url) == {first: 1000, other: 1}


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return run_python("-m", "protoevents.proxy.cli", "serve", "--listen", "127.0.0.1:0", *args)


def test_serve_refuses_a_database_at_an_unknown_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    migrate.upgrade(url)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = 'f00d'"))
    engine.dispose()

    result = run_serve("--db", url, "--data-dir", str(tmp_path / "data"))

    assert result.returncode == 2
    assert "revision f00d" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_names_an_unreachable_database(tmp_path: Path) -> None:
    url = "postgresql+psycopg://postgres:secret@127.0.0.1:9/nowhere"
    result = run_serve("--db", url, "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    assert "cannot use database postgresql+psycopg://postgres:***@127.0.0.1:9/nowhere" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_serve_demo_fills_the_database_first(tmp_path: Path, processes: list[ServeProcess]) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    proxy = serve(processes, tmp_path / "data", url, "--demo", "--demo-events", "300")
    assert proxy.stop(signal.SIGTERM) == 0
    counts = stored_counts(url)
    assert 0 < len(counts) < 300
    assert sum(counts.values()) == 300
