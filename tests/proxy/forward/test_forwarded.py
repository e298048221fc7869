"""A central proxy receiving a site's changes over EventForwardService, from the real forward
writer and from raw gRPC: each event stored once by id whatever is resent, counts and last
times only raised whatever the order of retries, and a precise status for bad requests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest

from protoevents.proxy.changes import CREATED, UPDATED, Change, PermanentWriteError
from protoevents.proxy.writers.forward import ForwardOptions, ForwardWriter
from protoevents.v1 import (
    event_pb2,
    forward_service_pb2,
    proxy_service_pb2,
)
from tests.support.events import repeated, stored_event
from tests.support.ingest_helpers import make_event
from tests.support.live_proxy import BACKENDS, LiveProxy, serve_live
from tests.support.polling import eventually

F = forward_service_pb2


@pytest.fixture(scope="module", params=BACKENDS)
def central(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveProxy]:
    yield from serve_live(request, tmp_path_factory, idempotency_cache_size=4)


def forwarded(central: LiveProxy, changes: list[Change], site: str = "site-a") -> None:
    """Forward `changes` with the real writer; returns once central answered them."""
    writer = ForwardWriter(ForwardOptions(address=central.address, site=site))
    try:
        central.run(writer.write(changes))
    finally:
        central.run(writer.close())


def created(*events: event_pb2.Event) -> list[Change]:
    return [Change(CREATED, e) for e in events]


def fresh(n: int) -> list[event_pb2.Event]:
    return [stored_event(n + i, event_id=str(uuid.uuid4())) for i in range(3)]


def test_changes_are_stored_once_and_resends_change_nothing(central: LiveProxy) -> None:
    events = fresh(0)
    ids = [e.id for e in events]
    forwarded(central, created(*events))
    forwarded(central, created(*events))  # a resend: the bookmark was not saved, say
    eventually(lambda: central.stored(ids) == dict.fromkeys(ids, 1))
    # Pushed out of central's recent-id cache (4 ids) by more events, then resent again:
    # the database still holds each once.
    more = fresh(10) + fresh(20)
    forwarded(central, created(*more))
    forwarded(central, created(*events))
    every = ids + [e.id for e in more]
    eventually(lambda: central.stored(every) == dict.fromkeys(every, 1))


def test_counts_and_last_times_never_go_back_whatever_the_order(central: LiveProxy) -> None:
    first = stored_event(1, event_id=str(uuid.uuid4()))
    later, latest = repeated(first, 3, 1000), repeated(first, 7, 5000)
    forwarded(central, [Change(CREATED, first), Change(UPDATED, latest)])
    # An older update arriving after the newest (a retry of an earlier batch) lowers nothing.
    forwarded(central, [Change(UPDATED, later)])
    forwarded(central, [Change(CREATED, first)])
    eventually(lambda: central.stored([first.id]) == {first.id: 7})
    # An update of an event central never got as new stores it with the update's count.
    lone = stored_event(2, event_id=str(uuid.uuid4()))
    forwarded(central, [Change(UPDATED, repeated(lone, 4, 10))])
    eventually(lambda: central.stored([lone.id]) == {lone.id: 4})


def test_a_batch_is_split_into_requests_in_order(central: LiveProxy) -> None:
    events = [stored_event(i, event_id=str(uuid.uuid4())) for i in range(25)]
    writer = ForwardWriter(
        ForwardOptions(address=central.address, site="site-a", max_request_changes=10)
    )
    changes = created(*events)
    assert len(writer.requests(changes)) == 3
    try:
        central.run(writer.write(changes))
    finally:
        central.run(writer.close())
    ids = [e.id for e in events]
    eventually(lambda: central.stored(ids) == dict.fromkeys(ids, 1))


def call(central: LiveProxy, request: bytes | F.ForwardRequest) -> grpc.RpcError | None:
    """Send one request on a Forward stream; the error that ended it, or None."""
    data = request if isinstance(request, bytes) else request.SerializeToString()
    with grpc.insecure_channel(central.address) as channel:
        forward = channel.stream_stream(
            "/protoevents.v1.EventForwardService/Forward",
            request_serializer=None,
            response_deserializer=F.ForwardResponse.FromString,
        )
        try:
            answers = list(forward(iter([data]), timeout=10))
        except grpc.RpcError as error:
            return error
    assert [a.sequence for a in answers] == [F.ForwardRequest.FromString(data).sequence]
    return None


def bad_id() -> F.ForwardRequest:
    event = stored_event(1, event_id="not-a-uuid")
    return F.ForwardRequest(sequence=1, site="site-a", created=[event])


def uncounted() -> F.ForwardRequest:
    event = stored_event(1, event_id=str(uuid.uuid4()), count=0)
    return F.ForwardRequest(sequence=1, site="site-a", updated=[event])


def unsited() -> F.ForwardRequest:
    return F.ForwardRequest(sequence=1, created=[stored_event(1, event_id=str(uuid.uuid4()))])


def badly_sited() -> F.ForwardRequest:
    event = stored_event(1, event_id=str(uuid.uuid4()))
    return F.ForwardRequest(sequence=1, site="site a!", created=[event])


BAD = [
    (b"\xff\xff", "the request is not a valid protoevents.v1.ForwardRequest"),
    (F.ForwardRequest(sequence=1, site="site-a"), "request 1: the batch has no events"),
    (bad_id(), "request 1: created[0] (event 'not-a-uuid'): REJECTION_REASON_INVALID_ID"),
    (uncounted(), "updated[0] (event '"),
    (unsited(), "no site: the request names none (ForwardRequest.site) and the event has none"),
    (badly_sited(), "site 'site a!' is not a site name"),
]


@pytest.mark.parametrize(("request_", "message"), BAD)
def test_a_bad_request_is_invalid_argument_naming_the_fault(
    central: LiveProxy, request_: bytes | F.ForwardRequest, message: str
) -> None:
    error = call(central, request_)
    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert message in error.details()  # type: ignore[attr-defined]


def test_a_bad_change_stores_nothing_of_its_request(central: LiveProxy) -> None:
    good = stored_event(3, event_id=str(uuid.uuid4()))
    request = bad_id()
    request.created.insert(0, good)
    error = call(central, request)
    assert error is not None
    assert "created[1]" in error.details()  # type: ignore[attr-defined]
    forwarded(central, created(stored_event(4, event_id=str(uuid.uuid4()))))  # a barrier
    assert central.stored([good.id]) == {}


def test_a_recorder_may_not_claim_a_site(central: LiveProxy) -> None:
    event = make_event(site="site-b")
    request = proxy_service_pb2.RecordBatchRequest(events=[event])
    result = central.stub.RecordBatch(request, timeout=10).result
    assert result.accepted_count == 0
    [rejection] = result.rejections
    assert rejection.reason == proxy_service_pb2.REJECTION_REASON_INVALID_VALUE
    assert rejection.detail.startswith("site is set only by a proxy that receives the event")


def test_the_writer_takes_a_refused_change_as_permanent(central: LiveProxy) -> None:
    event = stored_event(5, event_id="not-a-uuid")
    with pytest.raises(PermanentWriteError, match="REJECTION_REASON_INVALID_ID"):
        forwarded(central, created(event))
