"""The `protoevents` command line: one subcommand per module of this package."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from server.cli import (
    db,
    demo,
    gen,
    quarantine,
    query,
    record,
    serve,
    set_aside,
    spool,
    tail,
    types,
)

COMMANDS = (gen, types, record, spool, serve, db, demo, query, tail, quarantine, set_aside)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protoevents", description="Proto-typed event recording: recorder, proxy, tools."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit code (2 for usage and connection errors)."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (e.g. `head`) went away: silence the flush at exit, as a pipe tool should.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code


if __name__ == "__main__":
    sys.exit(main())
