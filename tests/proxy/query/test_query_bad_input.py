"""Bad query requests against a live proxy, and hypothesis fuzzing of the query RPCs.

Each bad filter, page size or page token gets INVALID_ARGUMENT whose message starts with the
field at fault, and the proxy goes on serving. Fuzzing draws whole requests, well-typed and
wild: every call ends with a status within its deadline, never INTERNAL or UNKNOWN, and the
proxy keeps serving and storing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protoevents.recorder.registry import Registry
from protoevents.v1 import query_service_pb2, query_service_pb2_grpc, severity_pb2
from tests.support.live_proxy import BACKENDS, LiveProxy, serve_live
from tests.support.long_variants import scaled

Q = query_service_pb2
F = Q.EventFilter
NOW = int(time.time())
FUZZ = settings(
    max_examples=scaled(40, 1000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TYPES = sorted(t.name for t in Registry.builtin())
# What a well-formed query may end with; anything else (INTERNAL, UNKNOWN, a hang) is a bug.
ANSWERS = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveProxy]:
    yield from serve_live(request, tmp_path_factory)


@pytest.fixture(scope="module")
def query(live: LiveProxy) -> query_service_pb2_grpc.EventQueryServiceStub:
    live.assert_still_serving()  # a few events stored, so that listings have pages
    live.assert_still_serving()
    return query_service_pb2_grpc.EventQueryServiceStub(live.channel)


def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def at(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def bad_list_requests(token: str) -> list[tuple[str, Q.ListEventsRequest, str]]:
    """(case, request, the field its refusal must name)."""
    return [
        ("negative page size", Q.ListEventsRequest(page_size=-1), "page_size"),
        ("unknown type", Q.ListEventsRequest(filter=F(types=["NOPE"])), "filter.types[0]"),
        ("empty type", Q.ListEventsRequest(filter=F(types=["", TYPES[0]])), "filter.types[0]"),
        (
            "second type unknown",
            Q.ListEventsRequest(filter=F(types=[TYPES[0], "a.b.C"])),
            "filter.types[1]",
        ),
        (
            "undefined severity",
            Q.ListEventsRequest(filter=F(min_severity=42)),  # type: ignore[arg-type]
            "filter.min_severity",
        ),
        (
            "unknown category",
            Q.ListEventsRequest(filter=F(categories=["no-such-category"])),
            "filter.categories[0]",
        ),
        (
            "inverted time range",
            Q.ListEventsRequest(filter=F(start_time=at(NOW), end_time=at(NOW - 60))),
            "filter.end_time",
        ),
        (
            "empty time range",
            Q.ListEventsRequest(filter=F(start_time=at(NOW), end_time=at(NOW))),
            "filter.end_time",
        ),
        ("undefined order", Q.ListEventsRequest(order=9), "order"),  # type: ignore[arg-type]
        ("forged page token", Q.ListEventsRequest(page_token="forged"), "page_token"),
        (
            "garbled page token",
            Q.ListEventsRequest(page_token=token[:-4] + "AAAA"),
            "page_token",
        ),
        (
            "page token of another filter",
            Q.ListEventsRequest(page_token=token, filter=F(node="elsewhere")),
            "page_token",
        ),
        (
            "page token of another order",
            Q.ListEventsRequest(page_token=token, order=Q.SORT_ORDER_OLDEST_FIRST),
            "page_token",
        ),
        (
            "page token of random bytes",
            Q.ListEventsRequest(page_token="\x00\xff" * 40),
            "page_token",
        ),
    ]


def test_each_bad_list_request_names_its_field_and_the_proxy_serves_on(
    live: LiveProxy, query: query_service_pb2_grpc.EventQueryServiceStub
) -> None:
    token = query.ListEvents(Q.ListEventsRequest(page_size=1), timeout=10).next_page_token
    assert token
    for case, request, field in bad_list_requests(token):
        code, details = status_of(lambda r=request: query.ListEvents(r, timeout=10))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, case
        assert details.startswith(f"{field}: "), (case, details)
    live.assert_still_serving()


def test_the_same_bad_filters_refuse_a_watch_before_it_streams(
    live: LiveProxy, query: query_service_pb2_grpc.EventQueryServiceStub
) -> None:
    for case, request, field in bad_list_requests("x"):
        if not field.startswith("filter."):
            continue
        watch = Q.WatchEventsRequest(filter=request.filter)
        code, details = status_of(lambda w=watch: list(query.WatchEvents(w, timeout=10)))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, case
        assert details.startswith(f"{field}: "), (case, details)
    code, details = status_of(
        lambda: list(query.WatchEvents(Q.WatchEventsRequest(replay_count=10**6), timeout=10))
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("replay_count: ")
    live.assert_still_serving()


def test_get_event_answers_not_found_or_invalid_argument(
    live: LiveProxy, query: query_service_pb2_grpc.EventQueryServiceStub
) -> None:
    for event_id, expected in [
        (str(uuid.uuid4()), grpc.StatusCode.NOT_FOUND),
        (str(uuid.uuid4()).upper(), grpc.StatusCode.NOT_FOUND),
        ("", grpc.StatusCode.INVALID_ARGUMENT),
        ("x" * 10_000, grpc.StatusCode.INVALID_ARGUMENT),
        ("not-a-uuid", grpc.StatusCode.INVALID_ARGUMENT),
        ("1234567812345678123456781234567\n", grpc.StatusCode.INVALID_ARGUMENT),
        ("12345678-1234-5678-1234-56781234567g", grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        request = Q.GetEventRequest(id=event_id)
        code, details = status_of(lambda r=request: query.GetEvent(r, timeout=10))
        assert code is expected, event_id[:40]
        assert details.startswith("id: " if expected is grpc.StatusCode.INVALID_ARGUMENT else "no")
    stored = live.good_ids[0]
    value = uuid.UUID(stored)
    for spelling in (stored, stored.upper(), "{" + stored + "}", value.urn, value.hex):
        found = query.GetEvent(Q.GetEventRequest(id=spelling), timeout=10).event
        assert found.id == stored, spelling


# -- fuzzing -----------------------------------------------------------------------------

TEXT = st.text(max_size=20)  # any characters, NUL included
SEVERITIES = st.sampled_from(list(severity_pb2.Severity.values())) | st.integers(-5, 50)
TIMES = st.none() | st.builds(
    Timestamp,
    seconds=st.integers(-(2**40), 2**40) | st.integers(NOW - 86_400, NOW + 86_400),
    nanos=st.integers(0, 999_999_999),
)


@st.composite
def filters(draw: st.DrawFn) -> Q.EventFilter:
    found = F(
        types=draw(st.lists(st.sampled_from(TYPES) | TEXT, max_size=3)),
        min_severity=draw(SEVERITIES),
        categories=draw(
            st.lists(st.sampled_from(["cluster", "network", "lab"]) | TEXT, max_size=2)
        ),
        node=draw(TEXT),
        component=draw(TEXT),
        object_kind=draw(TEXT),
        object_namespace=draw(TEXT),
        object_name=draw(TEXT),
        message_contains=draw(st.sampled_from(["", "%", "_", "\\", "'", "node"]) | TEXT),
        site=draw(TEXT),
    )
    for name in ("start_time", "end_time"):
        value = draw(TIMES)
        if value is not None:
            getattr(found, name).CopyFrom(value)
    return found


@FUZZ
@given(
    query_filter=filters(),
    page_size=st.integers(-(2**31), 2**31 - 1) | st.integers(0, 5),
    order=st.integers(-3, 5),
    token=st.just("") | TEXT,
)
@example(query_filter=F(node="\x00"), page_size=0, order=0, token="")  # once INTERNAL
@example(query_filter=F(message_contains="a\x00"), page_size=0, order=0, token="\x00")
def test_list_events_answers_every_drawn_request_with_a_status(
    query: query_service_pb2_grpc.EventQueryServiceStub,
    query_filter: Q.EventFilter,
    page_size: int,
    order: int,
    token: str,
) -> None:
    request = Q.ListEventsRequest(
        filter=query_filter,
        page_size=page_size,
        order=order,  # type: ignore[arg-type]
        page_token=token,
    )
    code, details = status_of(lambda: query.ListEvents(request, timeout=20))
    assert code in ANSWERS, (code, details)


@settings(FUZZ, max_examples=scaled(15, 300))
@given(query_filter=filters(), replay=st.integers(0, 2000))
def test_watch_events_refuses_at_once_or_streams(
    query: query_service_pb2_grpc.EventQueryServiceStub, query_filter: Q.EventFilter, replay: int
) -> None:
    request = Q.WatchEventsRequest(filter=query_filter, replay_count=replay)
    stream = query.WatchEvents(request, timeout=0.5)
    try:
        for _ in stream:
            pass
    except grpc.RpcError as error:
        code = error.code()
    else:  # pragma: no cover - a watch never ends by itself
        pytest.fail("the watch ended without a status")
    # Refused at once, or accepted and streaming until the client's deadline.
    assert code in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DEADLINE_EXCEEDED}, code


@FUZZ
@given(event_id=st.uuids().map(str) | TEXT | st.text(min_size=100, max_size=5000))
@example(event_id="\x00")  # once INTERNAL on PostgreSQL
def test_get_event_answers_every_drawn_id_with_a_status(
    query: query_service_pb2_grpc.EventQueryServiceStub, event_id: str
) -> None:
    code, details = status_of(lambda: query.GetEvent(Q.GetEventRequest(id=event_id), timeout=20))
    assert code in ANSWERS, (code, details)


NUL_FIELDS = [
    "node",
    "component",
    "object_kind",
    "object_namespace",
    "object_name",
    "message_contains",
    "site",
]


@pytest.mark.parametrize("name", NUL_FIELDS)
def test_a_nul_character_in_any_filter_string_is_invalid_argument_naming_it(
    query: query_service_pb2_grpc.EventQueryServiceStub, name: str
) -> None:
    nul = F(**{name: "node\x00"})
    expected = f"filter.{name}: holds a NUL character, which no event can hold"
    for call in (
        lambda: query.ListEvents(Q.ListEventsRequest(filter=nul), timeout=20),
        lambda: list(query.WatchEvents(Q.WatchEventsRequest(filter=nul), timeout=20)),
    ):
        code, details = status_of(call)
        assert (code, details.startswith(expected)) == (grpc.StatusCode.INVALID_ARGUMENT, True)
    for kind in ("types", "categories"):
        code, details = status_of(
            lambda k=kind: query.ListEvents(
                Q.ListEventsRequest(filter=F(**{k: ["\x00"]})), timeout=20
            )
        )
        assert (code, details.split(":")[0]) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            f"filter.{kind}[0]",
        )
    code, details = status_of(lambda: query.GetEvent(Q.GetEventRequest(id="\x00"), timeout=20))
    assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "id")


def test_after_fuzzing_the_proxy_still_serves_and_stores(live: LiveProxy) -> None:
    live.assert_still_serving()
