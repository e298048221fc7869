"""`protoevents query`: list stored events from a proxy, as a table or JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from protoevents.proxy.cli.event_filters import (
    add_filter_arguments,
    build_filter,
    event_json,
    event_table,
    report_rpc_error,
)
from protoevents.proxy.cli.output import print_table
from protoevents.proxy.cli.proxy_flag import proxy_channel

if TYPE_CHECKING:
    from protoevents.v1 import event_pb2

MAX_PAGE = 1000


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "query",
        help="list stored events",
        description="List the stored events matching the filters, newest first, through the "
        "proxy's EventQueryService (exit 2 when the proxy cannot be reached).",
    )
    add_filter_arguments(parser)
    parser.add_argument("--limit", type=int, default=50, metavar="N", help="at most N events (50)")
    parser.add_argument("--oldest-first", action="store_true", help="oldest events first")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call (10)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import grpc

    from protoevents.v1 import query_service_pb2, query_service_pb2_grpc

    try:
        event_filter = build_filter(args)
        if args.limit < 1:
            raise ValueError(f"--limit {args.limit}: must be at least 1")
        channel = proxy_channel(args)
    except ValueError as exc:
        print(f"protoevents query: {exc}", file=sys.stderr)
        return 2
    order = (
        query_service_pb2.SORT_ORDER_OLDEST_FIRST
        if args.oldest_first
        else query_service_pb2.SORT_ORDER_NEWEST_FIRST
    )
    found: list[event_pb2.Event] = []
    with channel:
        stub = query_service_pb2_grpc.EventQueryServiceStub(channel)
        token = ""
        try:
            while len(found) < args.limit:
                response = stub.ListEvents(
                    query_service_pb2.ListEventsRequest(
                        filter=event_filter,
                        page_size=min(MAX_PAGE, args.limit - len(found)),
                        page_token=token,
                        order=order,
                    ),
                    timeout=args.timeout,
                )
                if args.json:  # stream pages as they come
                    for event in response.events:
                        print(json.dumps(event_json(event), separators=(",", ":")))
                found.extend(response.events)
                token = response.next_page_token
                if not token:
                    break
        except grpc.RpcError as exc:
            return report_rpc_error("query", args.proxy, exc)
    if not args.json:
        print_table(*event_table(found))
    return 0
