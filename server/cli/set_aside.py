"""`protoevents set-aside`: list the changes each writer refused for good, and write them again."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protoevents.proxy import config
from protoevents.proxy.cli.output import print_table
from protoevents.proxy.cli.types import add_module_arguments, load_registry
from protoevents.proxy.config import Settings, SettingsError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from protoevents.proxy.changes import Writer
    from protoevents.proxy.writers.settings import WriterConfig
    from protoevents.recorder.setaside import SetAside
    from protoevents.v1 import set_aside_pb2

PROG = "protoevents set-aside"


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "set-aside",
        help="list and replay the changes writers refused for good",
        description="Without an action: list, per writer, the changes it refused for good and "
        "the proxy set aside in <data_dir>/set-aside/<writer>/ (how many, bytes, the oldest "
        "and newest set-aside time, the reasons with counts). Read-only; works while serve "
        "runs. `replay --writer NAME` builds that writer from the config and writes each "
        "change again, removing what it takes and keeping what it still refuses; it needs "
        "serve stopped. Exit 0 when nothing is left, 1 when something is, 2 for bad arguments, "
        "an unknown writer, a store in use, or a database that cannot be used.",
    )
    _add_common(parser, None)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    replay = actions.add_parser(
        "replay",
        help="write a writer's set-aside changes again",
        description="Build the writer named --writer from the config (as serve would) and "
        "write each of its set-aside changes again, oldest first: what it takes is removed, "
        "what it still refuses is kept with the new reason, and a failure that may pass (the "
        "destination down) stops the replay, keeping the rest. Takes the data directory's "
        "lock: exits 2 while serve runs.",
    )
    replay.add_argument("--writer", required=True, metavar="NAME", help="the writer's name")
    _add_common(replay, argparse.SUPPRESS)
    add_module_arguments(replay)
    parser.set_defaults(run=run)


def _add_common(parser: argparse.ArgumentParser, default: object) -> None:
    """--config, --data-dir and --json, on the command and on its action (`default` is
    SUPPRESS there, so that a flag given before the action is kept)."""
    parser.add_argument(
        "--config", type=Path, metavar="FILE", default=default, help="the proxy's TOML settings"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        default=default,
        help=f"the proxy's data folder (default: data_dir of --config, "
        f"{config.ENV_PREFIX}DATA_DIR, or {Settings().data_dir})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if default is None else default,
        help="print JSON",
    )


def run(args: argparse.Namespace) -> int:
    from protoevents.proxy.app import SET_ASIDE_DIR

    try:
        settings = config.from_sources(args.config, None, {"data_dir": args.data_dir})
    except SettingsError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if args.action == "replay":
        return _replay(args, settings)
    return _list(settings.data_dir / SET_ASIDE_DIR, args.json)


def _when(batch: set_aside_pb2.SetAsideBatch) -> str:
    return batch.set_aside_time.ToDatetime(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _changes(batch: set_aside_pb2.SetAsideBatch) -> int:
    return len(batch.events) + len(batch.updates)


@dataclass
class _StoreSummary:
    writer: str
    created: int = 0
    updated: int = 0
    bytes: int = 0
    oldest: str = ""
    newest: str = ""
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def changes(self) -> int:
        return self.created + self.updated


def _summary(directory: Path) -> _StoreSummary:
    from protoevents.recorder.setaside import read_batches, stored_bytes

    summary = _StoreSummary(directory.name, bytes=stored_bytes(directory))
    times = []
    for batch in read_batches(directory):
        summary.created += len(batch.events)
        summary.updated += len(batch.updates)
        summary.reasons[batch.reason] += _changes(batch)
        times.append(_when(batch))
    if times:
        summary.oldest, summary.newest = min(times), max(times)
    return summary


def _list(base: Path, as_json: bool) -> int:
    folders = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    stores = [s for s in map(_summary, folders) if s.changes]
    total = sum(s.changes for s in stores)
    if as_json:
        listed = [
            {
                "writer": s.writer,
                "changes": s.changes,
                "created": s.created,
                "updated": s.updated,
                "bytes": s.bytes,
                "oldest": s.oldest,
                "newest": s.newest,
                "reasons": [{"reason": r, "count": n} for r, n in s.reasons.most_common()],
            }
            for s in stores
        ]
        json.dump({"directory": str(base), "changes": total, "writers": listed}, sys.stdout,
                  indent=2)  # fmt: skip
        sys.stdout.write("\n")
        return 0
    if not stores:
        print(f"nothing set aside ({base})")
        return 0
    print_table(
        ["WRITER", "CHANGES", "BYTES", "OLDEST", "NEWEST"],
        [[s.writer, str(s.changes), str(s.bytes), s.oldest, s.newest] for s in stores],
    )
    for s in stores:
        for reason, count in s.reasons.most_common():
            print(f"{s.writer}: {count} x {reason}")
    print(f"{total} change(s) set aside for {len(stores)} writer(s) ({base}); "
          f"write them again with `{PROG} replay --writer NAME`")  # fmt: skip
    return 0


@dataclass
class _ReplayReport:
    """What a replay did, in changes: written again, refused again (kept), and left untried
    after a failure that may pass (kept)."""

    written: int = 0
    refused: int = 0
    left: int = 0
    error: str = ""
    reasons: Counter[str] = field(default_factory=Counter)


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from protoevents.proxy.app import SET_ASIDE_DIR
    from protoevents.proxy.db.migrate import DatabaseRevisionError
    from protoevents.proxy.db.setup import DatabaseUnavailableError
    from protoevents.proxy.ownership import DataDirLock, OwnershipError
    from protoevents.proxy.writers.settings import effective_writers
    from protoevents.recorder.registry import RegistryError
    from protoevents.recorder.setaside import SetAside, SetAsideInUseError, read_batches

    name: str = args.writer
    configs = effective_writers(settings.writers, settings.jsonl_path)
    chosen = next((c for c in configs if c.name == name), None)
    if chosen is None:
        known = ", ".join(c.name for c in configs)
        print(f"{PROG}: no writer named {name!r} in the config (its writers: {known})",
              file=sys.stderr)  # fmt: skip
        return 2
    directory = settings.data_dir / SET_ASIDE_DIR / name
    if not read_batches(directory):
        print(f"nothing set aside for writer {name} ({directory})")
        return 0
    lock = DataDirLock(settings.data_dir)  # no serve may start meanwhile and take the store
    try:
        lock.acquire()
    except OwnershipError as exc:
        print(f"{PROG}: cannot replay writer {name}'s set-aside changes: {exc}; stop it first",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        try:
            store = SetAside(directory)
        except SetAsideInUseError as exc:
            print(f"{PROG}: cannot replay writer {name}'s set-aside changes: {exc}",
                  file=sys.stderr)  # fmt: skip
            return 2
        with store:
            try:
                writer, engine = _build(chosen, settings, args)
            except (DatabaseUnavailableError, DatabaseRevisionError, RegistryError) as exc:
                print(f"{PROG}: {exc}", file=sys.stderr)
                return 2
            try:
                report = _write_again(store, writer)
            finally:
                engine.dispose()
    finally:
        lock.release()
    _print_report(name, report, args.json)
    return 1 if report.refused or report.left else 0


def _build(
    chosen: WriterConfig, settings: Settings, args: argparse.Namespace
) -> tuple[Writer, Engine]:
    """The writer as serve builds it, and the engine it stores through (the database is
    opened, migrated and its types synced only for a writer that uses it)."""
    import sqlalchemy as sa

    from protoevents.proxy.db.setup import open_database
    from protoevents.proxy.writers.base import BuildContext
    from protoevents.proxy.writers.build import build_writer

    if chosen.options.uses_database:
        engine = open_database(settings.db, load_registry(args))
    else:
        engine = sa.create_engine("sqlite://")  # other writers never use it: never connected
    return build_writer(chosen, BuildContext(engine)), engine


def _write_again(store: SetAside, writer: Writer) -> _ReplayReport:
    import asyncio

    from protoevents.proxy.changes import CREATED, UPDATED, Change, PermanentWriteError
    from protoevents.v1 import set_aside_pb2

    report = _ReplayReport()
    with asyncio.Runner() as runner:

        def deliver(batch: set_aside_pb2.SetAsideBatch) -> set_aside_pb2.SetAsideBatch | None:
            count = _changes(batch)
            if report.error:
                report.left += count
                return batch
            changes = [Change(CREATED, e) for e in batch.events]
            changes += [Change(UPDATED, e) for e in batch.updates]
            try:
                runner.run(writer.write(changes))
            except PermanentWriteError as exc:
                report.refused += count
                report.reasons[str(exc)] += count
                again = set_aside_pb2.SetAsideBatch()
                again.CopyFrom(batch)  # its first set-aside time is kept
                again.reason = str(exc)
                return again
            except Exception as exc:  # a failure that may pass: keep the rest for later
                report.error = f"{type(exc).__name__}: {exc}"
                report.left += count
                return batch
            report.written += count
            return None

        try:
            store.sift(deliver)
        finally:
            runner.run(writer.close())
    return report


def _print_report(name: str, report: _ReplayReport, as_json: bool) -> None:
    if as_json:
        fields = {
            "writer": name,
            "written": report.written,
            "refused": report.refused,
            "left": report.left,
            "error": report.error,
            "reasons": dict(report.reasons),
        }
        print(json.dumps(fields))
        return
    print(f"writer {name}: wrote {report.written}, still refused {report.refused}, "
          f"left {report.left}")  # fmt: skip
    for reason, count in report.reasons.most_common():
        print(f"  still refused {count}: {reason}")
    if report.error:
        print(f"stopped: {report.error}")
