"""The registry built from the built-in event-type enums."""

from __future__ import annotations

import dataclasses

import pytest

from protoevents.cluster.v1 import cluster_events_pb2
from protoevents.nic.v1 import nic_events_pb2
from protoevents.recorder.registry import Registry, RegistryError, parse_severity
from protoevents.v1 import severity_pb2

LEADER_ELECTED = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED"


def test_builtin_types_carry_their_declared_attributes() -> None:
    registry = Registry.builtin()
    leader = registry.lookup(LEADER_ELECTED)
    assert leader.number == cluster_events_pb2.CLUSTER_EVENT_TYPE_LEADER_ELECTED
    assert leader.severity == severity_pb2.SEVERITY_INFO
    assert leader.category == "cluster"
    assert leader.description == "A node was elected leader of the cluster."
    assert leader.service == "cluster"
    assert leader.enum_name == "protoevents.cluster.v1.ClusterEventType"


def test_every_builtin_service_is_present_with_complete_declarations() -> None:
    registry = Registry.builtin()
    assert registry.services == ["cluster", "instrument", "lab", "node-agent"]
    assert len(registry) == 21
    for event_type in registry:
        assert event_type.severity != severity_pb2.SEVERITY_UNSPECIFIED
        assert event_type.description and event_type.category


def test_enum_option_names_the_owning_service() -> None:
    nic = Registry.from_enums([nic_events_pb2.NicEventType])
    assert {t.service for t in nic} == {"node-agent"}


def test_zero_values_are_not_event_types() -> None:
    registry = Registry.builtin()
    assert "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_UNSPECIFIED" not in registry
    assert registry.in_enum("protoevents.cluster.v1.ClusterEventType", 0) is None


def test_lookup_accepts_an_unambiguous_value_name() -> None:
    registry = Registry.builtin()
    assert registry.lookup("CLUSTER_EVENT_TYPE_LEADER_ELECTED").name == LEADER_ELECTED


def test_lookup_of_an_unknown_name_lists_the_known_enums() -> None:
    with pytest.raises(KeyError, match=r"unknown event type 'NOPE'.*ClusterEventType"):
        Registry.builtin().lookup("NOPE")


def test_select_filters_by_category_and_service() -> None:
    registry = Registry.builtin()
    workflow = registry.select(category="workflow")
    assert [t.short_name for t in workflow] == [
        "LAB_EVENT_TYPE_WORKFLOW_STARTED",
        "LAB_EVENT_TYPE_WORKFLOW_COMPLETED",
        "LAB_EVENT_TYPE_WORKFLOW_FAILED",
        "LAB_EVENT_TYPE_ACTION_FAILED",
    ]
    assert registry.select(service="lab", category="lab")[0].short_name == (
        "LAB_EVENT_TYPE_NODE_CREATED"
    )


def test_a_plain_enum_is_refused_as_event_enum() -> None:
    with pytest.raises(RegistryError, match="not an event-type enum"):
        Registry.from_enums([severity_pb2.Severity])


def test_the_same_type_registered_twice_is_one_type() -> None:
    registry = Registry.builtin().merged(Registry.builtin())
    assert len(registry) == 21


def test_duplicate_name_with_other_attributes_is_refused() -> None:
    registry = Registry.builtin()
    leader = registry.lookup(LEADER_ELECTED)
    forged = dataclasses.replace(leader, severity=severity_pb2.SEVERITY_ERROR)
    with pytest.raises(RegistryError, match="duplicate event type"):
        registry.merged(Registry([forged]))


@pytest.mark.parametrize(
    ("text", "value"),
    [("info", severity_pb2.SEVERITY_INFO), ("SEVERITY_CRITICAL", severity_pb2.SEVERITY_CRITICAL)],
)
def test_parse_severity(text: str, value: int) -> None:
    assert parse_severity(text) == value


@pytest.mark.parametrize("text", ["unspecified", "fatal", ""])
def test_parse_severity_refuses_unknown_names(text: str) -> None:
    with pytest.raises(ValueError, match="unknown severity"):
        parse_severity(text)
