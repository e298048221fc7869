"""`protoevents lag`: how far behind the end of the write-ahead log each writer is."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protoevents.proxy import config
from protoevents.proxy.cli.output import print_table
from protoevents.proxy.config import Settings, SettingsError

if TYPE_CHECKING:
    from protoevents.proxy.backlog import LogLag

PROG = "protoevents lag"
LOG_DIR = "wal"  # the log's folder in the data directory, as `serve` opens it


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "lag",
        help="show how far behind each writer is",
        description="For each reader of the proxy's write-ahead log (a writer, with its "
        "bookmark in <data_dir>/wal/bookmarks/): the bytes and changes (new events and "
        "updates) between its bookmark and the end of the log, and the age of the oldest "
        "change it has still to write. With --config, the writers of the config file that "
        "saved no bookmark yet are listed too (they start at the oldest retained record). "
        "Read-only; works while serve runs and when it is stopped. Exit 0, or 2 for a bad "
        "config or a data directory without a log.",
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="the proxy's TOML settings (its writers)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"the proxy's data folder (default: data_dir of --config, "
        f"{config.ENV_PREFIX}DATA_DIR, or {Settings().data_dir})",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, clock: Callable[[], float] = time.time) -> int:
    from protoevents.proxy.backlog import read_log_lag
    from protoevents.proxy.writers.settings import effective_writers

    try:
        settings = config.from_sources(args.config, None, {"data_dir": args.data_dir})
        configured = effective_writers(settings.writers, settings.jsonl_path)
    except (SettingsError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    directory = settings.data_dir / LOG_DIR
    if not directory.is_dir():
        print(
            f"{PROG}: no write-ahead log in {settings.data_dir} (no folder {LOG_DIR}/; is it "
            "the proxy's data directory?)",
            file=sys.stderr,
        )
        return 2
    names = [c.name for c in configured] if args.config is not None else []
    try:
        lag = read_log_lag(directory, names)
    except OSError as exc:
        print(f"{PROG}: cannot read the write-ahead log in {directory}: {exc}", file=sys.stderr)
        return 2
    now = clock()
    if args.json:
        json.dump(_as_json(lag, directory, now), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not lag.readers:
        print(f"no writer has read the log yet ({directory}, {lag.end - lag.start} bytes)")
        return 0
    print_table(
        ["WRITER", "BYTES", "CHANGES", "OLDEST UNWRITTEN", "AGE"],
        [
            [r.name, str(r.bytes), str(r.changes), _when(r.oldest), _age(r.oldest, now)]
            for r in lag.readers
        ],
    )
    print(f"log {directory}: {lag.end - lag.start} bytes retained, positions {lag.start}-{lag.end}")
    return 0


def _as_json(lag: LogLag, directory: Path, now: float) -> dict[str, object]:
    return {
        "directory": str(directory),
        "start": lag.start,
        "end": lag.end,
        "writers": [
            {
                "writer": r.name,
                "bookmark": r.bookmark,
                "bookmark_saved": r.saved,
                "bytes_behind": r.bytes,
                "changes_behind": r.changes,
                "oldest_unwritten": _when(r.oldest) or None,
                "oldest_unwritten_age_s": _seconds(r.oldest, now),
            }
            for r in lag.readers
        ],
    }


def _seconds(oldest: float | None, now: float) -> float:
    return 0.0 if oldest is None else round(max(0.0, now - oldest), 3)


def _when(oldest: float | None) -> str:
    if oldest is None:
        return ""
    return datetime.fromtimestamp(oldest, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _age(oldest: float | None, now: float) -> str:
    return "" if oldest is None else f"{_seconds(oldest, now):.1f} s"
