"""The --proxy flag of the commands that talk to a proxy."""

from __future__ import annotations

import argparse
import os

DEFAULT_PROXY = "127.0.0.1:50051"
PROXY_ENV = "PROTOEVENTS_PROXY"
TOKEN_ENV = "PROTOEVENTS_TOKEN"  # read by protoevents.recorder.token.resolve


def add_proxy_argument(parser: argparse.ArgumentParser) -> None:
    """--proxy HOST:PORT, by default $PROTOEVENTS_PROXY or 127.0.0.1:50051, and --token."""
    parser.add_argument(
        "--proxy",
        default=os.environ.get(PROXY_ENV) or DEFAULT_PROXY,
        metavar="HOST:PORT",
        help=f"the proxy's address (default: ${PROXY_ENV}, else {DEFAULT_PROXY})",
    )
    parser.add_argument(
        "--token",
        default=None,
        metavar="TOKEN",
        help=f"bearer token for a proxy with an access file (default: ${TOKEN_ENV}, else none)",
    )
