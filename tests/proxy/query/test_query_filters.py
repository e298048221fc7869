"""EventFilter checking (each bad field named) and page tokens (forged, garbled, reused)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from protoevents.proxy.query.filters import parse_filter
from protoevents.proxy.query.page_token import Cursor, PageTokens
from protoevents.proxy.statuses import InvalidArgumentError
from protoevents.recorder.registry import Registry
from protoevents.v1 import query_service_pb2
from tests.support.ingest_helpers import LEADER_ELECTED, make_event

F = query_service_pb2.EventFilter
REGISTRY = Registry.builtin()


def ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


@pytest.mark.parametrize(
    ("message", "field", "says"),
    [
        (F(types=["NO_SUCH_TYPE"]), "filter.types[0]", "unknown event type 'NO_SUCH_TYPE'"),
        (F(types=[LEADER_ELECTED, ""]), "filter.types[1]", "empty event type name"),
        (F(min_severity=42), "filter.min_severity", "unknown severity value 42"),  # type: ignore[arg-type]
        (F(categories=["cluster", "nope"]), "filter.categories[1]", "unknown category 'nope'"),
        (F(node="n" * 254), "filter.node", "longer than 253"),
        (F(start_time=ts(20), end_time=ts(10)), "filter.end_time", "is not after"),
        (F(start_time=ts(10), end_time=ts(10)), "filter.end_time", "is not after"),
        (F(start_time=ts(0, 2_000_000_000)), "filter.start_time", "is not a timestamp"),
        (F(end_time=ts(10**12)), "filter.end_time", "is not a timestamp"),
        (F(message_contains="x" * 5000), "filter.message_contains", "longer than 4096"),
        (F(site="s" * 65), "filter.site", "longer than 64"),
        (F(site="site\x00"), "filter.site", "holds a NUL character"),
    ],
)
def test_a_bad_filter_is_refused_naming_its_field(
    message: query_service_pb2.EventFilter, field: str, says: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_filter(message, REGISTRY)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert says in str(caught.value)


def test_value_names_resolve_to_qualified_type_names() -> None:
    query = parse_filter(F(types=["CLUSTER_EVENT_TYPE_LEADER_ELECTED"]), REGISTRY)
    assert query.types == {LEADER_ELECTED}


def test_matches_checks_every_condition() -> None:
    event = make_event(severity=3, category="cluster", time=ts(1_700_000_000))
    event.message = "node-1 became leader"
    event.site = "site-a"
    good = F(
        types=[LEADER_ELECTED],
        min_severity=3,  # type: ignore[arg-type]
        categories=["cluster"],
        node="node-1",
        component="cluster-controller",
        object_kind="Node",
        object_name="node-1",
        start_time=ts(1_700_000_000),
        end_time=ts(1_700_000_001),
        message_contains="became",
        site="site-a",
    )
    assert parse_filter(good, REGISTRY).matches(event)
    changes: list[query_service_pb2.EventFilter] = [
        F(types=["protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST"]),
        F(min_severity=4),  # type: ignore[arg-type]
        F(categories=["network"]),
        F(node="node-2"),
        F(component="other"),
        F(object_kind="Nic"),
        F(object_namespace="ns"),
        F(object_name="node-2"),
        F(start_time=ts(1_700_000_001)),
        F(end_time=ts(1_700_000_000)),
        F(message_contains="Became"),  # case-sensitive
        F(site="site-b"),
        F(site="Site-a"),
    ]
    for change in changes:
        assert not parse_filter(change, REGISTRY).matches(event), change


def test_an_empty_site_matches_events_of_any_site_and_local_ones() -> None:
    query = parse_filter(F(site=""), REGISTRY)
    assert query.exact == ()
    local = make_event()
    forwarded = make_event()
    forwarded.site = "site-a"
    assert query.matches(local) and query.matches(forwarded)
    site_a = parse_filter(F(site="site-a"), REGISTRY)
    assert not site_a.matches(local) and site_a.matches(forwarded)
    assert not site_a.scans  # the (site, time) index serves it


def test_a_page_token_round_trips_for_its_own_listing_only() -> None:
    tokens = PageTokens("secret")
    digest = parse_filter(F(node="node-1"), REGISTRY).digest
    cursor = Cursor(datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC), "some-id")
    token = tokens.issue(cursor, 0, digest)
    assert tokens.read(token, 0, digest) == cursor
    # Another secret (another proxy), a changed byte, garbage, another filter or order.
    other_digest = parse_filter(F(node="node-2"), REGISTRY).digest
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    foreign = PageTokens("another secret")
    for reader, bad, order, filter_digest, says in [
        (foreign, token, 0, digest, "not a page token this service issued"),
        (tokens, flipped, 0, digest, "not a page token this service issued"),
        (tokens, "garbage", 0, digest, "not a page token this service issued"),
        (tokens, token, 0, other_digest, "another filter or order"),
        (tokens, token, 1, digest, "another filter or order"),
    ]:
        with pytest.raises(InvalidArgumentError, match=says) as caught:
            reader.read(bad, order, filter_digest)
        assert caught.value.field == "page_token"
