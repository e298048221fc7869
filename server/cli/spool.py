"""`protoevents spool`: list recorder spools and their dead-letter stores, and replay them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protoevents.proxy.cli.output import print_table
from protoevents.proxy.cli.proxy_flag import add_proxy_argument, proxy_channel

if TYPE_CHECKING:
    from protoevents.recorder.replay import ReplayReport, SlotInfo
    from protoevents.v1 import event_pb2, proxy_service_pb2


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "spool",
        help="list and replay recorder spools and dead-letter stores",
        description="Without an action: list every spool slot under --spool-dir (pending "
        "events, bytes, age of the oldest event, whether a live recorder holds it), its "
        "dead-letter store (batches the proxy refused for good, by reason), and the totals. "
        "`replay SLOT` sends a slot no live recorder holds (one left by a component that is "
        "gone); `replay-dead-letter SLOT` sends its set-aside batches again. SLOT is a slot "
        "folder, or one as listed (NODE/COMPONENT/slot-N, under --spool-dir). Exit 0 when "
        "everything was delivered, 1 when something is left, 2 for bad arguments or an "
        "unreachable proxy.",
    )
    parser.add_argument("--spool-dir", type=Path, help="default: the recorder's default")
    parser.add_argument("--json", action="store_true", help="print JSON")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    for name, help_text in (
        ("replay", "send a spool slot's pending batches"),
        ("replay-dead-letter", "send a slot's set-aside batches again"),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument(
            "slot", type=Path, help="a slot folder, or NODE/COMPONENT/slot-N under --spool-dir"
        )
        action.add_argument("--spool-dir", type=Path, default=argparse.SUPPRESS)
        add_proxy_argument(action)
        action.add_argument("--timeout", type=float, default=10.0, help="seconds (10)")
        action.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
        )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from protoevents.recorder import SpoolInUseError, default_spool_dir
    from protoevents.recorder.deadletter import DEAD_LETTER, dead_letter_dir
    from protoevents.recorder.replay import replay_dead_letter, replay_slot, slot_info
    from protoevents.recorder.setaside import SetAsideInUseError

    if args.action is None:
        return _list(args.spool_dir or default_spool_dir(), args.json)

    import grpc

    from protoevents.v1 import proxy_service_pb2, proxy_service_pb2_grpc

    slot = _slot_path(args.slot, args.spool_dir or default_spool_dir(), DEAD_LETTER)
    if not (slot / "lock").is_file():
        print(f"protoevents spool: {args.slot} is not a spool slot", file=sys.stderr)
        return 2
    if args.action == "replay" and slot_info(slot).held:
        print(f"protoevents spool: {slot} is held by a live recorder, which replays it itself",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        channel = proxy_channel(args)
    except ValueError as exc:
        print(f"protoevents spool: {exc}", file=sys.stderr)
        return 2
    try:
        grpc.channel_ready_future(channel).result(timeout=args.timeout)
    except grpc.FutureTimeoutError:
        print(f"protoevents spool: proxy {args.proxy} unreachable", file=sys.stderr)
        return 2
    stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)

    def send(events: Sequence[event_pb2.Event]) -> proxy_service_pb2.BatchResult:
        request = proxy_service_pb2.RecordBatchRequest(events=events)
        return stub.RecordBatch(request, timeout=args.timeout).result

    try:
        if args.action == "replay":
            report = replay_slot(slot, send)
        else:
            report = replay_dead_letter(dead_letter_dir(slot), send, wait_s=args.timeout)
    except (SpoolInUseError, SetAsideInUseError) as exc:
        print(f"protoevents spool: {exc}", file=sys.stderr)
        return 2
    finally:
        channel.close()
    _print_report(report, args.json)
    return 1 if report.left else 0


def _slot_path(given: Path, base: Path, dead_letter: str) -> Path:
    """The slot folder `given` names: a path (or its `dead_letter` folder), or a slot as
    listed, relative to `base`."""
    slot = given.parent if given.name == dead_letter else given
    if not (slot / "lock").is_file() and not slot.is_absolute() and (base / slot).is_dir():
        return base / slot
    return slot


def _print_report(report: ReplayReport, as_json: bool) -> None:
    fields = {
        "delivered": report.delivered,
        "set_aside": report.set_aside,
        "left": report.left,
        "error": report.error,
        "set_aside_reasons": dict(report.reasons),
    }
    if as_json:
        print(json.dumps(fields))
        return
    print(f"delivered {report.delivered}, set aside {report.set_aside}, left {report.left}")
    for reason, count in report.reasons.items():
        print(f"  set aside {count}: {reason}")
    if report.error:
        print(f"stopped: {report.error}")


def _list(base: Path, as_json: bool) -> int:
    from protoevents.recorder.replay import slot_info, slots

    now = time.time_ns()
    infos = [slot_info(slot) for slot in slots(base)]

    def age_s(info: SlotInfo) -> float | None:
        return None if info.oldest_time_ns is None else max(0, now - info.oldest_time_ns) / 1e9

    if as_json:
        print(
            json.dumps(
                [
                    {
                        "slot": str(i.path),
                        "pending_events": i.pending_events,
                        "pending_bytes": i.pending_bytes,
                        "oldest_age_s": age_s(i),
                        "held": i.held,
                        "dead_letter_batches": i.dead_letter_batches,
                        "dead_letter_events": i.dead_letter_events,
                        "dead_letter_reasons": i.dead_letter_reasons,
                    }
                    for i in infos
                ]
            )
        )
        return 0
    if not infos:
        print(f"no spool slots under {base}")
        return 0
    rows = [
        [
            str(i.path.relative_to(base)),
            f"{i.pending_events:,}",
            human_bytes(i.pending_bytes),
            human_age(age_s(i)),
            "yes" if i.held else "no",
            f"{i.dead_letter_events:,} in {i.dead_letter_batches:,}",
            "; ".join(f"{n}: {r}" for r, n in i.dead_letter_reasons.items()),
        ]
        for i in infos
    ]
    header = ["SLOT", "PENDING", "BYTES", "OLDEST", "HELD", "SET ASIDE", "REASONS"]
    print_table(header, rows)
    slots_n, held = len(infos), sum(i.held for i in infos)
    oldest = max((a for i in infos if (a := age_s(i)) is not None), default=None)
    print(
        f"{slots_n} slot{'' if slots_n == 1 else 's'} under {base}"
        + (f" ({held} held by live recorders)" if held else "")
        + f": {sum(i.pending_events for i in infos):,} events pending"
        + f" ({human_bytes(sum(i.pending_bytes for i in infos))}), oldest {human_age(oldest)};"
        + f" {sum(i.dead_letter_events for i in infos):,} set aside"
    )
    return 0


def human_bytes(size: int) -> str:
    """`812 B`, `61.2 KiB`, `4.0 MiB`, ..."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def human_age(seconds: float | None) -> str:
    """`-` (none), `42 s`, `5 min 12 s`, `3 h 4 min`, `2 d 5 h`."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    for unit, size, smaller, small in (("d", 86400, "h", 3600), ("h", 3600, "min", 60),
                                       ("min", 60, "s", 1)):  # fmt: skip
        if whole >= size:
            return f"{whole // size} {unit} {whole % size // small} {smaller}"
    return f"{whole} s"
