"""The `protoevents` command line: one subcommand per module of this package."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Each command and the module that registers and runs it, in the order --help lists them.
# A command line naming one imports that module alone; the others are imported only for the
# list of commands (`protoevents --help`, or a command that does not exist).
COMMANDS = {
    "gen": "protoevents.proxy.cli.gen",
    "types": "protoevents.proxy.cli.types",
    "record": "protoevents.proxy.cli.record",
    "spool": "protoevents.proxy.cli.spool",
    "serve": "protoevents.proxy.cli.serve",
    "db": "protoevents.proxy.cli.db",
    "demo": "protoevents.proxy.cli.demo",
    "query": "protoevents.proxy.cli.query",
    "tail": "protoevents.proxy.cli.tail",
    "quarantine": "protoevents.proxy.cli.quarantine",
    "set-aside": "protoevents.proxy.cli.set_aside",
    "lag": "protoevents.proxy.cli.lag",
    "token": "protoevents.proxy.cli.token",
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or, when `argv` starts with a command, of that one."""
    parser = argparse.ArgumentParser(
        prog="protoevents", description="Proto-typed event recording: recorder, proxy, tools."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = [argv[0]] if argv and argv[0] in COMMANDS else list(COMMANDS)
    for name in named:
        importlib.import_module(COMMANDS[name]).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit code (2 for usage and connection errors)."""
    words = sys.argv[1:] if argv is None else list(argv)
    # grpc's core logs every failed TLS handshake (a client of another CA, a port scan) at
    # INFO on stderr; read once, when grpc is first imported, which no command has done yet.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    args = build_parser(words).parse_args(words)
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
