"""Per-event validation: each rejection reason with a detail naming the field and limit."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from protoevents.proxy import ids
from protoevents.proxy.validation import Limits, MalformedBatchError, Validator
from protoevents.recorder.registry import Registry
from protoevents.v1 import event_pb2, proxy_service_pb2, severity_pb2
from tests.support.ingest_helpers import LEADER_ELECTED, make_event

R = proxy_service_pb2
NOW = time.time()
LIMITS = Limits(
    max_batch_events=10,
    max_message_bytes=100,
    max_attributes=3,
    max_attribute_bytes=20,
    max_data_bytes=200,
    max_field_bytes=30,
    max_future_s=3600,
)


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator(Registry.builtin(), LIMITS)


def big_struct() -> Struct:
    data = Struct()
    data.update({"blob": "x" * 300})
    return data


CASES: list[tuple[dict[str, Any], int, str]] = [
    ({"id": ""}, R.REJECTION_REASON_INVALID_ID, "id is empty"),
    ({"id": "not-a-uuid"}, R.REJECTION_REASON_INVALID_ID, "'not-a-uuid' is not a UUID: expected"),
    (
        {"id": "{12345678-1234-5678-1234-567812345678}"},
        R.REJECTION_REASON_INVALID_ID,
        "id '{12345678-1234-5678-1234-567812345678}' is not canonical: "
        "use '12345678-1234-5678-1234-567812345678' (lower case, hyphenated)",
    ),
    (
        {"id": "12345678-1234-5678-1234-56781234ABCD"},
        R.REJECTION_REASON_INVALID_ID,
        "use '12345678-1234-5678-1234-56781234abcd'",
    ),
    ({"id": "1234567812345678123456781234567\n"}, R.REJECTION_REASON_INVALID_ID, "is not a UUID"),
    ({"id": "+1234567812345678123456781234567"}, R.REJECTION_REASON_INVALID_ID, "is not a UUID"),
    ({"id": "1234_678123456781234567812345678"}, R.REJECTION_REASON_INVALID_ID, "is not a UUID"),
    ({"type": ""}, R.REJECTION_REASON_MISSING_TYPE, "type is empty"),
    (
        {"type": "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_NO_SUCH"},
        R.REJECTION_REASON_UNKNOWN_TYPE,
        "is not a known event type",
    ),
    (
        {"type": "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_UNSPECIFIED"},
        R.REJECTION_REASON_UNKNOWN_TYPE,
        "is the zero value of protoevents.cluster.v1.ClusterEventType",
    ),
    (
        {"type": "CLUSTER_EVENT_TYPE_NO_SUCH"},
        R.REJECTION_REASON_UNKNOWN_TYPE,
        "type 'CLUSTER_EVENT_TYPE_NO_SUCH' is not a known event type",
    ),
    (
        {"source": event_pb2.EventSource(component="c")},
        R.REJECTION_REASON_MISSING_SOURCE,
        "source.node is empty",
    ),
    (
        {"source": event_pb2.EventSource(node="n")},
        R.REJECTION_REASON_MISSING_SOURCE,
        "source.component is empty",
    ),
    (
        {"time": Timestamp(seconds=86400)},
        R.REJECTION_REASON_TIME_OUT_OF_RANGE,
        "time 1970-01-02T00:00:00+00:00 is before 2001-01-01",
    ),
    (
        {"time": Timestamp(seconds=int(NOW) + 7200)},
        R.REJECTION_REASON_TIME_OUT_OF_RANGE,
        "is more than 3600 s after the proxy's clock",
    ),
    ({"severity": 42}, R.REJECTION_REASON_INVALID_SEVERITY, "severity 42 is not a defined"),
    ({"message": "m" * 101}, R.REJECTION_REASON_FIELD_TOO_LARGE, "message exceeds 100 bytes"),
    # 40 characters but 120 bytes in UTF-8: the limit is in bytes.
    ({"message": "€" * 40}, R.REJECTION_REASON_FIELD_TOO_LARGE, "message exceeds 100 bytes"),
    (
        {"source": event_pb2.EventSource(node="n" * 31, component="c")},
        R.REJECTION_REASON_FIELD_TOO_LARGE,
        "source.node exceeds 30 bytes",
    ),
    (
        {"object": event_pb2.ObjectRef(kind="Node", name="x" * 31)},
        R.REJECTION_REASON_FIELD_TOO_LARGE,
        "object.name exceeds 30 bytes",
    ),
    (
        {"attributes": {"a": "1", "b": "2", "c": "3", "d": "4"}},
        R.REJECTION_REASON_FIELD_TOO_LARGE,
        "attributes has 4 entries; the limit is 3",
    ),
    (
        {"attributes": {"nic": "e" * 20}},
        R.REJECTION_REASON_FIELD_TOO_LARGE,
        "attributes['nic'] key and value exceed 20 bytes",
    ),
    ({"data": big_struct()}, R.REJECTION_REASON_FIELD_TOO_LARGE, "the limit is 200"),
    (
        {"time": Timestamp(seconds=int(NOW), nanos=-1)},
        R.REJECTION_REASON_TIME_OUT_OF_RANGE,
        "time.nanos -1 is outside 0..999999999",
    ),
    (
        {"time": Timestamp(seconds=int(NOW), nanos=1_000_000_000)},
        R.REJECTION_REASON_TIME_OUT_OF_RANGE,
        "time.nanos 1000000000 is outside 0..999999999",
    ),
]

# Fields within the byte limit but longer than their database column (in characters).
COLUMN_CASES: list[tuple[dict[str, Any], str]] = [
    ({"source": event_pb2.EventSource(node="n" * 254, component="c")}, "source.node exceeds 253"),
    (
        {"source": event_pb2.EventSource(node="n", component="c" * 129)},
        "source.component exceeds 128 characters",
    ),
    ({"object": event_pb2.ObjectRef(kind="k" * 129)}, "object.kind exceeds 128 characters"),
    ({"object": event_pb2.ObjectRef(namespace="s" * 129)}, "object.namespace exceeds 128"),
    ({"object": event_pb2.ObjectRef(name="é" * 254)}, "object.name exceeds 253 characters"),
]


@pytest.mark.parametrize(("fields", "reason", "detail"), CASES)
def test_each_bad_event_gets_its_reason_and_detail(
    validator: Validator, fields: dict[str, Any], reason: int, detail: str
) -> None:
    event = make_event(**fields)
    problem = validator.check(event, NOW)
    assert problem is not None
    assert problem[0] == reason, problem
    assert detail in problem[1]


@pytest.mark.parametrize(("fields", "detail"), COLUMN_CASES)
def test_fields_longer_than_their_column_are_too_large(fields: dict[str, Any], detail: str) -> None:
    validator = Validator(Registry.builtin(), Limits(max_field_bytes=1024))
    problem = validator.check(make_event(**fields), NOW)
    assert problem is not None
    assert problem[0] == R.REJECTION_REASON_FIELD_TOO_LARGE
    assert detail in problem[1]


def test_fields_as_long_as_their_column_are_accepted() -> None:
    validator = Validator(Registry.builtin(), Limits(max_field_bytes=1024))
    event = make_event(
        source=event_pb2.EventSource(node="n" * 253, component="c" * 128),
        object=event_pb2.ObjectRef(kind="k" * 128, namespace="s" * 128, name="é" * 253),
    )
    assert validator.check(event, NOW) is None


def struct_of(value: Any) -> Struct:
    data = Struct()
    data.update(value)
    return data


# Values JSON or PostgreSQL text cannot hold: refused here, not by the SQL writer later.
UNSTORABLE_CASES: list[tuple[dict[str, Any], str]] = [
    ({"message": "a\x00b"}, "message holds a NUL character"),
    (
        {"source": event_pb2.EventSource(node="n\x00", component="c")},
        "source.node holds a NUL character",
    ),
    (
        {"source": event_pb2.EventSource(node="n", component="\x00")},
        "source.component holds a NUL character",
    ),
    ({"object": event_pb2.ObjectRef(kind="K", name="x\x00")}, "object.name holds a NUL character"),
    ({"attributes": {"nic": "eth\x000"}}, "attributes['nic'] holds a NUL character"),
    ({"attributes": {"n\x00ic": "eth0"}}, "attributes['n\\x00ic'] holds a NUL character"),
    ({"data": struct_of({"a": "x\x00"})}, "data['a'] holds a NUL character"),
    ({"data": struct_of({"a\x00": 1})}, "data['a\\x00']: the key holds a NUL character"),
    ({"data": struct_of({"a": float("nan")})}, "data['a'] is nan: JSON has no NaN or infinity"),
    (
        {"data": struct_of({"a": {"b": [1, float("-inf")]}})},
        "data['a']['b'][1] is -inf: JSON has no NaN or infinity",
    ),
]


@pytest.mark.parametrize(("fields", "detail"), UNSTORABLE_CASES)
def test_values_the_store_cannot_hold_are_invalid(
    validator: Validator, fields: dict[str, Any], detail: str
) -> None:
    problem = validator.check(make_event(**fields), NOW)
    assert problem == (R.REJECTION_REASON_INVALID_VALUE, detail)


def test_missing_time_is_out_of_range(validator: Validator) -> None:
    event = make_event()
    event.ClearField("time")
    assert validator.check(event, NOW) == (R.REJECTION_REASON_TIME_OUT_OF_RANGE, "time is not set")


def test_a_good_event_is_completed_from_its_type(validator: Validator) -> None:
    event = make_event(attributes={"nic": "eth0"}, id="12345678-1234-5678-1234-567812345678")
    assert validator.check(event, NOW) is None
    assert event.category == "cluster"
    assert event.severity == severity_pb2.SEVERITY_INFO  # the type's default
    declared = make_event(severity=severity_pb2.SEVERITY_ERROR)
    assert validator.check(declared, NOW) is None
    assert declared.severity == severity_pb2.SEVERITY_ERROR  # kept when given


def test_a_value_name_alone_is_stored_under_its_qualified_name(validator: Validator) -> None:
    event = make_event(type="CLUSTER_EVENT_TYPE_LEADER_ELECTED")
    assert validator.check(event, NOW) is None
    assert event.type == LEADER_ELECTED


def test_a_value_name_two_enums_share_must_be_qualified() -> None:
    builtin = Registry.builtin()
    elected = builtin.lookup(LEADER_ELECTED)
    other = dataclasses.replace(
        elected,
        name="acme.v1.AcmeEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED",
        enum_name="acme.v1.AcmeEventType",
    )
    validator = Validator(Registry([*builtin, other]), LIMITS)
    event = make_event(type="CLUSTER_EVENT_TYPE_LEADER_ELECTED")
    problem = validator.check(event, NOW)
    assert problem == (
        R.REJECTION_REASON_UNKNOWN_TYPE,
        "event type 'CLUSTER_EVENT_TYPE_LEADER_ELECTED' is ambiguous: it matches "
        f"{LEADER_ELECTED}, acme.v1.AcmeEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED: give the "
        "qualified name",
    )
    assert event.type == "CLUSTER_EVENT_TYPE_LEADER_ELECTED"  # left as sent


def test_malformed_batches(validator: Validator) -> None:
    with pytest.raises(MalformedBatchError, match="the batch has no events"):
        validator.check_batch(0)
    with pytest.raises(MalformedBatchError, match="the batch has 11 events; the limit is 10"):
        validator.check_batch(11)
    validator.check_batch(10)


# JSON-like values as a Struct holds them: numbers are doubles.
def json_values(text: st.SearchStrategy[str], numbers: st.SearchStrategy[float]) -> Any:
    leaves = st.none() | st.booleans() | numbers | text
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=12,
    )


STORABLE = json_values(
    st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)


@given(st.dictionaries(st.text(max_size=8).filter(lambda k: "\x00" not in k), STORABLE))
def test_data_without_nul_nan_or_infinity_is_accepted(data: dict[str, Any]) -> None:
    validator = Validator(Registry.builtin())
    assert validator.check(make_event(data=struct_of(data)), NOW) is None


@given(
    st.dictionaries(st.text(max_size=8), STORABLE, max_size=3),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), "a\x00b"]),
    st.lists(st.text(max_size=4), min_size=1, max_size=3),
)
def test_a_nul_nan_or_infinity_anywhere_in_data_is_invalid(
    data: dict[str, Any], bad: Any, path: list[str]
) -> None:
    nested: Any = bad
    for key in reversed(path):
        nested = {key: [nested]} if len(key) % 2 else {key: nested}
    data = {**data, "bad": nested}
    problem = Validator(Registry.builtin()).check(make_event(data=struct_of(data)), NOW)
    assert problem is not None
    assert problem[0] == R.REJECTION_REASON_INVALID_VALUE


def spellings(value: uuid.UUID) -> list[str]:
    """The ways of writing a UUID that uuid.UUID reads, the canonical text first."""
    text = str(value)
    return [text, text.upper(), "{" + text + "}", value.urn, value.hex, value.hex.upper()]


@given(st.uuids())
def test_only_the_canonical_text_of_a_uuid_is_a_valid_id(value: uuid.UUID) -> None:
    canonical, *others = spellings(value)
    validator = Validator(Registry.builtin())
    assert validator.check(make_event(id=canonical), NOW) is None
    for other in others:
        problem = validator.check(make_event(id=other), NOW)
        assert problem == (
            R.REJECTION_REASON_INVALID_ID,
            f"id {other!r} is not canonical: use {canonical!r} (lower case, hyphenated)",
        )


@given(st.uuids())
def test_every_spelling_of_a_uuid_maps_to_its_canonical_text(value: uuid.UUID) -> None:
    assert {ids.canonical(text) for text in spellings(value)} == {str(value)}


@given(st.text(max_size=50) | st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()))
def test_text_is_canonical_exactly_when_it_is_what_str_of_its_uuid_gives(text: str) -> None:
    try:
        parsed: str | None = str(uuid.UUID(text))
    except ValueError:
        parsed = None
    assert ids.is_canonical(text) == (parsed == text)
    mapped = ids.canonical(text)
    assert mapped is None or mapped == parsed  # never a UUID uuid.UUID would not read
    if mapped is not None:
        assert not any(c.isspace() or c in "+_" for c in text)
