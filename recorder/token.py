"""Bearer tokens: what a client sends the proxy (`authorization` metadata, sent as plain
metadata because grpc refuses call credentials on insecure channels, which local proxies
use), and the sha256 digest the proxy's access file lists instead of the token."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping

TOKEN_ENV = "PROTOEVENTS_TOKEN"
Metadata = tuple[tuple[str, str], ...]


def resolve(token: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """`token`, else $PROTOEVENTS_TOKEN, else None (no token sent)."""
    if token is None:
        token = (os.environ if environ is None else environ).get(TOKEN_ENV)
    return token or None


def metadata(token: str | None) -> Metadata:
    """The call metadata carrying `token` (none without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def digest(token: str) -> str:
    """The sha256 hex digest of `token`, as an access file lists it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A new random token (256 bits, URL-safe text), never starting with '-', which a command
    line would take for an option (`--token -abc` fails)."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token
