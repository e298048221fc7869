"""`protoevents spool`: list recorder spools and their dead-letter stores, and replay them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.cli.output import print_table
from server.cli.proxy_flag import add_proxy_argument

if TYPE_CHECKING:
    from protoevents.v1 import event_pb2, proxy_service_pb2
    from recorder.replay import ReplayReport


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "spool",
        help="list and replay recorder spools and dead-letter stores",
        description="Without an action: list every spool slot under --spool-dir (pending "
        "events, bytes, age of the oldest event, whether a live recorder holds it) and its "
        "dead-letter store (batches the proxy refused for good, by reason). `replay SLOT` "
        "sends a slot no live recorder holds; `replay-dead-letter SLOT` sends its set-aside "
        "batches again. Exit 0 when everything was delivered, 1 when something is left, 2 for "
        "bad arguments or an unreachable proxy.",
    )
    parser.add_argument("--spool-dir", type=Path, help="default: the recorder's default")
    parser.add_argument("--json", action="store_true", help="print JSON")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    for name, help_text in (
        ("replay", "send a spool slot's pending batches"),
        ("replay-dead-letter", "send a slot's set-aside batches again"),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument("slot", type=Path, help="a slot folder: NODE/COMPONENT/slot-N")
        add_proxy_argument(action)
        action.add_argument("--timeout", type=float, default=10.0, help="seconds (10)")
        action.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
        )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recorder import SpoolInUseError, default_spool_dir
    from recorder.deadletter import DEAD_LETTER, dead_letter_dir
    from recorder.replay import replay_dead_letter, replay_slot, slot_info
    from recorder.setaside import SetAsideInUseError

    if args.action is None:
        return _list(args.spool_dir or default_spool_dir(), args.json)

    import grpc

    from protoevents.v1 import proxy_service_pb2, proxy_service_pb2_grpc

    slot: Path = args.slot
    if slot.name == DEAD_LETTER:
        slot = slot.parent
    if not (slot / "lock").is_file():
        print(f"protoevents spool: {args.slot} is not a spool slot", file=sys.stderr)
        return 2
    if args.action == "replay" and slot_info(slot).held:
        print(f"protoevents spool: {slot} is held by a live recorder, which replays it itself",
              file=sys.stderr)  # fmt: skip
        return 2
    channel = grpc.insecure_channel(args.proxy)
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
    from recorder.replay import slot_info, slots

    now = time.time_ns()
    infos = [slot_info(slot) for slot in slots(base)]
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "slot": str(i.path),
                        "pending_events": i.pending_events,
                        "pending_bytes": i.pending_bytes,
                        "oldest_age_s": None
                        if i.oldest_time_ns is None
                        else (now - i.oldest_time_ns) / 1e9,
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
    rows = [
        [
            str(i.path.relative_to(base)),
            str(i.pending_events),
            str(i.pending_bytes),
            "-" if i.oldest_time_ns is None else f"{(now - i.oldest_time_ns) / 1e9:.0f} s",
            "yes" if i.held else "no",
            f"{i.dead_letter_events} in {i.dead_letter_batches}",
            "; ".join(f"{n}: {r}" for r, n in i.dead_letter_reasons.items()),
        ]
        for i in infos
    ]
    header = ["SLOT", "PENDING", "BYTES", "OLDEST", "HELD", "SET ASIDE", "REASONS"]
    print_table(header, rows)
    return 0
