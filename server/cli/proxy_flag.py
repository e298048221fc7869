"""The flags of the commands that talk to a proxy: --proxy, --token and TLS to it; the one
channel they dial it with."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

    from protoevents.recorder.tls import ClientTLS

DEFAULT_PROXY = "127.0.0.1:50051"
PROXY_ENV = "PROTOEVENTS_PROXY"
TOKEN_ENV = "PROTOEVENTS_TOKEN"  # read by protoevents.recorder.token.resolve
TLS_ENV = "PROTOEVENTS_TLS"  # as protoevents.recorder.tls.TLS_ENV
# Flag -> (destination, environment variable, help).
TLS_FLAGS = {
    "--ca-file": (
        "ca_file",
        "PROTOEVENTS_CA_FILE",
        "PEM CA certificates the proxy's certificate must chain to; turns TLS on",
    ),
    "--client-cert": (
        "client_cert",
        "PROTOEVENTS_CLIENT_CERT",
        "PEM client certificate, for a proxy that asks for one (mTLS); turns TLS on",
    ),
    "--client-key": ("client_key", "PROTOEVENTS_CLIENT_KEY", "PEM key of --client-cert"),
    "--server-name": (
        "server_name",
        "PROTOEVENTS_SERVER_NAME",
        "the name checked in the proxy's certificate (default: the host of --proxy)",
    ),
}


def add_proxy_argument(parser: argparse.ArgumentParser) -> None:
    """--proxy HOST:PORT (or unix:PATH), by default $PROTOEVENTS_PROXY or 127.0.0.1:50051,
    --token, and the TLS flags, each by default its PROTOEVENTS_* variable."""
    parser.add_argument(
        "--proxy",
        default=os.environ.get(PROXY_ENV) or DEFAULT_PROXY,
        metavar="HOST:PORT",
        help=f"the proxy's address, or unix:PATH (default: ${PROXY_ENV}, else {DEFAULT_PROXY})",
    )
    parser.add_argument(
        "--token",
        default=None,
        metavar="TOKEN",
        help=f"bearer token for a proxy with an access file (default: ${TOKEN_ENV}, else none)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=os.environ.get(TLS_ENV, "").lower() in ("1", "true", "yes", "on"),
        help=f"TLS to the proxy, trusting the system's CAs (implied by the flags below; "
        f"default: ${TLS_ENV} set to 1)",
    )
    for flag, (dest, env, text) in TLS_FLAGS.items():
        parser.add_argument(
            flag,
            dest=dest,
            default=os.environ.get(env) or None,
            metavar="NAME" if dest == "server_name" else "FILE",
            help=f"{text} (default: ${env})",
        )


def client_tls(args: argparse.Namespace) -> ClientTLS | None:
    """TLS as the flags say (an empty one: not given, over its variable); None (plaintext)
    when none is given, nor --tls. ClientTLSError (a ValueError) when a certificate comes
    without its key."""
    from protoevents.recorder.tls import ClientTLS

    given = (args.ca_file, args.client_cert, args.client_key, args.server_name)
    chosen = tuple(value or None for value in given)
    if not any(chosen) and not args.tls:
        return None
    return ClientTLS(*chosen)


def proxy_channel(args: argparse.Namespace) -> grpc.Channel:
    """A blocking channel to --proxy, with TLS when the flags ask for it, sending --token
    (else $PROTOEVENTS_TOKEN). ClientTLSError (a ValueError) names a file that cannot be
    read."""
    from protoevents.proxy.cli.dial import dial

    return dial(args.proxy, args.token, client_tls(args))
