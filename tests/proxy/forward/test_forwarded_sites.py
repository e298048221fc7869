"""What a central proxy stores of a site's forwarded events: each keeps its site, which
ListEvents, GetEvent and WatchEvents show and filter on, beside events recorded at central."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from protoevents.proxy.changes import CREATED, Change
from protoevents.proxy.writers.forward import ForwardOptions, ForwardWriter
from protoevents.v1 import event_pb2, proxy_service_pb2, query_service_pb2, query_service_pb2_grpc
from tests.support.events import stored_event
from tests.support.ingest_helpers import make_event
from tests.support.live_proxy import BACKENDS, LiveProxy, serve_live
from tests.support.polling import eventually

Q = query_service_pb2


@pytest.fixture(scope="module", params=BACKENDS)
def central(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveProxy]:
    yield from serve_live(request, tmp_path_factory)


def forward(central: LiveProxy, site: str, *events: event_pb2.Event) -> None:
    """Forward `events` as new with the real writer of `site`; returns once central answered."""
    writer = ForwardWriter(ForwardOptions(address=central.address, site=site))
    try:
        central.run(writer.write([Change(CREATED, e) for e in events]))
    finally:
        central.run(writer.close())


def test_forwarded_events_keep_their_site_and_the_site_filter_selects_them(
    central: LiveProxy,
) -> None:
    marker = uuid.uuid4().hex  # this test's events, whatever else the module stored
    from_a = [stored_event(n, event_id=str(uuid.uuid4()), message=f"{marker} a{n}") for n in (1, 2)]
    from_b = stored_event(3, event_id=str(uuid.uuid4()), message=f"{marker} b")
    # A region forwards an event of a site behind it with that site already set: kept.
    behind = stored_event(4, event_id=str(uuid.uuid4()), message=f"{marker} behind")
    behind.site = "lab-behind"
    forward(central, "site-a", *from_a)
    forward(central, "site-b", from_b, behind)
    here = make_event(message=f"{marker} here")
    answer = central.stub.RecordBatch(proxy_service_pb2.RecordBatchRequest(events=[here]))
    assert answer.result.accepted_count == 1

    query = query_service_pb2_grpc.EventQueryServiceStub(central.channel)

    def listed(site: str = "") -> list[tuple[str, str]]:
        request = Q.ListEventsRequest(
            filter=Q.EventFilter(message_contains=marker, site=site),
            order=Q.SORT_ORDER_OLDEST_FIRST,
        )
        found = query.ListEvents(request, timeout=30).events
        return [(e.message.removeprefix(f"{marker} "), e.site) for e in found]

    eventually(lambda: len(listed()) == 5)
    assert sorted(listed()) == [
        ("a1", "site-a"),
        ("a2", "site-a"),
        ("b", "site-b"),
        ("behind", "lab-behind"),
        ("here", ""),
    ]
    assert listed("site-a") == [("a1", "site-a"), ("a2", "site-a")]
    assert listed("site-b") == [("b", "site-b")]
    assert listed("lab-behind") == [("behind", "lab-behind")]
    got = query.GetEvent(Q.GetEventRequest(id=from_b.id), timeout=30).event
    assert got.site == "site-b"

    replay = query.WatchEvents(
        Q.WatchEventsRequest(filter=Q.EventFilter(site="site-a"), replay_count=2), timeout=30
    )
    try:
        shown = [next(replay).event for _ in range(2)]
    finally:
        replay.cancel()
    assert [(e.id, e.site) for e in shown] == [(from_a[0].id, "site-a"), (from_a[1].id, "site-a")]
