"""`protoevents tail`: follow stored events live from a proxy (Ctrl-C stops)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from protoevents.proxy.cli.event_filters import (
    add_filter_arguments,
    build_filter,
    event_cells,
    event_json,
    printable,
    report_rpc_error,
)
from protoevents.proxy.cli.proxy_flag import proxy_channel

if TYPE_CHECKING:
    from protoevents.v1 import query_service_pb2


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "tail",
        help="follow events as they are stored",
        description="Print the last -n matching events, then every new matching event and "
        "deduplication count update as the proxy stores it, until Ctrl-C (exit 130). Exit 2 "
        "when the proxy cannot be reached.",
    )
    add_filter_arguments(parser)
    parser.add_argument(
        "-n", "--lines", type=int, default=10, metavar="N", help="recent events first (10)"
    )
    parser.add_argument("--connect-timeout", type=float, default=5.0, help="seconds (5)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import grpc

    from protoevents.v1 import query_service_pb2, query_service_pb2_grpc

    try:
        event_filter = build_filter(args)
        if not 0 <= args.lines <= 1000:
            raise ValueError(f"--lines {args.lines}: must be between 0 and 1000")
        channel = proxy_channel(args)
    except ValueError as exc:
        print(f"protoevents tail: {exc}", file=sys.stderr)
        return 2
    request = query_service_pb2.WatchEventsRequest(
        filter=event_filter, replay_count=args.lines, batched=True
    )
    with channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=args.connect_timeout)
        except grpc.FutureTimeoutError:
            print(
                f"protoevents tail: cannot reach the proxy at {args.proxy} "
                f"(no connection within {args.connect_timeout:g} s)",
                file=sys.stderr,
            )
            return 2
        call = query_service_pb2_grpc.EventQueryServiceStub(channel).WatchEvents(request)
        try:
            for response in call:
                for change in response.changes:
                    _print(change, args.json)
        except grpc.RpcError as exc:
            return report_rpc_error("tail", args.proxy, exc)
        except KeyboardInterrupt:
            call.cancel()
            return 130
    return 0


def _print(change: query_service_pb2.WatchedChange, as_json: bool) -> None:
    kind = _kind(change.kind)
    if as_json:
        print(json.dumps({"kind": kind, "event": event_json(change.event)}, separators=(",", ":")))
    else:
        time, severity, name, count, source, target, message = event_cells(change.event)
        if change.event.site:  # forwarded: the site it came through, before its source
            source = f"site={printable(change.event.site)}  {source}"
        print(f"{time}  {severity:<8}  {kind:<8}  {name}  x{count}  {source}  {target}  {message}")
    sys.stdout.flush()


def _kind(number: query_service_pb2.ChangeKind.ValueType) -> str:
    """CREATED, UPDATED or REPLAYED: the ChangeKind's name without its prefix; the number
    itself for a kind newer than these protos."""
    from protoevents.v1 import query_service_pb2

    try:
        name = query_service_pb2.ChangeKind.Name(number)
    except ValueError:
        return str(number)
    return name.removeprefix("CHANGE_KIND_")
