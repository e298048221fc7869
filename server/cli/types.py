"""`protoevents types`: list the known event types as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from server.cli.output import print_table

if TYPE_CHECKING:
    from recorder.registry import Registry


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "types",
        help="list the event types",
        description="List the built-in event types and those of --module, with their declared "
        "severity, category and description.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects")
    parser.add_argument("--category", help="only types of this category")
    parser.add_argument("--service", help="only types owned by this service")
    add_module_arguments(parser)
    parser.set_defaults(run=run)


def add_module_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="MODULE",
        help="also load the event-type enums of this generated module (e.g. acme.v1.events_pb2); "
        "repeatable",
    )
    parser.add_argument(
        "--no-builtin", action="store_true", help="leave out the built-in event types"
    )


def load_registry(args: argparse.Namespace) -> Registry:
    """The registry the arguments ask for; RegistryError on a bad module or declaration."""
    from recorder.registry import Registry

    registry = Registry() if args.no_builtin else Registry.builtin()
    for module in args.module:
        registry.add_module(module)
    return registry


def run(args: argparse.Namespace) -> int:
    from recorder.registry import RegistryError

    try:
        registry = load_registry(args)
    except RegistryError as exc:
        print(f"protoevents types: {exc}", file=sys.stderr)
        return 2
    for option, value, known in (
        ("--category", args.category, registry.categories),
        ("--service", args.service, registry.services),
    ):
        if value is not None and value not in known:
            print(
                f"protoevents types: {option} {value!r} is not one of the known: "
                f"{', '.join(known)}",
                file=sys.stderr,
            )
            return 2
    selected = registry.select(category=args.category, service=args.service)
    if args.json:
        json.dump([t.as_dict() for t in selected], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print_table(
        ["NAME", "SEVERITY", "CATEGORY", "SERVICE", "DESCRIPTION"],
        [[t.name, t.severity_name, t.category, t.service, t.description] for t in selected],
    )
    return 0
