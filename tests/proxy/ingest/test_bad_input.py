"""Bad input against a live proxy, on SQLite and PostgreSQL: each case gets its exact status
(or per-event rejection), the proxy still serves, and nothing bad reaches the SQL writer.

After every case `assert_still_serving` checks health, sends a good batch, and waits until it
is in the database with the SQL writer caught up with the log and never failing.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protoevents.proxy.quarantine import read_quarantine
from protoevents.v1 import event_pb2, proxy_service_pb2, query_service_pb2, query_service_pb2_grpc
from tests.support.ingest_helpers import make_event, make_events
from tests.support.live_proxy import BACKENDS, LiveProxy, serve_live

R = proxy_service_pb2
RECORD = "/protoevents.v1.EventProxyService/Record"
RECORD_BATCH = "/protoevents.v1.EventProxyService/RecordBatch"
ZERO = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_UNSPECIFIED"
MAX_MESSAGE_BYTES = 4 << 20
MAX_CLIENT_STREAMS = 8
YEAR_3000 = 32_503_680_000


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveProxy]:
    """A proxy on each backend, shared by the module's cases (each checks it still serves)."""
    yield from serve_live(
        request,
        tmp_path_factory,
        max_message_bytes=MAX_MESSAGE_BYTES,
        max_streams_per_client=MAX_CLIENT_STREAMS,
        max_inflight_batches=4,
    )


def struct_of(value: dict[str, Any]) -> Struct:
    data = Struct()
    data.update(value)
    return data


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for level in range(depth):
        value = {f"level{level}": value}
    return value


def event_with(**fields: Any) -> Callable[[], event_pb2.Event]:
    """A builder of a good event with `fields` replaced, its message unique (so that dedup
    stores it as a new event)."""
    return lambda: make_event(**{"message": f"event {uuid.uuid4()}", **fields})


def without(name: str) -> Callable[[], event_pb2.Event]:
    def build() -> event_pb2.Event:
        event = make_event()
        event.ClearField(name)
        return event

    return build


def timed(seconds: int, nanos: int = 0) -> Callable[[], event_pb2.Event]:
    return event_with(time=Timestamp(seconds=seconds, nanos=nanos))


# -- one bad event in a good batch: the batch is accepted, the event rejected ------------

# name, the bad event, its RejectionReason, text its detail holds
REJECTED: list[tuple[str, Callable[[], event_pb2.Event], int, str]] = [
    ("zero type", event_with(type=ZERO), R.REJECTION_REASON_UNKNOWN_TYPE,
     "is the zero value of protoevents.cluster.v1.ClusterEventType"),
    ("zero value of an unknown enum", event_with(type="acme.v1.Nope.NOPE_UNSPECIFIED"),
     R.REJECTION_REASON_UNKNOWN_TYPE, "'acme.v1.Nope.NOPE_UNSPECIFIED' is not a known"),
    ("type without a package", event_with(type="Nope.NOPE"), R.REJECTION_REASON_UNKNOWN_TYPE,
     "type 'Nope.NOPE' is not a known event type"),
    ("type that is no identifier", event_with(type="acme.v1.Nope.NO PE"),
     R.REJECTION_REASON_UNKNOWN_TYPE, "is not a known event type"),
    ("type with an empty part", event_with(type="acme..Nope.NOPE"),
     R.REJECTION_REASON_UNKNOWN_TYPE, "is not a known event type"),
    ("type longer than its column", event_with(type="acme.v1.Nope." + "N" * 243),
     R.REJECTION_REASON_UNKNOWN_TYPE, "is not a known event type"),
    ("empty type", event_with(type=""), R.REJECTION_REASON_MISSING_TYPE, "type is empty"),
    ("unknown value name", event_with(type="CLUSTER_EVENT_TYPE_NO_SUCH"),
     R.REJECTION_REASON_UNKNOWN_TYPE, "type 'CLUSTER_EVENT_TYPE_NO_SUCH' is not a known"),
    ("no source", without("source"), R.REJECTION_REASON_MISSING_SOURCE, "source.node is empty"),
    ("no component", event_with(source=event_pb2.EventSource(node="n")),
     R.REJECTION_REASON_MISSING_SOURCE, "source.component is empty"),
    ("empty id", event_with(id=""), R.REJECTION_REASON_INVALID_ID, "id is empty"),
    ("malformed id", event_with(id="12345678-1234-5678-1234-56781234567g"),
     R.REJECTION_REASON_INVALID_ID, "is not a UUID: expected the canonical UUID text"),
    ("overlong id", event_with(id="1" * 100), R.REJECTION_REASON_INVALID_ID, "is not a UUID"),
    ("upper-case id", event_with(id="12345678-1234-5678-1234-56781234ABCD"),
     R.REJECTION_REASON_INVALID_ID, "is not canonical: use '12345678-1234-5678-1234-56781234abcd'"),
    ("id in braces", event_with(id="{12345678-1234-5678-1234-567812345678}"),
     R.REJECTION_REASON_INVALID_ID, "is not canonical: use '12345678-1234-5678-1234-567812345678'"),
    ("urn:uuid: id", event_with(id="urn:uuid:12345678-1234-5678-1234-567812345678"),
     R.REJECTION_REASON_INVALID_ID, "is not canonical: use '12345678-1234-5678-1234-567812345678'"),
    ("bare hex id", event_with(id="12345678123456781234567812345678"),
     R.REJECTION_REASON_INVALID_ID, "is not canonical: use '12345678-1234-5678-1234-567812345678'"),
    ("id with a newline", event_with(id="1234567812345678123456781234567\n"),
     R.REJECTION_REASON_INVALID_ID, "is not a UUID"),
    ("id with a space", event_with(id=" 1234567812345678123456781234567"),
     R.REJECTION_REASON_INVALID_ID, "is not a UUID"),
    ("no time", without("time"), R.REJECTION_REASON_TIME_OUT_OF_RANGE, "time is not set"),
    ("time at 1970", timed(0), R.REJECTION_REASON_TIME_OUT_OF_RANGE,
     "time 1970-01-01T00:00:00+00:00 is before 2001-01-01"),
    ("time before 2001", timed(978_307_199), R.REJECTION_REASON_TIME_OUT_OF_RANGE,
     "time 2000-12-31T23:59:59+00:00 is before 2001-01-01"),
    ("time before the epoch", timed(-1), R.REJECTION_REASON_TIME_OUT_OF_RANGE,
     "is before 2001-01-01"),
    ("time in the year 3000", timed(YEAR_3000), R.REJECTION_REASON_TIME_OUT_OF_RANGE,
     "time 3000-01-01T00:00:00+00:00 is more than 3600 s after the proxy's clock"),
    ("time past year 9999", timed(1 << 62), R.REJECTION_REASON_TIME_OUT_OF_RANGE,
     "s since the epoch is more than 3600 s after"),
    ("negative nanos", timed(int(time.time()), -1), R.REJECTION_REASON_TIME_OUT_OF_RANGE,
     "time.nanos -1 is outside 0..999999999"),
    ("undefined severity", event_with(severity=42), R.REJECTION_REASON_INVALID_SEVERITY,
     "severity 42 is not a defined Severity value"),
    ("message over 4 KiB", event_with(message="m" * 4097), R.REJECTION_REASON_FIELD_TOO_LARGE,
     "message exceeds 4096 bytes"),
    ("node longer than its column",
     event_with(source=event_pb2.EventSource(node="é" * 254, component="c")),
     R.REJECTION_REASON_FIELD_TOO_LARGE, "source.node exceeds 253 characters"),
    ("component longer than its column",
     event_with(source=event_pb2.EventSource(node="n", component="c" * 129)),
     R.REJECTION_REASON_FIELD_TOO_LARGE, "source.component exceeds 128 characters"),
    ("object kind longer than its column", event_with(object=event_pb2.ObjectRef(kind="k" * 129)),
     R.REJECTION_REASON_FIELD_TOO_LARGE, "object.kind exceeds 128 characters"),
    ("object namespace longer than its column",
     event_with(object=event_pb2.ObjectRef(kind="k", namespace="s" * 129)),
     R.REJECTION_REASON_FIELD_TOO_LARGE, "object.namespace exceeds 128 characters"),
    ("object name longer than its column",
     event_with(object=event_pb2.ObjectRef(kind="k", name="x" * 254)),
     R.REJECTION_REASON_FIELD_TOO_LARGE, "object.name exceeds 253 characters"),
    ("65 attributes", event_with(attributes={str(n): "v" for n in range(65)}),
     R.REJECTION_REASON_FIELD_TOO_LARGE, "attributes has 65 entries; the limit is 64"),
    ("attribute over 1 KiB", event_with(attributes={"k": "v" * 1024}),
     R.REJECTION_REASON_FIELD_TOO_LARGE, "attributes['k'] key and value exceed 1024 bytes"),
    ("data over 64 KiB", event_with(data=struct_of({"blob": "x" * 70_000})),
     R.REJECTION_REASON_FIELD_TOO_LARGE, "the limit is 65536"),
    ("NUL in the message", event_with(message="a\x00b"), R.REJECTION_REASON_INVALID_VALUE,
     "message holds a NUL character"),
    ("NUL in the node", event_with(source=event_pb2.EventSource(node="n\x00", component="c")),
     R.REJECTION_REASON_INVALID_VALUE, "source.node holds a NUL character"),
    ("NUL in an object name", event_with(object=event_pb2.ObjectRef(kind="k", name="\x00")),
     R.REJECTION_REASON_INVALID_VALUE, "object.name holds a NUL character"),
    ("NUL in an attribute", event_with(attributes={"k": "v\x00"}),
     R.REJECTION_REASON_INVALID_VALUE, "attributes['k'] holds a NUL character"),
    ("NUL in a data string", event_with(data=struct_of({"a": ["x\x00"]})),
     R.REJECTION_REASON_INVALID_VALUE, "data['a'][0] holds a NUL character"),
    ("NUL in a data key", event_with(data=struct_of({"a\x00": 1})),
     R.REJECTION_REASON_INVALID_VALUE, "the key holds a NUL character"),
    ("NaN in data", event_with(data=struct_of({"x": float("nan")})),
     R.REJECTION_REASON_INVALID_VALUE, "data['x'] is nan: JSON has no NaN or infinity"),
    ("infinity in data", event_with(data=struct_of({"x": {"y": float("inf")}})),
     R.REJECTION_REASON_INVALID_VALUE, "data['x']['y'] is inf"),
    ("minus infinity in data", event_with(data=struct_of({"x": [1, float("-inf")]})),
     R.REJECTION_REASON_INVALID_VALUE, "data['x'][1] is -inf"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("bad", "reason", "detail"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_a_bad_event_is_rejected_with_its_reason_and_the_rest_of_the_batch_accepted(
    live: LiveProxy, bad: Callable[[], event_pb2.Event], reason: int, detail: str
) -> None:
    good = make_events(2)
    event = bad()
    request = R.RecordBatchRequest(events=[good[0], event, good[1]])
    result = live.stub.RecordBatch(request, timeout=10).result
    assert (result.accepted_count, result.duplicate_count) == (2, 0)
    (rejection,) = result.rejections
    assert (rejection.index, rejection.event_id, rejection.reason) == (1, event.id, reason)
    assert detail in rejection.detail
    live.assert_still_serving()
    ids = [e.id for e in good]
    assert live.stored([*ids, event.id]) == dict.fromkeys(ids, 1)


# -- a type of newer protos: quarantined, not stored, answered as such -------------------


def test_an_event_of_an_unknown_type_is_quarantined_once_and_the_rest_stored(
    live: LiveProxy,
) -> None:
    good = make_events(2)
    newer = make_event(type="acme.v1.Nope.NOPE", message=f"event {uuid.uuid4()}")
    request = R.RecordBatchRequest(events=[good[0], newer, good[1]])
    result = live.stub.RecordBatch(request, timeout=10).result
    assert (result.accepted_count, result.duplicate_count, len(result.rejections)) == (2, 0, 0)
    (kept,) = result.quarantined
    assert (kept.index, kept.event_id) == (1, newer.id)
    assert kept.detail == "type 'acme.v1.Nope.NOPE' is not a known event type"

    again = live.stub.RecordBatch(R.RecordBatchRequest(events=[newer]), timeout=10).result
    assert [q.event_id for q in again.quarantined] == [newer.id]
    assert again.accepted_count == 0

    live.assert_still_serving()
    quarantined = read_quarantine(live.proxy.settings.data_dir / "quarantine")
    held = [e.id for b in quarantined for e in b.events if e.id == newer.id]
    assert held == [newer.id]
    ids = [e.id for e in good]
    assert live.stored([*ids, newer.id]) == dict.fromkeys(ids, 1)


# -- odd but good input: accepted and stored as sent -------------------------------------


def client_set_server_fields() -> event_pb2.Event:
    event = make_event(message=f"event {uuid.uuid4()}", category="made-up", count=99)
    event.received_time.FromSeconds(1)
    event.first_time.FromSeconds(2)
    return event


ACCEPTED: list[tuple[str, Callable[[], event_pb2.Event]]] = [
    ("data nested 30 deep", event_with(data=struct_of(nested(30)))),
    ("data at its 64 KiB limit", event_with(data=struct_of({"blob": "x" * 65_000}))),
    ("huge and tiny numbers in data", event_with(data=struct_of({"a": 1e308, "b": -5e-324}))),
    ("every script in the message", event_with(message="ünïcödé 事件 حدث 🚀 e\u0301 \u202e")),
    ("fields at their column length",
     event_with(source=event_pb2.EventSource(node="é" * 253, component="c" * 128),
                object=event_pb2.ObjectRef(kind="k" * 128, namespace="s" * 128, name="x" * 253))),
    ("time at 2001", timed(978_307_200)),
    ("fields only the proxy sets", client_set_server_fields),
]  # fmt: skip


@pytest.mark.parametrize("build", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_odd_but_valid_events_are_stored_as_sent(
    live: LiveProxy, build: Callable[[], event_pb2.Event]
) -> None:
    event = build()
    result = live.stub.RecordBatch(R.RecordBatchRequest(events=[event]), timeout=10).result
    assert (result.accepted_count, list(result.rejections)) == (1, [])
    live.assert_still_serving()
    assert live.stored([event.id]) == {event.id: 1}  # the proxy's count, not the client's


def test_duplicate_ids_in_a_batch_are_stored_once(live: LiveProxy) -> None:
    first, second = make_events(2)
    twin = make_event(id=first.id, message="another message, same id")
    request = R.RecordBatchRequest(events=[first, second, twin, second])
    result = live.stub.RecordBatch(request, timeout=10).result
    assert (result.accepted_count, result.duplicate_count) == (2, 2)
    live.assert_still_serving()
    assert live.stored([first.id, second.id]) == {first.id: 1, second.id: 1}


def test_a_batch_of_10000_events_is_accepted_whole(live: LiveProxy) -> None:
    batch = make_events(10_000)
    result = live.stub.RecordBatch(R.RecordBatchRequest(events=batch), timeout=60).result
    assert (result.accepted_count, list(result.rejections)) == (10_000, [])
    live.assert_still_serving()
    ids = [event.id for event in batch]
    assert live.stored(ids) == dict.fromkeys(ids, 1)


# -- calls refused whole -----------------------------------------------------------------


def raw_batch(live: LiveProxy) -> grpc.UnaryUnaryMultiCallable:
    return live.channel.unary_unary(
        RECORD_BATCH,
        request_serializer=bytes,
        response_deserializer=R.RecordBatchResponse.FromString,
    )


def not_utf8() -> bytes:
    event = make_event(message="XXXX").SerializeToString().replace(b"XXXX", b"\xc3\x28\xff\xfe")
    return R.RecordBatchRequest(events=[make_event()]).SerializeToString() + as_batch(event)


def nested_too_deep() -> bytes:
    """A batch whose data nests deeper than protobuf parses (100 levels)."""
    deep = make_event(data=struct_of({"x": 1}))
    inner = deep.data
    for _ in range(60):
        inner = inner.fields["x"].struct_value
        inner.fields["x"].number_value = 1
    return as_batch(deep.SerializeToString())


def as_batch(event: bytes) -> bytes:
    """A RecordBatchRequest holding one serialized event, framed by hand."""
    length, size = b"", len(event)
    while size > 0x7F:
        length += bytes([size & 0x7F | 0x80])
        size >>= 7
    return b"\x0a" + length + bytes([size]) + event


def one_event(**fields: Any) -> bytes:
    return R.RecordBatchRequest(events=[make_event(**fields)]).SerializeToString()


def batch_of(count: int) -> bytes:
    return R.RecordBatchRequest(events=make_events(count)).SerializeToString()


# name, request bytes, status code, text the status detail holds
REFUSED: list[tuple[str, Callable[[], bytes], grpc.StatusCode, str]] = [
    ("empty batch", lambda: b"", grpc.StatusCode.INVALID_ARGUMENT, "the batch has no events"),
    ("10,001 events", lambda: batch_of(10_001), grpc.StatusCode.INVALID_ARGUMENT,
     "the batch has 10001 events; the limit is 10000"),
    ("message over max_message_bytes",
     lambda: one_event(message="m" * MAX_MESSAGE_BYTES),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max"),
    ("string that is not UTF-8", not_utf8, grpc.StatusCode.INVALID_ARGUMENT,
     "the request is not a valid protoevents.v1.RecordBatchRequest"),
    ("garbage bytes", lambda: b"\xde\xad\xbe\xef" * 8, grpc.StatusCode.INVALID_ARGUMENT,
     "the request is not a valid protoevents.v1.RecordBatchRequest"),
    ("truncated request", lambda: batch_of(3)[:-7], grpc.StatusCode.INVALID_ARGUMENT,
     "the request is not a valid protoevents.v1.RecordBatchRequest"),
    ("data nested past the parser's limit", nested_too_deep, grpc.StatusCode.INVALID_ARGUMENT,
     "the request is not a valid protoevents.v1.RecordBatchRequest"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "code", "detail"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_a_bad_call_gets_its_status(
    live: LiveProxy, body: Callable[[], bytes], code: grpc.StatusCode, detail: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        raw_batch(live)(body(), timeout=30)
    assert refused.value.code() == code
    assert detail in (refused.value.details() or "")
    live.assert_still_serving()


@pytest.mark.parametrize(
    ("second", "detail"),
    [
        (R.RecordRequest(sequence=2).SerializeToString(), "batch 2: the batch has no events"),
        (b"\x12\x03\xff\xff\xff", "the request is not a valid protoevents.v1.RecordRequest"),
    ],
    ids=["empty batch", "bytes that do not parse"],
)
def test_a_bad_batch_on_a_stream_ends_it_after_the_good_ones_are_acknowledged(
    live: LiveProxy, second: bytes, detail: str
) -> None:
    stream = live.channel.stream_stream(
        RECORD, request_serializer=bytes, response_deserializer=R.RecordResponse.FromString
    )
    good = R.RecordRequest(sequence=1, events=make_events(2)).SerializeToString()
    acked = []
    with pytest.raises(grpc.RpcError) as refused:
        for response in stream(iter([good, second]), timeout=30):
            acked.append(response.sequence)
    assert acked == [1]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert detail in (refused.value.details() or "")
    live.assert_still_serving()


def test_an_unknown_method_is_unimplemented(live: LiveProxy) -> None:
    method = live.channel.unary_unary("/protoevents.v1.EventProxyService/Nope")
    with pytest.raises(grpc.RpcError) as refused:
        method(b"", timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    live.assert_still_serving()


# -- the transport ----------------------------------------------------------------------


def host_port(live: LiveProxy) -> tuple[str, int]:
    host, _, port = live.address.rpartition(":")
    return host, int(port)


def read_until_closed(connection: socket.socket) -> bytes:
    """What the proxy answers before it closes the connection (fails if it does not)."""
    connection.settimeout(30)
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return answer


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\xff" * 4096,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64,  # the preface, then garbage
        b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n",
    ],
    ids=["garbage bytes", "garbage after the HTTP/2 preface", "an HTTP/1.1 request"],
)
def test_what_is_not_grpc_on_the_port_is_closed(live: LiveProxy, payload: bytes) -> None:
    with socket.create_connection(host_port(live), timeout=10) as connection:
        connection.sendall(payload)
        read_until_closed(connection)
    live.assert_still_serving()


def test_a_half_open_connection_does_not_hold_up_others(live: LiveProxy) -> None:
    with socket.create_connection(host_port(live), timeout=10) as connection:
        connection.sendall(b"PRI * HTTP/2.0\r\n")  # part of the preface, then nothing
        live.assert_still_serving()


def record_stream(live: LiveProxy) -> grpc.StreamStreamMultiCallable:
    return live.channel.stream_stream(
        RECORD,
        request_serializer=R.RecordRequest.SerializeToString,
        response_deserializer=R.RecordResponse.FromString,
    )


def test_an_idle_stream_neither_holds_up_others_nor_ends(live: LiveProxy) -> None:
    resume = threading.Event()
    batch = make_events(2)

    def outgoing() -> Iterator[R.RecordRequest]:
        resume.wait(60)  # the stream is open and sends nothing until then
        yield R.RecordRequest(sequence=7, events=batch)

    call = record_stream(live)(outgoing(), timeout=60)
    live.assert_still_serving()
    resume.set()
    (response,) = list(call)
    assert (response.sequence, response.result.accepted_count) == (7, 2)
    live.assert_still_serving()


def received(live: LiveProxy) -> float:
    value = live.proxy.metrics.registry.get_sample_value("protoevents_events_received_total")
    return value or 0.0


def test_a_stream_that_never_reads_its_acks_is_not_read_without_limit(live: LiveProxy) -> None:
    # A client whose stream window (1 KiB) only reopens as it reads: its acks pile up in it.
    channel = grpc.insecure_channel(
        live.address, [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
    )
    stream = channel.stream_stream(
        RECORD,
        request_serializer=R.RecordRequest.SerializeToString,
        response_deserializer=R.RecordResponse.FromString,
    )
    offered = 0
    batch = make_events(1)

    def outgoing() -> Iterator[R.RecordRequest]:
        nonlocal offered
        for sequence in range(1, 1_000_000):
            offered = sequence
            yield R.RecordRequest(sequence=sequence, events=batch)

    before = received(live)
    call = stream(outgoing(), timeout=120)  # its responses are never read
    try:
        deadline = time.monotonic() + 60
        while offered < 5000:
            assert time.monotonic() < deadline, "the client could not offer 5,000 batches"
            time.sleep(0.01)
        # The proxy read the batches it could acknowledge into that window, then stopped.
        taken, since = received(live), time.monotonic()
        while time.monotonic() - since < 0.5:
            if received(live) != taken:
                taken, since = received(live), time.monotonic()
            time.sleep(0.01)
        assert 0 < taken - before < 1000
        live.assert_still_serving()
    finally:
        call.cancel()
        channel.close()
    live.assert_still_serving()


def test_too_many_streams_of_one_client_get_resource_exhausted(live: LiveProxy) -> None:
    release = threading.Event()

    def held(sequence: int) -> Iterator[R.RecordRequest]:
        yield R.RecordRequest(sequence=sequence, events=make_events(1))
        release.wait(60)

    streams = [record_stream(live)(held(n), timeout=60) for n in range(MAX_CLIENT_STREAMS)]
    try:
        for n, stream in enumerate(streams):
            assert next(stream).sequence == n  # each stream is open on the proxy
        with pytest.raises(grpc.RpcError) as refused:
            live.stub.RecordBatch(R.RecordBatchRequest(events=make_events(1)), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.details() == (
            f"client 127.0.0.1 has {MAX_CLIENT_STREAMS} ingest streams open, the limit per "
            "client (max_streams_per_client); close idle streams or retry later"
        )
        # Health and queries are not ingest: never refused for it.
        health = health_pb2_grpc.HealthStub(live.channel)
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        query = query_service_pb2_grpc.EventQueryServiceStub(live.channel)
        query.ListEvents(query_service_pb2.ListEventsRequest(page_size=1), timeout=10)
    finally:
        release.set()
    for stream in streams:
        assert list(stream) == []
    live.assert_still_serving()


def test_every_good_event_of_the_suite_is_stored_once(live: LiveProxy) -> None:
    assert live.good_ids
    assert live.stored(live.good_ids) == dict.fromkeys(live.good_ids, 1)
