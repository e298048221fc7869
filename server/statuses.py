"""The gRPC status of every error the services answer with: the query and watch services'
own errors, ingest's (a malformed batch, a full or failing log), and anything unexpected
(INTERNAL, logged). Both services answer through `status_of`, or `grpc_errors` around a
method."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc

from protoevents.proxy.forwarded import SiteForbiddenError
from protoevents.proxy.quarantine import QuarantineUnavailable
from protoevents.proxy.validation import MalformedBatchError
from protoevents.proxy.wal import LogFull, LogUnavailable

log = logging.getLogger(__name__)

# Errors of the lower layers, which know nothing of gRPC, by the status they are answered with.
_DOMAIN_STATUSES: tuple[
    tuple[type[Exception] | tuple[type[Exception], ...], grpc.StatusCode], ...
] = (
    (MalformedBatchError, grpc.StatusCode.INVALID_ARGUMENT),  # InvalidChangeError included
    (SiteForbiddenError, grpc.StatusCode.PERMISSION_DENIED),
    (LogFull, grpc.StatusCode.RESOURCE_EXHAUSTED),  # QuarantineFull included
    ((LogUnavailable, QuarantineUnavailable), grpc.StatusCode.UNAVAILABLE),
)


class QueryError(Exception):
    """A request the service cannot answer; `code` is the gRPC status it is answered with."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgumentError(QueryError):
    """A bad request field; the message starts with the field's name."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFoundError(QueryError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(QueryError):
    """The proxy is not in a state to answer the request (a relay, which stores no events)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class UnavailableError(QueryError):
    """A backing service (the database, Redis) cannot be reached; retrying later may work."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(QueryError):
    """A query ran past its time limit (query_timeout_s or the caller's deadline)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class TooManyQueriesError(QueryError):
    """More queries of a kind are waiting than the proxy lets wait; retrying later may work."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class WatcherTooSlowError(QueryError):
    """A watcher did not keep up with the changes and was dropped."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message an exception is answered with: a QueryError's own, a
    lower layer's by `_DOMAIN_STATUSES`, else INTERNAL with a generic message (the exception
    is logged)."""
    if isinstance(exc, QueryError):
        return exc.code, str(exc)
    for kinds, code in _DOMAIN_STATUSES:
        if isinstance(exc, kinds):
            return code, str(exc)
    log.error("a call failed unexpectedly", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error of the proxy; see its log"


def _is_abort(exc: Exception) -> bool:
    # context.abort raises: grpc.aio's AbortError, or a plain Exception in sync handlers
    # and in grpcio-testing once the status is set; those must pass through untouched.
    return isinstance(exc, grpc.aio.AbortError) or type(exc) is Exception


F = TypeVar("F", bound=Callable[..., Any])


def grpc_errors(method: F) -> F:
    """Decorate a servicer method (sync, async or async generator) so that exceptions become
    `context.abort(*status_of(exc))`."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for response in method(self, request, context):
                    yield response
            except Exception as exc:
                if _is_abort(exc):
                    raise
                await context.abort(*status_of(exc))

        return cast(F, stream)
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def unary(self: Any, request: Any, context: Any) -> Any:
            try:
                return await method(self, request, context)
            except Exception as exc:
                if _is_abort(exc):
                    raise
                await context.abort(*status_of(exc))

        return cast(F, unary)

    @functools.wraps(method)
    def blocking(self: Any, request: Any, context: Any) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:
            if _is_abort(exc):
                raise
            _abort(context, exc)

    return cast(F, blocking)


def _abort(context: Any, exc: Exception) -> NoReturn:
    context.abort(*status_of(exc))
    raise AssertionError("context.abort returned")  # pragma: no cover
