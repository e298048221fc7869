"""The blocking channel the commands dial the proxy with (over TLS when asked), sending the
bearer token (--token, else $PROTOEVENTS_TOKEN) with every call when there is one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import grpc

from protoevents.recorder.tls import ClientTLS, secure_channel
from protoevents.recorder.token import metadata, resolve


class _Details(
    NamedTuple(
        "_Details",
        [
            ("method", str),
            ("timeout", float | None),
            ("metadata", Any),
            ("credentials", Any),
            ("wait_for_ready", bool | None),
            ("compression", Any),
        ],
    ),
    grpc.ClientCallDetails,
):
    """Call details with the token's metadata added (grpc's documented form)."""


class TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer TOKEN` to every call: plain metadata, because grpc
    refuses call credentials on the insecure channels local proxies are dialled with."""

    def __init__(self, token: str) -> None:
        self._metadata = metadata(token)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        given: Any = details
        return _Details(
            given.method,
            given.timeout,
            (*(given.metadata or ()), *self._metadata),
            given.credentials,
            getattr(given, "wait_for_ready", None),
            getattr(given, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_stream(
        self,
        continuation: Callable[..., Any],
        details: grpc.ClientCallDetails,
        requests: Iterator[Any],
    ) -> Any:
        return continuation(self._details(details), requests)


def dial(proxy: str, token: str | None, tls: ClientTLS | None = None) -> grpc.Channel:
    """A channel to `proxy` (with TLS when given `tls`), sending `token` (else
    $PROTOEVENTS_TOKEN) with every call."""
    channel = secure_channel(proxy, tls)
    chosen = resolve(token)
    return grpc.intercept_channel(channel, TokenInterceptor(chosen)) if chosen else channel
