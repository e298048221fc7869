"""`protoevents demo`: wipe a database and fill it with realistic demo events."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from protoevents.proxy.cli.db import database_url
from protoevents.proxy.cli.types import add_module_arguments, load_registry
from protoevents.proxy.db import DEFAULT_URL

if TYPE_CHECKING:
    from protoevents.recorder.registry import Registry


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="wipe a database and fill it with demo events",
        description="Delete every event stored in the database, then store demo events of the "
        "known types (several nodes, components and objects, repeats merged into counts, a day "
        "of history). For trying the query tools; `serve --demo` does the same, then serves.",
    )
    parser.add_argument("--db", type=database_url, default=DEFAULT_URL, metavar="URL")
    add_demo_arguments(parser)
    add_module_arguments(parser)
    parser.set_defaults(run=run)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--demo-events", type=int, default=2000, metavar="N", help="(2000)")
    parser.add_argument("--demo-seed", type=int, default=0, metavar="S", help="(0)")


def fill(url: str, registry: Registry, count: int, seed: int) -> int:
    """Prepare the database at `url` and fill it; returns the number of rows stored."""
    from protoevents.proxy.db.setup import open_database
    from protoevents.proxy.demo import fill_demo

    engine = open_database(url, registry)
    try:
        return fill_demo(engine, registry, count=count, seed=seed)
    finally:
        engine.dispose()


def run(args: argparse.Namespace) -> int:
    from protoevents.proxy.db.migrate import DatabaseRevisionError
    from protoevents.proxy.db.setup import DatabaseUnavailableError, describe
    from protoevents.recorder.registry import RegistryError

    try:
        registry = load_registry(args)
        stored = fill(args.db, registry, args.demo_events, args.demo_seed)
    except (RegistryError, DatabaseUnavailableError, DatabaseRevisionError) as exc:
        print(f"protoevents demo: {exc}", file=sys.stderr)
        return 2
    print(f"{describe(args.db)}: stored {stored} demo events (repeats merged into counts)")
    return 0
