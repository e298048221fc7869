"""`protoevents record`: record one event from a shell script."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protoevents.proxy.cli.proxy_flag import add_proxy_argument, client_tls
from protoevents.proxy.cli.types import add_module_arguments, load_registry

if TYPE_CHECKING:
    from google.protobuf.descriptor import EnumDescriptor

    from protoevents.recorder.registry import Registry


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "record",
        help="record one event",
        description="Record one event, print its id, and exit 0 once the proxy acknowledged "
        "it or it is safely in the spool (exit 1 otherwise, 2 for bad arguments).",
    )
    parser.add_argument("type", help="event type: qualified name or unambiguous value name")
    parser.add_argument("message")
    parser.add_argument("--component", required=True)
    parser.add_argument("--node", help="default: this host's name")
    parser.add_argument("--severity", help="default: the type's declared severity")
    parser.add_argument("--object", metavar="KIND/NAME", help="or KIND/NAMESPACE/NAME")
    parser.add_argument(
        "--attr", action="append", default=[], metavar="K=V", help="attribute; repeatable"
    )
    parser.add_argument(
        "--alert",
        action="store_true",
        help="force an alert whatever the severity (Event.alert)",
    )
    add_proxy_argument(parser)
    parser.add_argument("--spool-dir", type=Path, help="default: the recorder's default")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (10)")
    add_module_arguments(parser)
    parser.set_defaults(run=run)


def _enums(registry: Registry) -> list[EnumDescriptor]:
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    return [pool.FindEnumTypeByName(name) for name in registry.enum_names]


def run(args: argparse.Namespace) -> int:
    from protoevents.recorder import EventTypeError, Recorder, RegistryError

    try:
        registry = load_registry(args)
        attributes = dict(_pair(a) for a in args.attr)
        recorder = Recorder(
            component=args.component,
            node=args.node,
            event_types=_enums(registry),
            proxy=args.proxy,
            token=args.token,
            spool_dir=args.spool_dir,
            flush_interval=0.0,
            tls=client_tls(args),
        )
    except (RegistryError, ValueError) as exc:
        print(f"protoevents record: {exc}", file=sys.stderr)
        return 2
    try:
        event_id = recorder.record(
            args.type,
            args.message,
            severity=args.severity,
            obj=args.object,
            attributes=attributes or None,
            alert=args.alert,
        )
    except (EventTypeError, ValueError, TypeError) as exc:
        recorder.close(0)
        print(f"protoevents record: {exc}", file=sys.stderr)
        return 2
    safe = recorder.close(args.timeout)
    print(event_id)
    if not safe:
        print("protoevents record: the event was neither acknowledged nor spooled", file=sys.stderr)
        return 1
    stats = recorder.stats()
    if stats.dropped:
        print(
            f"protoevents record: the event was dropped ({', '.join(stats.dropped)})",
            file=sys.stderr,
        )
        return 1
    refused = stats.rejected or stats.set_aside  # a rejection is also set aside
    if refused:
        print(
            f"protoevents record: the proxy refused the event ({', '.join(sorted(refused))}); "
            f"it is kept in {recorder.dead_letter_path} (see `protoevents spool`)",
            file=sys.stderr,
        )
        return 1
    if stats.merged:
        print(
            "protoevents record: the proxy merged the event into an earlier identical one as "
            "a repeat (stored as that event's count, not under this id)",
            file=sys.stderr,
        )
    return 0


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--attr {text!r} must be KEY=VALUE")
    return key, value
