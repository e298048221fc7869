"""Who a call comes from: the identity its bearer token or client certificate proves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from protoevents.proxy.access import denials as reasons
from protoevents.proxy.access.policy import AccessPolicy, Identity
from protoevents.recorder.token import digest as token_digest

_LOOPBACK = ("ipv4:127.", "ipv6:[::1]", "ipv6:[::ffff:127.", "unix:", "unix-abstract:")


class CallRefusedError(Exception):
    """A call refused: its status, the denial reason, who asked, and why (the message)."""

    def __init__(self, code: grpc.StatusCode, reason: str, who: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.who = who
        self.message = message


def is_local(peer: str) -> bool:
    """Whether a gRPC peer address is a Unix socket or loopback."""
    return peer.startswith(_LOOPBACK)


def peer_host(peer: str) -> str:
    """A peer without its port (one denial report per host, not per connection)."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rpartition(":")[0]
    return peer or "an unknown peer"


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None, who: str) -> str | None:
    """The token of `authorization: Bearer TOKEN` metadata (None without one)."""
    for key, value in metadata or ():
        if key != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CallRefusedError(
                grpc.StatusCode.UNAUTHENTICATED,
                reasons.UNKNOWN_TOKEN,
                who,
                "authorization metadata must be 'Bearer TOKEN'",
            )
        return token.strip()
    return None


def identify(policy: AccessPolicy, context: grpc.aio.ServicerContext[Any, Any]) -> Identity:
    """The identity the call proves: by its bearer token when it sends one (accepted over
    TLS or a local connection only), else by its client certificate's SANs. Raises CallRefusedError
    (UNAUTHENTICATED) saying why none."""
    try:
        peer = context.peer()
    except NotImplementedError:
        peer = ""
    who = peer_host(peer)
    auth = context.auth_context()
    tls = auth.get("transport_security_type") == [b"ssl"]
    token = bearer_token(context.invocation_metadata(), who)
    if token is not None:
        if not tls and not is_local(peer):
            raise CallRefusedError(
                grpc.StatusCode.UNAUTHENTICATED,
                reasons.TOKEN_OVER_PLAINTEXT,
                who,
                f"a bearer token is accepted only over TLS or a local connection (Unix socket "
                f"or loopback); this call came in plaintext from {who}",
            )
        identity = policy.by_token_digest(token_digest(token))
        if identity is None:
            raise CallRefusedError(
                grpc.StatusCode.UNAUTHENTICATED,
                reasons.UNKNOWN_TOKEN,
                who,
                "the bearer token is not in the access file (never added, or removed)",
            )
        return identity
    names = [n.decode("utf-8", "replace") for n in auth.get("x509_subject_alternative_name", [])]
    if tls and names:
        identity = policy.by_certificate(names)
        if identity is None:
            raise CallRefusedError(
                grpc.StatusCode.UNAUTHENTICATED,
                reasons.UNKNOWN_CERTIFICATE,
                who,
                f"the client certificate ({', '.join(names)}) proves no identity of the "
                "access file",
            )
        return identity
    raise CallRefusedError(
        grpc.StatusCode.UNAUTHENTICATED,
        reasons.NO_CREDENTIALS,
        who,
        "the proxy requires credentials: a client certificate the access file names, or "
        "'authorization: Bearer TOKEN' metadata",
    )
