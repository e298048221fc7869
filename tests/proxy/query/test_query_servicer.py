"""EventQueryService's unary RPCs through grpcio-testing, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import grpc_testing
import pytest
import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.engine import Engine

from protoevents.proxy.changes import CREATED, UPDATED, Change
from protoevents.proxy.query.page_token import PageTokens
from protoevents.proxy.query.service import EventQueryServicer, LocalChanges
from protoevents.proxy.query.store import EventStore
from protoevents.proxy.watch.hub import ChangeHub
from protoevents.proxy.writers.sql import SqlWriter
from protoevents.recorder.registry import Registry
from protoevents.v1 import event_pb2, query_service_pb2
from tests.support.ingest_helpers import LEADER_ELECTED
from tests.support.query_events import BASE, stored_event

Q = query_service_pb2
F = Q.EventFilter
SERVICE = Q.DESCRIPTOR.services_by_name["EventQueryService"]
DISCONNECTED = "protoevents.nic.v1.NicEventType.NIC_EVENT_TYPE_DISCONNECTED"


class Harness:
    def __init__(self, engine: Engine, secret: str = "s") -> None:
        self.engine = engine
        self.servicer = EventQueryServicer(
            EventStore(engine), Registry.builtin(), PageTokens(secret), LocalChanges(ChangeHub())
        )
        self.server = grpc_testing.server_from_dictionary(
            {SERVICE: self.servicer}, grpc_testing.strict_real_time()
        )

    def store(self, events: Sequence[event_pb2.Event], kind: int = CREATED) -> None:
        SqlWriter(self.engine).write_blocking([Change(kind, e) for e in events])  # type: ignore[arg-type]

    def call(self, method: str, request: Any) -> tuple[Any, grpc.StatusCode, str]:
        rpc = self.server.invoke_unary_unary(SERVICE.methods_by_name[method], (), request, None)
        response, _, code, details = rpc.termination()
        return response, code, details

    def ok(self, method: str, request: Any) -> Any:
        response, code, details = self.call(method, request)
        assert code == grpc.StatusCode.OK, details
        return response

    def messages(self, **request: Any) -> list[str]:
        response = self.ok("ListEvents", Q.ListEventsRequest(**request))
        return [e.message for e in response.events]


@pytest.fixture
def harness(migrated_engine: Engine) -> Iterator[Harness]:
    yield Harness(migrated_engine)


def test_each_filter_selects_the_events_a_user_asks_for(harness: Harness) -> None:
    harness.store(
        [
            stored_event(1, message="a elected", severity=2),
            stored_event(
                2,
                message="b link down",
                type=DISCONNECTED,
                category="network",
                severity=4,
                source=event_pb2.EventSource(node="node-2", component="node-agent"),
                object=event_pb2.ObjectRef(kind="NIC", namespace="node-2", name="eth0"),
            ),
            stored_event(3, message="c elected 100%_done", severity=3),
        ]
    )
    assert harness.messages() == ["c elected 100%_done", "b link down", "a elected"]
    cases = {
        "types": (F(types=["NIC_EVENT_TYPE_DISCONNECTED"]), ["b link down"]),
        "min_severity": (F(min_severity=3), ["c elected 100%_done", "b link down"]),
        "categories": (F(categories=["network", "lab"]), ["b link down"]),
        "node": (F(node="node-2"), ["b link down"]),
        "component": (F(component="cluster-controller"), ["c elected 100%_done", "a elected"]),
        "object_kind": (F(object_kind="NIC"), ["b link down"]),
        "object_namespace": (F(object_namespace="node-2"), ["b link down"]),
        "object_name": (F(object_name="node-1"), ["c elected 100%_done", "a elected"]),
        "start_time": (
            F(start_time=Timestamp(seconds=BASE + 2, nanos=6000)),
            ["c elected 100%_done"],
        ),
        "end_time": (F(end_time=Timestamp(seconds=BASE + 2, nanos=5000)), ["a elected"]),
        # Taken literally: % and _ are no wildcards, and case matters.
        "message_contains": (F(message_contains="100%_"), ["c elected 100%_done"]),
        "message_contains case": (F(message_contains="ELECTED"), []),
        "all together": (
            F(types=[LEADER_ELECTED], min_severity=3, node="node-1", message_contains="c "),
            ["c elected 100%_done"],
        ),
    }
    for name, (event_filter, expected) in cases.items():
        assert harness.messages(filter=event_filter) == expected, name  # type: ignore[arg-type]
    oldest_first = harness.messages(order=Q.SORT_ORDER_OLDEST_FIRST)
    assert oldest_first == ["a elected", "b link down", "c elected 100%_done"]


def test_the_site_filter_selects_the_events_forwarded_from_that_site(harness: Harness) -> None:
    harness.store(
        [
            stored_event(1, message="local"),
            stored_event(2, message="a one", site="site-a"),
            stored_event(3, message="b one", site="site-b"),
            stored_event(4, message="a two", site="site-a", severity=4),
        ]
    )
    assert harness.messages(filter=F(site="site-a")) == ["a two", "a one"]
    assert harness.messages(filter=F(site="site-b")) == ["b one"]
    assert harness.messages(filter=F(site="site-c")) == []
    assert harness.messages(filter=F(site="site-a", min_severity=4)) == ["a two"]  # type: ignore[arg-type]
    # Empty: any site, and the events recorded here, which have none.
    assert harness.messages(filter=F(site="")) == ["a two", "b one", "a one", "local"]
    # A site's events page like any listing; the next page keeps the filter.
    first = harness.ok("ListEvents", Q.ListEventsRequest(filter=F(site="site-a"), page_size=1))
    second = harness.ok(
        "ListEvents",
        Q.ListEventsRequest(filter=F(site="site-a"), page_size=1, page_token=first.next_page_token),
    )
    assert [e.message for e in (*first.events, *second.events)] == ["a two", "a one"]
    assert not second.next_page_token
    got = harness.ok("GetEvent", Q.GetEventRequest(id=first.events[0].id)).event
    assert got.site == "site-a"


def test_pages_follow_each_other_until_the_last(harness: Harness) -> None:
    # Two events share a time: the id breaks the tie, so none is lost between pages.
    events = [stored_event(n // 2, message=f"m{n}") for n in range(7)]
    harness.store(events)
    for order in (Q.SORT_ORDER_NEWEST_FIRST, Q.SORT_ORDER_OLDEST_FIRST):
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            response = harness.ok(
                "ListEvents", Q.ListEventsRequest(page_size=3, page_token=token, order=order)
            )
            seen.extend(e.id for e in response.events)
            pages += 1
            token = response.next_page_token
            if not token:
                break
        assert pages == 3
        keys = sorted(((e.time.seconds, e.id) for e in events), reverse=order != 2)
        assert seen == [event_id for _, event_id in keys]


def test_page_size_defaults_to_50_and_is_capped_at_1000(harness: Harness) -> None:
    harness.store([stored_event(n % 100, message=f"m{n}") for n in range(1001)])
    assert len(harness.messages()) == 50
    response = harness.ok("ListEvents", Q.ListEventsRequest(page_size=5000))
    assert len(response.events) == 1000
    assert response.next_page_token


def test_bad_requests_answer_invalid_argument_naming_the_field(harness: Harness) -> None:
    harness.store([stored_event(n, message=f"m{n}") for n in range(3)])
    first = harness.ok("ListEvents", Q.ListEventsRequest(page_size=1))
    token = first.next_page_token
    cases = [
        (Q.ListEventsRequest(page_size=-1), "page_size"),
        (Q.ListEventsRequest(filter=F(types=["NOPE"])), "filter.types[0]"),
        (Q.ListEventsRequest(filter=F(min_severity=7)), "filter.min_severity"),  # type: ignore[arg-type]
        (Q.ListEventsRequest(filter=F(categories=["nope"])), "filter.categories[0]"),
        (
            Q.ListEventsRequest(
                filter=F(start_time=Timestamp(seconds=BASE + 5), end_time=Timestamp(seconds=BASE))
            ),
            "filter.end_time",
        ),
        (Q.ListEventsRequest(filter=F(site="s" * 65)), "filter.site"),
        (Q.ListEventsRequest(order=9), "order"),  # type: ignore[arg-type]
        (Q.ListEventsRequest(page_token="forged"), "page_token"),
        (Q.ListEventsRequest(page_token=token[:-4] + "AAAA"), "page_token"),
        (Q.ListEventsRequest(page_token=token, filter=F(node="node-2")), "page_token"),
        (Q.ListEventsRequest(page_token=token, order=Q.SORT_ORDER_OLDEST_FIRST), "page_token"),
    ]
    for request, field in cases:
        _, code, details = harness.call("ListEvents", request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, request
        assert details.startswith(f"{field}: "), details
    # A token from another proxy (another secret) is refused too.
    other = Harness(harness.engine, secret="another")
    _, code, details = other.call("ListEvents", Q.ListEventsRequest(page_size=1, page_token=token))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("page_token: ")


def test_get_event_returns_the_stored_event_with_its_count_or_not_found(
    harness: Harness,
) -> None:
    event = stored_event(1)
    harness.store([event])
    merged = event_pb2.Event()
    merged.CopyFrom(event)
    merged.count = 4
    merged.last_time.seconds += 3
    harness.store([merged], UPDATED)
    got = harness.ok("GetEvent", Q.GetEventRequest(id=event.id)).event
    assert got == merged
    _, code, details = harness.call(
        "GetEvent", Q.GetEventRequest(id="0190b6a4-0000-7000-8000-000000000000")
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert "0190b6a4-0000-7000-8000-000000000000" in details
    assert "merged into an earlier one as a repeat" in details  # where a merged id went
    _, code, details = harness.call("GetEvent", Q.GetEventRequest())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("id: ")


def test_list_event_types_comes_from_the_registry(harness: Harness) -> None:
    response = harness.ok("ListEventTypes", Q.ListEventTypesRequest())
    registry = Registry.builtin()
    assert [t.name for t in response.event_types] == [t.name for t in registry]
    elected = next(t for t in response.event_types if t.name == LEADER_ELECTED)
    declared = registry.lookup(LEADER_ELECTED)
    assert (elected.number, elected.severity, elected.category, elected.description) == (
        declared.number,
        declared.severity,
        declared.category,
        declared.description,
    )
    assert (elected.service, elected.enum_name) == ("cluster", declared.enum_name)
    network = harness.ok("ListEventTypes", Q.ListEventTypesRequest(category="network"))
    assert network.event_types
    assert {t.category for t in network.event_types} == {"network"}
    lab = harness.ok("ListEventTypes", Q.ListEventTypesRequest(service="lab"))
    assert {t.service for t in lab.event_types} == {"lab"}


def test_an_unreachable_database_answers_unavailable(harness: Harness) -> None:
    down = Harness(sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    for method, request in [
        ("ListEvents", Q.ListEventsRequest()),
        ("GetEvent", Q.GetEventRequest(id=str(uuid.uuid4()))),
    ]:
        _, code, details = down.call(method, request)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "the event database postgresql+psycopg://nobody@127.0.0.1:1/none" in details
        assert "is unavailable" in details
