"""EventQueryService: listing, getting and watching stored events, and the event types."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol, cast

import grpc

from protoevents.proxy import ids
from protoevents.proxy.changes import Change
from protoevents.proxy.fields import FIELD_LIMITS
from protoevents.proxy.query.filters import EventQuery, parse_filter
from protoevents.proxy.query.page_token import PageTokens
from protoevents.proxy.query.store import EventStore
from protoevents.proxy.statuses import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    TooManyQueriesError,
    grpc_errors,
)
from protoevents.proxy.watch.hub import ChangeHub, Outgoing, batches
from protoevents.recorder.registry import Registry
from protoevents.v1 import query_service_pb2, query_service_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_REPLAY = 1000

REPLAYED = query_service_pb2.CHANGE_KIND_REPLAYED
ORDERS = {
    query_service_pb2.SORT_ORDER_UNSPECIFIED: True,
    query_service_pb2.SORT_ORDER_NEWEST_FIRST: True,
    query_service_pb2.SORT_ORDER_OLDEST_FIRST: False,
}


class ChangeSource(Protocol):
    """Where live changes come from: this proxy's hub, fed locally or through Redis."""

    hub: ChangeHub

    async def ensure_connected(self) -> None:
        """Raise UnavailableError when changes cannot be received now."""
        ...


class LocalChanges:
    """Changes of this proxy only (no Redis): always available."""

    def __init__(self, hub: ChangeHub) -> None:
        self.hub = hub

    async def ensure_connected(self) -> None:
        return None


Context = grpc.ServicerContext
_Q = query_service_pb2
SERVICE_NAME = _Q.DESCRIPTOR.services_by_name["EventQueryService"].full_name


def _message_or_bytes(response: Any) -> bytes:
    """WatchEvents sends the hub's shared encoding as is, and messages serialized."""
    return response if isinstance(response, bytes) else bytes(response.SerializeToString())


class _Handlers:
    """Stands in for a server to take the generated code's method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, _: object) -> None:
        pass

    def add_registered_method_handlers(
        self, _: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.handlers = handlers


def add_query_service(servicer: EventQueryServicer, server: grpc.aio.Server) -> None:
    """Serve EventQueryService as the generated code does, except that WatchEvents
    responses may be bytes already serialized."""
    taken = _Handlers()
    query_service_pb2_grpc.add_EventQueryServiceServicer_to_server(
        servicer, cast(grpc.aio.Server, taken)
    )
    handlers = dict(taken.handlers)
    handlers["WatchEvents"] = handlers["WatchEvents"]._replace(  # type: ignore[attr-defined]
        response_serializer=_message_or_bytes
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class EventQueryServicer(query_service_pb2_grpc.EventQueryServiceServicer):
    """The unary RPCs are plain functions that the grpc.aio server runs on its thread pool
    (their database calls never block the event loop), each within the time the store's
    limits and the caller's deadline give it; WatchEvents is a coroutine, and at most
    `max_watchers` run at once."""

    def __init__(
        self,
        store: EventStore | None,
        registry: Registry,
        tokens: PageTokens,
        changes: ChangeSource,
        *,
        max_watchers: int = 1024,
    ) -> None:
        self._store = store  # None: a relay, whose writers store nothing here
        self.registry = registry
        self.tokens = tokens
        self.changes = changes
        self.max_watchers = max_watchers

    @property
    def store(self) -> EventStore:
        """The stored events; FAILED_PRECONDITION on a relay, which keeps none."""
        if self._store is None:
            raise FailedPreconditionError(
                "this proxy stores no events (no writer of kind sql): it forwards them to "
                "another proxy, which holds them; query that one (WatchEvents here shows "
                "changes as they pass, without replay_count)"
            )
        return self._store

    def _query(self, message: query_service_pb2.EventFilter) -> EventQuery:
        return parse_filter(message, self.registry)

    @grpc_errors
    def ListEvents(
        self, request: query_service_pb2.ListEventsRequest, context: Context
    ) -> query_service_pb2.ListEventsResponse:
        query = self._query(request.filter)
        if request.page_size < 0:
            raise InvalidArgumentError("page_size", f"{request.page_size} is negative")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        if request.order not in ORDERS:
            raise InvalidArgumentError("order", f"unknown sort order value {request.order}")
        newest_first = ORDERS[request.order]
        order = int(not newest_first)
        after = (
            self.tokens.read(request.page_token, order, query.digest)
            if request.page_token
            else None
        )
        budget = self.store.limits.budget(context.time_remaining())
        found, more = self.store.list_events(
            query, newest_first=newest_first, limit=size, after=after, budget=budget
        )
        response = query_service_pb2.ListEventsResponse(events=found)
        if more:
            last = found[-1]
            cursor = self.store.cursor_of(last)
            response.next_page_token = self.tokens.issue(cursor, order, query.digest)
        return response

    @grpc_errors
    def GetEvent(
        self, request: query_service_pb2.GetEventRequest, context: Context
    ) -> query_service_pb2.GetEventResponse:
        spelled = request.id
        if not spelled:
            raise InvalidArgumentError("id", "empty event id")
        if len(spelled) > FIELD_LIMITS["id"]:
            raise InvalidArgumentError("id", f"longer than {FIELD_LIMITS['id']} characters")
        event_id = ids.canonical(spelled)
        if event_id is None:
            raise InvalidArgumentError("id", f"{ids.shown(spelled)} is not a UUID")
        budget = self.store.limits.budget(context.time_remaining())
        event = self.store.get_event(event_id, budget)
        if event is None and spelled != event_id:
            # Stored before ingest accepted only the canonical form, under this spelling.
            event = self.store.get_event(spelled, budget)
        if event is None:
            raise NotFoundError(
                f"no stored event has id {event_id!r} (an event merged into an earlier one "
                "as a repeat is stored under that event's id, named in its acknowledgement)"
            )
        return query_service_pb2.GetEventResponse(event=event)

    @grpc_errors
    def ListEventTypes(
        self, request: query_service_pb2.ListEventTypesRequest, context: Context
    ) -> query_service_pb2.ListEventTypesResponse:
        selected = self.registry.select(
            category=request.category or None, service=request.service or None
        )
        return query_service_pb2.ListEventTypesResponse(
            event_types=[
                query_service_pb2.EventTypeInfo(
                    name=t.name,
                    number=t.number,
                    severity=t.severity,  # type: ignore[arg-type]
                    category=t.category,
                    description=t.description,
                    service=t.service,
                    enum_name=t.enum_name,
                )
                for t in selected
            ]
        )

    @grpc_errors
    async def WatchEvents(  # type: ignore[override]  # writes with context.write
        self,
        request: query_service_pb2.WatchEventsRequest,
        context: grpc.aio.ServicerContext[
            query_service_pb2.WatchEventsRequest, query_service_pb2.WatchEventsResponse
        ],
    ) -> None:
        """Subscribe first, then read the replay from the database: a change stored in
        between comes both ways and is sent once. Live changes are written as the hub
        encoded them, shared by every watcher (see add_query_service); a batched watch
        sends every change waiting in one message."""
        query = self._query(request.filter)
        if request.replay_count > MAX_REPLAY:
            raise InvalidArgumentError(
                "replay_count", f"{request.replay_count} is more than {MAX_REPLAY}"
            )
        store = self.store if request.replay_count else None
        await self.changes.ensure_connected()
        hub = self.changes.hub
        if len(hub) >= self.max_watchers:
            raise TooManyQueriesError(
                f"{len(hub)} watchers are connected, the most the proxy serves "
                "(max_watchers); retry later"
            )
        everything = query == EventQuery(digest=query.digest)
        subscription = hub.subscribe(None if everything else query.matches)
        write: Any = context.write  # takes the shared bytes as well as messages
        batched = request.batched
        try:
            replayed: dict[str, int] = {}  # events sent from the replay, and their counts
            if store is not None:
                budget = store.limits.budget(context.time_remaining())
                replay = await asyncio.to_thread(store.recent, query, request.replay_count, budget)
                for event in replay:
                    replayed[event.id] = event.count
                encoded = [Outgoing.of(Change(REPLAYED, event)) for event in replay]
                await _send(write, encoded, batched)
            while True:
                items = await subscription.take()
                if replayed:  # a change the replay already showed is not sent again
                    items = [i for i in items if replayed.get(i.change.event.id, 0) < i.count]
                await _send(write, items, batched)
        finally:
            subscription.close()


async def _send(write: Any, items: list[Outgoing], batched: bool) -> None:
    """Write changes one per message, or as batched messages."""
    if batched:
        for message in batches([item.element for item in items]):
            await write(message)
    else:
        for item in items:
            await write(item.message)
