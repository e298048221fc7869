"""`protoevents types`: list the known event types as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from protoevents.proxy.cli.output import stacked_lines, table_lines, terminal_width

if TYPE_CHECKING:
    from protoevents.recorder.registry import EventType, Registry

HEADER = ("NAME", "SEVERITY", "CATEGORY", "SERVICE", "DESCRIPTION")
# Narrower than this, a description column would hold a few words a line: it goes under its
# row instead.
MIN_DESCRIPTION = 40


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "types",
        help="list the event types",
        description="List the built-in event types and those of --module, with their declared "
        "severity, category and description. The table fits the terminal (COLUMNS, or 100 "
        "columns when not a terminal): descriptions wrap, and types are named by their value "
        "name when the qualified names do not fit. --json gives every field in full.",
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
    from protoevents.recorder.registry import Registry

    registry = Registry() if args.no_builtin else Registry.builtin()
    for module in args.module:
        registry.add_module(module)
    return registry


def run(args: argparse.Namespace) -> int:
    from protoevents.recorder.registry import RegistryError

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
    for line in table(selected, registry, terminal_width()):
        print(line)
    return 0


def table(selected: Sequence[EventType], registry: Registry, width: int) -> list[str]:
    """The lines listing `selected`, fit to `width` columns where names allow; a name is
    never cut. One row per type, named by its qualified name when that leaves the description
    MIN_DESCRIPTION columns (it wraps), else by its value name (qualified still where another
    enum has a value of that name); narrower still, each description goes under its row."""

    def rows(names: Sequence[str]) -> list[list[str]]:
        return [
            [name, t.severity_name, t.category, t.service, t.description]
            for name, t in zip(names, selected, strict=True)
        ]

    qualified = rows([t.name for t in selected])
    lines = table_lines(HEADER, qualified, width, MIN_DESCRIPTION)
    if lines is not None:
        return lines
    short = rows([_shortest_name(t, registry) for t in selected])
    lines = table_lines(HEADER, short, width, MIN_DESCRIPTION)
    return lines if lines is not None else stacked_lines(HEADER, short, width)


def _shortest_name(event_type: EventType, registry: Registry) -> str:
    """The value name when it names this type alone (where a type is asked for, it is
    accepted), else the qualified name."""
    try:
        unique = registry.lookup(event_type.short_name) == event_type
    except KeyError:
        unique = False
    return event_type.short_name if unique else event_type.name
