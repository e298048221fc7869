"""`protoevents quarantine`: list the events a proxy holds because it does not know their type."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protoevents.proxy.cli.event_filters import event_json
from protoevents.proxy.cli.output import print_table
from protoevents.proxy.config import ENV_PREFIX, Settings

if TYPE_CHECKING:
    from protoevents.v1 import event_pb2

SHOWN_IDS = 3


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "quarantine",
        help="list events of types the proxy does not know",
        description="List the events a proxy keeps in quarantine because their type is not in "
        "its registry (components built from newer protos): how many of each type, when the "
        "first and last were quarantined, a few ids. They are stored when `serve` next starts "
        "with the type known (--module). Read-only; works while serve runs.",
    )
    default = os.environ.get(f"{ENV_PREFIX}DATA_DIR", str(Settings().data_dir))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(default),
        help=f"the proxy's data folder (default: {ENV_PREFIX}DATA_DIR or {default})",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON object with every event in full"
    )
    parser.set_defaults(run=run)


@dataclass
class _TypeSummary:
    count: int = 0
    oldest: str = ""
    newest: str = ""
    ids: list[str] = field(default_factory=list)


def run(args: argparse.Namespace) -> int:
    from protoevents.proxy.quarantine import held_events, read_quarantine

    directory: Path = args.data_dir / "quarantine"
    summary: dict[str, _TypeSummary] = {}
    listed: list[dict[str, object]] = []
    held: list[tuple[str, str, event_pb2.Event]] = []
    for batch, event in held_events(read_quarantine(directory)):
        when = batch.set_aside_time.ToDatetime(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        held.append((when, batch.reason, event))
    for when, reason, event in sorted(held, key=lambda h: h[0]):
        entry = summary.setdefault(event.type, _TypeSummary(oldest=when))
        entry.count += 1
        entry.newest = when
        entry.ids.append(event.id)
        listed.append({"quarantined_at": when, "reason": reason, "event": event_json(event)})
    ordered = sorted(summary.items(), key=lambda item: (-item[1].count, item[0]))
    if args.json:
        json.dump(
            {
                "directory": str(directory),
                "count": len(listed),
                "types": [
                    {"type": name, "count": s.count, "oldest": s.oldest, "newest": s.newest}
                    for name, s in ordered
                ],
                "events": listed,
            },
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
        return 0
    if not listed:
        print(f"no events in quarantine ({directory})")
        return 0
    print_table(
        ["TYPE", "EVENTS", "OLDEST", "NEWEST", "IDS"],
        [[name, str(s.count), s.oldest, s.newest, _some(s.ids)] for name, s in ordered],
    )
    print(f"{len(listed)} event(s) of {len(summary)} type(s) in quarantine ({directory})")
    return 0


def _some(ids: list[str]) -> str:
    shown = ", ".join(ids[:SHOWN_IDS])
    return shown + (f", ... ({len(ids) - SHOWN_IDS} more)" if len(ids) > SHOWN_IDS else "")
