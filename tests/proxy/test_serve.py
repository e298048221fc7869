"""`protoevents serve` as a process: SIGKILL after ack loses nothing, SIGTERM drains and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from protoevents.proxy.db import migrate
from protoevents.v1 import proxy_service_pb2
from tests.support.ingest_helpers import make_events
from tests.support.paths import ROOT
from tests.support.serve_process import ServeProcess

# Nothing reaches the writer while the proxy runs: what it gets must come from the log.
HOLD_WRITES = ("--writer-batch-interval-ms", "3600000", "--writer-batch-events", "10000000")


def test_sigkill_after_ack_loses_nothing(tmp_path: Path, processes: list[ServeProcess]) -> None:
    first = ServeProcess(tmp_path, "--fsync", "batch", *HOLD_WRITES)
    processes.append(first)
    acked = first.record(batches=20, size=100)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert first.written_ids() == []  # acknowledged, not yet handed to the writer

    second = ServeProcess(tmp_path, "--fsync", "batch")
    processes.append(second)
    replay = second.stub.RecordBatch(
        proxy_service_pb2.RecordBatchRequest(events=make_events(1)), timeout=10
    )
    assert replay.result.accepted_count == 1
    assert second.stop(signal.SIGTERM) == 0
    written = second.written_ids()
    assert len(written) == len(acked) + 1
    assert set(written[: len(acked)]) == set(acked)  # every acknowledged id, exactly once
    assert len(set(written)) == len(written)


def test_a_restarted_proxy_acknowledges_replayed_ids_as_duplicates(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    first = ServeProcess(tmp_path)
    processes.append(first)
    events = make_events(50)
    request = proxy_service_pb2.RecordBatchRequest(events=events)
    assert first.stub.RecordBatch(request, timeout=10).result.accepted_count == 50
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    second = ServeProcess(tmp_path)
    processes.append(second)
    again = second.stub.RecordBatch(request, timeout=10).result
    assert (again.accepted_count, again.duplicate_count) == (0, 50)
    assert second.stop(signal.SIGTERM) == 0
    assert sorted(second.written_ids()) == sorted(e.id for e in events)


def test_sigterm_flushes_every_batch_and_exits_0(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    proxy = ServeProcess(tmp_path, *HOLD_WRITES)
    processes.append(proxy)
    health = health_pb2_grpc.HealthStub(proxy.channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    acked = proxy.record(batches=5, size=200)
    assert proxy.stop(signal.SIGTERM) == 0
    assert proxy.written_ids() == acked
    assert proxy.process.stderr is not None
    assert "proxy stopped" in proxy.process.stderr.read()


def test_a_bad_setting_is_refused_at_start_naming_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "protoevents.proxy.cli", "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PROTOEVENTS_FSYNC": "always"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "protoevents serve: setting fsync = 'always': expected one of batch, interval, off "
        "(from PROTOEVENTS_FSYNC)\n"
    )


def test_a_start_logs_the_migration_in_one_line_and_nothing_of_alembic(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    logs = []
    for _ in range(2):  # a fresh database, then the same one, already migrated
        proxy = ServeProcess(tmp_path, follow_log=True)
        processes.append(proxy)
        assert proxy.stop(signal.SIGTERM) == 0
        logs.append(proxy.log())
    migrated = [line for line in logs[0].splitlines() if "schema migrated" in line]
    assert len(migrated) == 1
    assert migrated[0].endswith(
        f"INFO protoevents.proxy.db.migrate: database sqlite:///{tmp_path}/events.db: "
        f"schema migrated from an empty database to revision {migrate.head_revision()}"
    )
    assert "schema migrated" not in logs[1]
    for log in logs:
        assert "alembic" not in log
        assert "serving on" in log


def test_debug_logging_shows_alembic_too(tmp_path: Path, processes: list[ServeProcess]) -> None:
    proxy = ServeProcess(tmp_path, "--log-level", "debug", follow_log=True)
    processes.append(proxy)
    assert proxy.stop(signal.SIGTERM) == 0
    log = proxy.log()
    assert "INFO alembic.runtime.migration: Running upgrade  -> 0001" in log
    assert "INFO protoevents.proxy.db.migrate: database" in log
