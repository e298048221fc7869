"""`protoevents lag` on a log folder made by ingest: the table and JSON per bookmark (ages on a
clock the test sets), writers of the config without one, and exit 2 for a bad directory or
config. tests/faults/test_writer_lag.py runs it against a real `serve`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from protoevents.proxy.cli import build_parser
from protoevents.proxy.cli import lag as lag_command
from protoevents.proxy.ingest import Ingest
from protoevents.proxy.validation import Limits, Validator
from protoevents.proxy.wal import WriteAheadLog
from protoevents.recorder.registry import Registry
from protoevents.v1 import proxy_service_pb2
from tests.support.commands import CliRunner
from tests.support.ingest_helpers import make_events


def make_log(data: Path) -> tuple[int, int, float]:
    """A log in `data/wal` with batches of 2, 3 and 4 events; reader `sql` has written the
    first. Returns the end of the first record, the end of the log and the time of the
    second record."""

    async def main() -> tuple[int, int, float]:
        wal = await WriteAheadLog.open(data / "wal")
        wal.register_reader("sql")
        ingest = Ingest(wal, Validator(Registry.builtin(), Limits(max_batch_events=100)))
        ends = []
        for count in (2, 3, 4):
            events = make_events(count)
            await ingest.record(proxy_service_pb2.RecordBatchRequest(events=events))
            ends.append(wal.end)
        await wal.commit_bookmark("sql", ends[0])
        oldest = ingest.backlog.behind(ends[0]).oldest
        assert oldest is not None
        await wal.close()
        return ends[0], wal.end, oldest

    return asyncio.run(main())


def run_lag(*args: str, now: float) -> int:
    parsed = build_parser(["lag"]).parse_args(["lag", *args])
    return lag_command.run(parsed, clock=lambda: now)


def test_the_table_shows_each_bookmark_behind_with_the_age_of_its_oldest_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, end, oldest = make_log(tmp_path)
    assert run_lag("--data-dir", str(tmp_path), now=oldest + 90.0) == 0
    header, row, footer = capsys.readouterr().out.splitlines()
    assert header.split() == ["WRITER", "BYTES", "CHANGES", "OLDEST", "UNWRITTEN", "AGE"]
    cells = row.split()
    assert cells[:3] == ["sql", str(end - first), "7"]
    assert cells[3] == datetime.fromtimestamp(oldest, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert cells[4:] == ["90.0", "s"]
    assert footer.startswith(f"log {tmp_path / 'wal'}: {end} bytes retained")


def test_json_lists_the_config_writers_without_a_bookmark_from_the_log_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, end, oldest = make_log(tmp_path / "data")
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        '[[writers]]\nname = "sql"\nkind = "sql"\n'
        '[[writers]]\nname = "recent"\nkind = "redis"\n'
    )
    assert run_lag("--config", str(config), "--json", now=oldest + 5) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["start"], shown["end"]) == (0, end)
    by_name = {w["writer"]: w for w in shown["writers"]}
    assert by_name["sql"]["bookmark"] == first
    assert (by_name["sql"]["changes_behind"], by_name["sql"]["bytes_behind"]) == (7, end - first)
    assert by_name["sql"]["oldest_unwritten_age_s"] == pytest.approx(5, abs=0.001)
    assert by_name["sql"]["bookmark_saved"]
    recent = by_name["recent"]
    assert (recent["bookmark"], recent["changes_behind"], recent["bytes_behind"]) == (0, 9, end)
    assert not recent["bookmark_saved"]


def test_caught_up_is_zero_with_no_oldest_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, end, _ = make_log(tmp_path)
    (tmp_path / "wal" / "bookmarks" / "sql").write_text(f"{end}\n")
    assert run_lag("--data-dir", str(tmp_path), "--json", now=1e10) == 0
    (sql,) = json.loads(capsys.readouterr().out)["writers"]
    assert (sql["bytes_behind"], sql["changes_behind"], sql["oldest_unwritten_age_s"]) == (0, 0, 0)
    assert sql["oldest_unwritten"] is None


def test_a_directory_without_a_log_or_a_bad_config_exits_2_with_one_line(
    tmp_path: Path, run_cli: CliRunner
) -> None:
    missing = run_cli("lag", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert missing.stderr == (
        f"protoevents lag: no write-ahead log in {tmp_path / 'nowhere'} (no folder wal/; is it "
        "the proxy's data directory?)\n"
    )
    assert missing.stdout == ""
    config = tmp_path / "proxy.toml"
    config.write_text("no_such_setting = 1\n")
    bad = run_cli("lag", "--config", str(config))
    assert bad.returncode == 2
    assert bad.stderr.startswith("protoevents lag: ")
    assert "unknown setting 'no_such_setting'" in bad.stderr
    assert bad.stderr.count("\n") == 1
