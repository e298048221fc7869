"""`protoevents token`: a new random bearer token, and the line of its digest for the access
file (which holds digests, never tokens)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "token",
        help="make a bearer token for the access file",
        description="Print a new random bearer token on the first line (give it to the client: "
        "--token or $PROTOEVENTS_TOKEN), and on the second its sha256 digest as a `tokens` "
        "line to paste into an [[identities]] table of the proxy's access file.",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from protoevents.recorder.token import digest, new_token

    token = new_token()
    print(token)
    print(f'tokens = ["{digest(token)}"]')
    return 0
