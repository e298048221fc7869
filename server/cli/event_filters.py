"""Filter flags shared by `query` and `tail`, event formatting, and errors of proxy calls."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from protoevents.proxy.cli.proxy_flag import add_proxy_argument

if TYPE_CHECKING:
    from collections.abc import Sequence

    import grpc
    from google.protobuf.timestamp_pb2 import Timestamp

    from protoevents.v1 import event_pb2, query_service_pb2

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--type",
        dest="types",
        action="append",
        default=[],
        metavar="TYPE",
        help="event type, qualified or value name; repeatable (any of them)",
    )
    parser.add_argument("--min-severity", metavar="SEVERITY", help="e.g. warning")
    parser.add_argument(
        "--category", dest="categories", action="append", default=[], help="repeatable"
    )
    parser.add_argument("--node", default="", help="source node")
    parser.add_argument("--component", default="", help="source component")
    parser.add_argument(
        "--object", metavar="KIND[/[NAMESPACE/]NAME]", help="object kind, and name, and namespace"
    )
    parser.add_argument(
        "--since",
        metavar="TIME",
        help="events at or after: ISO 8601 (UTC unless given) or 15m, 2h, 1d ago",
    )
    parser.add_argument("--until", metavar="TIME", help="events before: as --since")
    parser.add_argument("--contains", default="", metavar="TEXT", help="message substring")
    parser.add_argument(
        "--site", default="", help="the site events were forwarded from (local ones have none)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    add_proxy_argument(parser)


def build_filter(args: argparse.Namespace) -> query_service_pb2.EventFilter:
    """The EventFilter of the flags; ValueError naming the flag when one is malformed."""
    from protoevents.recorder.registry import parse_severity
    from protoevents.v1 import query_service_pb2

    message = query_service_pb2.EventFilter(
        types=args.types,
        categories=args.categories,
        node=args.node,
        component=args.component,
        message_contains=args.contains,
        site=args.site,
    )
    if args.min_severity:
        try:
            message.min_severity = parse_severity(args.min_severity)  # type: ignore[assignment]
        except ValueError as exc:
            raise ValueError(f"--min-severity: {exc}") from None
    if args.object:
        parts = args.object.split("/")
        if len(parts) > 3 or not all(parts):
            raise ValueError(f"--object {args.object!r}: expected KIND, KIND/NAME or KIND/NS/NAME")
        message.object_kind = parts[0]
        if len(parts) == 2:
            message.object_name = parts[1]
        elif len(parts) == 3:
            message.object_namespace, message.object_name = parts[1], parts[2]
    if args.since:
        message.start_time.CopyFrom(parse_time(args.since, "--since"))
    if args.until:
        message.end_time.CopyFrom(parse_time(args.until, "--until"))
    return message


def parse_time(text: str, flag: str, now: datetime | None = None) -> Timestamp:
    """A Timestamp from ISO 8601 (naive is UTC) or a duration ago such as 15m."""
    from google.protobuf.timestamp_pb2 import Timestamp

    ago = _AGO.match(text.strip())
    if ago:
        delta = timedelta(**{_UNITS[ago.group(2)]: float(ago.group(1))})
        when = (now or datetime.now(UTC)) - delta
    else:
        try:
            when = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(
                f"{flag} {text!r}: expected ISO 8601 (2024-05-01T12:00:00Z) or a duration "
                "such as 30s, 15m, 2h, 1d"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    stamp = Timestamp()
    stamp.FromDatetime(when.astimezone(UTC))
    return stamp


def event_json(event: event_pb2.Event) -> dict[str, object]:
    """The event as grpcurl shows it, but with integral numbers of `data` as integers (a
    Struct holds every number as a double: 3 would print as 3.0)."""
    from google.protobuf import json_format

    shown = json_format.MessageToDict(event)
    if "data" in shown:
        shown["data"] = integral(shown["data"])
    return shown


def integral(value: object) -> object:
    """`value` with every float that is a whole number (and exact) made an int."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral(item) for item in value]
    return value


def event_cells(event: event_pb2.Event) -> list[str]:
    """TIME, SEVERITY, TYPE, COUNT, SOURCE, OBJECT, MESSAGE of an event."""
    from protoevents.recorder.registry import severity_name

    obj = event.object
    target = "/".join(p for p in (obj.kind, obj.namespace, obj.name) if p)
    return [
        event.time.ToDatetime(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        severity_name(event.severity),
        printable(event.type.rsplit(".", 1)[-1]),
        str(event.count),
        printable(f"{event.source.node}/{event.source.component}"),
        printable(target) or "-",
        printable(event.message.replace("\n", " ")),
    ]


def event_table(found: Sequence[event_pb2.Event]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a table of events: EVENT_HEADER and `event_cells`, with a SITE
    column before SOURCE when any of them came through a site."""
    rows = [event_cells(event) for event in found]
    if not any(event.site for event in found):
        return EVENT_HEADER, rows
    at = EVENT_HEADER.index("SOURCE")
    header = [*EVENT_HEADER[:at], "SITE", *EVENT_HEADER[at:]]
    cells = (printable(event.site) or "-" for event in found)
    return header, [[*row[:at], site, *row[at:]] for row, site in zip(rows, cells, strict=True)]


# Characters that would act on a terminal rather than show: C0 and C1 controls (ESC, CR,
# BEL, ...), DEL, and the bidirectional formatting marks that reorder what follows.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` safe for a terminal: each unsafe character shown as its escape (`\\x1b`,
    `\\u202e`). JSON output is left exact."""
    return _UNSAFE.sub(lambda found: found[0].encode("unicode_escape").decode(), text)


EVENT_HEADER = ["TIME", "SEVERITY", "TYPE", "COUNT", "SOURCE", "OBJECT", "MESSAGE"]


def report_rpc_error(command: str, proxy: str, error: grpc.RpcError) -> int:
    """Print one line for a failed call to the proxy; returns the exit code (2 when the
    proxy cannot be reached or the request was refused as invalid, else 1)."""
    import grpc

    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        print(
            f"protoevents {command}: cannot reach the proxy at {proxy}: {details}", file=sys.stderr
        )
        return 2
    print(f"protoevents {command}: {code.name}: {details}", file=sys.stderr)
    return 2 if code == grpc.StatusCode.INVALID_ARGUMENT else 1
