"""Hypothesis fuzzing of the ingest RPCs against a live proxy on SQLite and PostgreSQL.

Random well-typed Events (every protobuf field drawn, mostly valid, sometimes not) and
malformed bytes, through RecordBatch and the Record stream. Invariant: every call ends with
a status within its deadline, never INTERNAL or UNKNOWN; the result accounts for every event;
the proxy keeps serving; and every event it acknowledged as accepted is stored exactly once.
Dedup is off here, so that each accepted event is a row of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protoevents.recorder.registry import Registry
from protoevents.v1 import event_pb2, proxy_service_pb2
from tests.support.live_proxy import BACKENDS, LiveProxy, serve_live
from tests.support.long_variants import scaled

R = proxy_service_pb2
RECORD = "/protoevents.v1.EventProxyService/Record"
RECORD_BATCH = "/protoevents.v1.EventProxyService/RecordBatch"
# Statuses a bad call may end with; anything else (INTERNAL, UNKNOWN, a timeout) is a bug.
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
FUZZ = settings(
    max_examples=scaled(40, 1000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TYPES = sorted(t.name for t in Registry.builtin())
NOW = int(time.time())


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveProxy]:
    yield from serve_live(request, tmp_path_factory, dedup=None, max_batch_events=50)


@pytest.fixture(scope="module")
def accepted(live: LiveProxy) -> set[str]:
    """Ids `live` acknowledged as accepted (the model of its id cache, which the tests
    share: hypothesis draws the same ids again across them)."""
    return set()


def mostly(good: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> Any:
    """`good` nine times in ten, else `wild`."""
    return st.integers(0, 9).flatmap(lambda n: wild if n == 0 else good)


TEXT = st.text(max_size=12)  # any characters, NUL included (never lone surrogates)
NAMES = mostly(st.text("abcdefgh-.0123456789", min_size=1, max_size=20), st.text(max_size=300))
IDS = mostly(st.uuids().map(str), st.one_of(TEXT, st.uuids().map(lambda u: "{" + str(u) + "}")))
JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)
SECONDS = mostly(
    st.integers(NOW - 86_400 * 365, NOW + 60),
    st.integers(-(2**40), 2**40) | st.sampled_from([0, 978_307_199, 978_307_200, NOW + 7200]),
)
NANOS = mostly(st.integers(0, 999_999_999), st.integers(-(2**31), 2**31 - 1))


@st.composite
def events(draw: st.DrawFn) -> event_pb2.Event:
    """An Event with every field drawn."""
    event = event_pb2.Event(
        id=draw(IDS),
        type=draw(mostly(st.sampled_from(TYPES), TEXT)),
        severity=draw(mostly(st.integers(0, 5), st.integers(-(2**31), 2**31 - 1))),
        category=draw(TEXT),
        message=draw(mostly(st.text(max_size=80), st.text(min_size=4000, max_size=4200))),
        count=draw(st.integers(0, 2**64 - 1)),
    )
    if draw(mostly(st.just(True), st.booleans())):
        event.source.node = draw(NAMES)
        event.source.component = draw(NAMES)
    if draw(st.booleans()):
        event.object.kind = draw(NAMES)
        event.object.namespace = draw(st.text(max_size=10))
        event.object.name = draw(NAMES)
    most = draw(mostly(st.just(3), st.just(70)))
    event.attributes.update(draw(st.dictionaries(TEXT, TEXT, max_size=most)))
    if draw(st.booleans()):
        data = Struct()
        data.update(draw(st.dictionaries(TEXT, JSON, max_size=4)))
        event.data.CopyFrom(data)
    if draw(mostly(st.just(True), st.booleans())):
        event.time.seconds = draw(SECONDS)
        event.time.nanos = draw(NANOS)
    for name in ("first_time", "last_time", "received_time"):
        if draw(st.integers(0, 4)) == 0:
            getattr(event, name).seconds = draw(st.integers(0, 2**34))
    return event


def batches(max_size: int = 8) -> st.SearchStrategy[list[event_pb2.Event]]:
    """Events with, at times, an id repeated from earlier in the batch."""

    @st.composite
    def build(draw: st.DrawFn) -> list[event_pb2.Event]:
        batch = draw(st.lists(events(), min_size=0, max_size=max_size))
        for event in batch[1:]:
            if draw(st.integers(0, 7)) == 0:
                event.id = draw(st.sampled_from(batch)).id
        return batch

    return build()


def check_result(
    result: proxy_service_pb2.BatchResult, batch: list[event_pb2.Event], accepted: set[str]
) -> None:
    """The result accounts for every event, as the model of the id cache predicts; the
    accepted ids join `accepted`."""
    rejected = {rejection.index for rejection in result.rejections}
    assert all(rejection.reason != 0 and rejection.detail for rejection in result.rejections)
    new: list[str] = []
    for index, event in enumerate(batch):
        if index not in rejected and event.id not in accepted and event.id not in new:
            new.append(event.id)
    assert result.accepted_count == len(new)
    assert result.accepted_count + result.duplicate_count + len(rejected) == len(batch)
    accepted.update(new)


def expect_answer(call: Any) -> Any:
    """The call's response; or, when it fails, a refusal status, never a crash or a hang."""
    try:
        return call()
    except grpc.RpcError as error:
        assert error.code() in REFUSALS, (error.code(), error.details())
        return None


def assert_stored_once(live: LiveProxy, accepted: set[str]) -> None:
    """The proxy serves, and every id it acknowledged as accepted is stored exactly once."""
    live.assert_still_serving()
    assert accepted, "the fuzzing accepted no event at all"
    ids = sorted(accepted)
    assert live.stored(ids) == dict.fromkeys(ids, 1)


def test_record_batch_answers_every_batch(live: LiveProxy, accepted: set[str]) -> None:
    @FUZZ
    @given(batch=batches())
    def fuzz(batch: list[event_pb2.Event]) -> None:
        request = R.RecordBatchRequest(events=batch)
        response = expect_answer(lambda: live.stub.RecordBatch(request, timeout=30))
        if response is None:
            assert not batch  # only an empty batch is refused whole here
            return
        check_result(response.result, batch, accepted)

    fuzz()
    assert_stored_once(live, accepted)


def test_record_stream_acknowledges_in_order_or_ends_with_a_refusal(
    live: LiveProxy, accepted: set[str]
) -> None:
    @FUZZ
    @given(stream=st.lists(batches(4), min_size=1, max_size=4))
    def fuzz(stream: list[list[event_pb2.Event]]) -> None:
        requests = [R.RecordRequest(sequence=n, events=b) for n, b in enumerate(stream, 1)]
        acknowledged: list[int] = []

        def read_all() -> bool:
            for response in live.stub.Record(iter(requests), timeout=30):
                assert response.sequence == len(acknowledged) + 1  # in order, each once
                check_result(response.result, stream[response.sequence - 1], accepted)
                acknowledged.append(response.sequence)
            return True

        if expect_answer(read_all) is None:
            # Refused at the first empty batch, after every batch before it was acknowledged.
            first_empty = next(n for n, batch in enumerate(stream, 1) if not batch)
            assert acknowledged == list(range(1, first_empty))
        else:
            assert all(stream) and acknowledged == list(range(1, len(stream) + 1))

    fuzz()
    assert_stored_once(live, accepted)


def mutated(data: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(data[: max(0, len(data) - cut)])
    for position, value in flips:
        if out:
            out[position % len(out)] = value
    return bytes(out)


def test_malformed_bytes_get_a_status(live: LiveProxy, accepted: set[str]) -> None:
    call = live.channel.unary_unary(
        RECORD_BATCH,
        request_serializer=bytes,
        response_deserializer=R.RecordBatchResponse.FromString,
    )

    @FUZZ
    @given(
        batch=batches(4),
        flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
        cut=st.integers(0, 20),
        noise=st.binary(max_size=200),
        use_noise=st.booleans(),
    )
    def fuzz(
        batch: list[event_pb2.Event],
        flips: list[tuple[int, int]],
        cut: int,
        noise: bytes,
        use_noise: bool,
    ) -> None:
        valid = R.RecordBatchRequest(events=batch).SerializeToString()
        body = noise if use_noise else mutated(valid, flips, cut)
        response = expect_answer(lambda: call(body, timeout=30))
        if response is not None:  # it parsed: the result accounts for whatever it holds
            events = list(R.RecordBatchRequest.FromString(body).events)
            check_result(response.result, events, accepted)

    fuzz()
    live.assert_still_serving()
    ids = sorted(accepted)
    assert live.stored(ids) == dict.fromkeys(ids, 1)
