"""Two `serve` processes on one data directory or one address: the second exits 2 with one
line naming the first, which keeps every acknowledged event; a SIGKILLed owner's lock is gone."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from protoevents.proxy.app import run_proxy
from protoevents.proxy.ownership import AddressInUseError
from protoevents.v1 import proxy_service_pb2
from tests.support.ingest_helpers import make_events, proxy_settings
from tests.support.paths import ROOT
from tests.support.serve_process import ServeProcess
from tests.support.stored import assert_each_stored_once


def serve_once(*flags: str) -> subprocess.CompletedProcess[str]:
    """`protoevents serve FLAGS` expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "protoevents.proxy.cli", "serve", *flags],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def record_batch(proxy: ServeProcess, count: int) -> list[str]:
    events = make_events(count)
    request = proxy_service_pb2.RecordBatchRequest(events=events)
    assert proxy.stub.RecordBatch(request, timeout=10).result.accepted_count == count
    return [event.id for event in events]


def test_a_second_serve_on_the_same_data_dir_exits_2_naming_the_first(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    db = f"sqlite:///{tmp_path}/events.db"
    first = ServeProcess(tmp_path, "--db", db)
    processes.append(first)
    acked = first.record(batches=10, size=100)
    segments = sorted((tmp_path / "wal").glob("*.wal"))

    second = serve_once(
        "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path), "--db", f"sqlite:///{tmp_path}/b.db"
    )
    assert second.returncode == 2
    line = (
        rf"protoevents serve: data directory {re.escape(str(tmp_path))} is in use by process "
        rf"{first.process.pid} \(protoevents serve --listen 127\.0\.0\.1:0 --data-dir .*, "
        rf"listening on {re.escape(first.address)}\)\n"
    )
    assert re.fullmatch(line, second.stderr), second.stderr
    assert second.stdout == ""
    assert not (tmp_path / "b.db").exists()  # it stopped before opening anything
    assert sorted((tmp_path / "wal").glob("*.wal")) == segments

    acked += record_batch(first, 50)  # the first one never noticed
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    # The kernel released the killed owner's lock: a restart on the directory works.
    third = ServeProcess(tmp_path, "--db", db)
    processes.append(third)
    acked += record_batch(third, 10)
    assert third.stop(signal.SIGTERM) == 0
    assert_each_stored_once(db, acked)


def test_a_second_serve_on_the_same_address_exits_2_naming_the_first(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    db = f"sqlite:///{tmp_path}/events.db"
    first = ServeProcess(tmp_path / "a", "--db", db)
    processes.append(first)
    acked = record_batch(first, 100)

    other = tmp_path / "b"
    second = serve_once(
        "--listen", first.address, "--data-dir", str(other), "--db", f"sqlite:///{other}.db"
    )
    assert second.returncode == 2
    line = (
        rf"protoevents serve: address {re.escape(first.address)} is in use by process "
        rf"{first.process.pid} \(.*-m protoevents\.proxy\.cli serve --listen 127\.0\.0\.1:0 .*\)\n"
    )
    assert re.fullmatch(line, second.stderr), second.stderr
    assert not Path(f"{other}.db").exists()
    assert not (other / "wal").exists()

    # Every batch goes to the first proxy: it alone listens there.
    for _ in range(20):
        acked += record_batch(first, 5)
    assert first.stop(signal.SIGTERM) == 0
    assert_each_stored_once(db, acked)


def test_a_port_taken_between_the_check_and_the_bind_is_refused_naming_its_holder(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with run_proxy(proxy_settings(tmp_path / "a")) as first:
            taken = proxy_settings(tmp_path / "b", listen=first.address)
            with pytest.raises(AddressInUseError) as refused:
                async with run_proxy(taken):
                    pass
            assert str(refused.value).startswith(
                f"address {first.address} is in use by process {os.getpid()} ("
            )

    asyncio.run(main())
