"""Alert rules from the `[alerts]` table: matchers, group labels, defaults, and config errors
that name the rule and the key."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from protoevents.proxy.alerts.durations import format_duration, parse_duration
from protoevents.proxy.alerts.rules import (
    AlertRule,
    RuleConfigError,
    event_labels,
    parse_alerts,
)
from protoevents.recorder.registry import Registry
from protoevents.v1 import severity_pb2
from tests.support.events import LEADER_ELECTED, stored_event

REGISTRY = Registry.builtin()
LEADER_LOST = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST"
OPS = {"name": "ops", "kind": "webhook", "url": "http://127.0.0.1:9/hook"}


def alerts(text: str) -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads(text)["alerts"]
    return table


def test_a_full_rule_from_toml() -> None:
    config = parse_alerts(
        alerts(
            """
            [alerts]
            receiver = "ops"
            [[alerts.receivers]]
            name = "ops"
            kind = "webhook"
            url = "http://127.0.0.1:9/hook"
            [[alerts.receivers]]
            name = "mail"
            kind = "email"
            [[alerts.rules]]
            name = "leaders"
            min_severity = "warning"
            types = ["CLUSTER_EVENT_TYPE_LEADER_LOST"]
            categories = ["cluster"]
            sources = ["node-*/cluster-*"]
            object = {kind = "Node"}
            attributes = {zone = "a"}
            sites = ["", "site-a"]
            group_by = ["node", "attributes.zone"]
            group_wait = "10s"
            group_interval = "1m30s"
            repeat_interval = "1d"
            receivers = ["mail", "ops"]
            annotations = {runbook = "https://runbooks/leaders"}
            """
        ),
        registry=REGISTRY,
    )
    (rule,) = config.rules  # rules given, alert_min_severity not: no default rule
    assert rule.types == frozenset({LEADER_LOST})  # resolved to the qualified name
    assert (rule.group_wait, rule.group_interval, rule.repeat_interval) == (10, 90, 86400)
    assert rule.receivers == ("mail", "ops")
    assert rule.sources == (("node-*", "cluster-*"),)
    assert config.receivers[0].options == {"url": "http://127.0.0.1:9/hook"}
    assert config.forced_rule is not None and config.forced_rule.receivers == ("ops",)
    assert hash(config) == hash(config)  # frozen through and through, annotations aside

    event = stored_event(1, type=LEADER_LOST)
    event.severity = severity_pb2.SEVERITY_ERROR
    event.attributes["zone"] = "a"
    assert rule.matches(event)
    assert rule.group_labels(event) == {"node": "node-1", "attributes.zone": "a"}
    for spoil in (
        lambda e: setattr(e, "severity", severity_pb2.SEVERITY_INFO),
        lambda e: setattr(e, "type", LEADER_ELECTED),
        lambda e: setattr(e, "category", "lab"),
        lambda e: setattr(e.source, "component", "scheduler"),
        lambda e: setattr(e.object, "kind", "Nic"),
        lambda e: e.attributes.__setitem__("zone", "b"),
        lambda e: setattr(e, "site", "site-b"),
    ):
        other = type(event)()
        other.CopyFrom(event)
        spoil(other)
        assert not rule.matches(other)
    event.site = "site-a"
    assert rule.matches(event)


def test_the_one_key_default_is_one_rule_of_error_and_up_to_the_only_receiver() -> None:
    config = parse_alerts({"receivers": [OPS]}, registry=REGISTRY)
    (rule,) = config.rules
    assert (rule.name, rule.receivers, rule.min_severity) == (
        "default",
        ("ops",),
        severity_pb2.SEVERITY_ERROR,
    )
    assert (rule.group_wait, rule.group_interval, rule.repeat_interval) == (30, 300, 14400)
    assert rule.group_by == ()
    warning = parse_alerts({"receivers": [OPS]}, registry=REGISTRY, min_severity="WARNING")
    assert warning.rules[0].min_severity == severity_pb2.SEVERITY_WARNING


def test_no_receivers_no_alerting() -> None:
    assert not parse_alerts(None, registry=REGISTRY).enabled
    assert not parse_alerts({}, registry=REGISTRY).enabled


def test_alert_min_severity_beside_rules_adds_the_default_rule() -> None:
    config = parse_alerts(
        {"receivers": [OPS], "rules": [{"name": "lab", "categories": ["lab"]}]},
        registry=REGISTRY,
        min_severity="CRITICAL",
    )
    assert [rule.name for rule in config.rules] == ["lab", "default"]
    assert config.rules[0].receivers == ("ops",)  # the default receiver, as a route inherits


def test_a_forced_alert_skips_severity_only() -> None:
    rule = AlertRule(name="net", receivers=("ops",), min_severity=5, categories=frozenset({"net"}))
    event = stored_event(0, category="net")
    assert not rule.matches(event)
    assert rule.matches(event, forced=True)
    assert not rule.matches(stored_event(0, category="lab"), forced=True)


def test_group_by_all_is_every_field_and_attribute() -> None:
    rule = AlertRule(name="r", receivers=("ops",), group_by=("...",))
    event = stored_event(3)
    assert rule.group_labels(event) == event_labels(event)
    assert event_labels(event) == {
        "type": LEADER_ELECTED,
        "severity": "INFO",
        "category": "cluster",
        "node": "node-3",
        "component": "cluster-controller",
        "object_kind": "Node",
        "object_name": "node-3",
        "attributes.term": "3",
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("30s", 30),
        ("5m", 300),
        ("4h", 14400),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("1w", 604800),
        ("1y2d", 367 * 86400),
        ("2m5s100ms", 125.1),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 m", "1.5h", "5m1h", "-5s", "5M", "1h1h", "s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


RULE = {"name": "disk", "categories": ["storage"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"severity": "ERROR"}, "alerts.rules[1] ('disk'): severity = 'ERROR': unknown key"),
        ({"group_wait": "5 minutes"}, "rules[1] ('disk'): group_wait = '5 minutes': expected a"),
        ({"group_interval": 300}, "('disk'): group_interval = 300: expected a duration string"),
        ({"group_interval": "0s"}, "('disk'): group_interval = '0s': must be more than 0s"),
        ({"repeat_interval": "4hours"}, "('disk'): repeat_interval = '4hours': expected a"),
        ({"receivers": ["pager"]}, "('disk'): receivers = ['pager']: no receiver named 'pager'"),
        ({"receivers": []}, "('disk'): receivers = []: name at least one receiver"),
        ({"types": ["NO_SUCH_TYPE"]}, "('disk'): types = ['NO_SUCH_TYPE']: unknown event type"),
        ({"min_severity": "LOUD"}, "('disk'): min_severity = 'LOUD': unknown severity 'LOUD'"),
        ({"group_by": ["host"]}, "('disk'): group_by = ['host']: unknown field 'host'"),
        ({"group_by": ["...", "node"]}, "('disk'): group_by = ['...', 'node']: '...'"),
        ({"group_by": ["attributes."]}, "('disk'): group_by = ['attributes.']: unknown field"),
        ({"group_by": ["node", "node"]}, "('disk'): group_by = ['node', 'node']: names a field"),
        ({"sources": ["node-1"]}, "('disk'): sources = ['node-1']: 'node-1' is not NODE/COMP"),
        ({"object": {"uid": "x"}}, "('disk'): object = {'uid': 'x'}: unknown key 'uid'"),
        ({"attributes": {"n": 1}}, "('disk'): attributes = {'n': 1}: expected a table of str"),
        ({"categories": [""]}, "('disk'): categories = ['']: expected a string or a list"),
        ({"name": "disk/1"}, "alerts.rules[1] ('disk/1'): name = 'disk/1': expected letters"),
        ({"name": "lab"}, "alerts.rules[1] ('lab'): name = 'lab': another rule has this name"),
        ({"name": "forced"}, "alerts.rules[1] ('forced'): name = 'forced': reserved"),
    ],
)
def test_a_bad_rule_names_the_rule_and_the_key(change: dict[str, Any], message: str) -> None:
    bad = {**RULE, **change}
    with pytest.raises(RuleConfigError, match=_literal(message)) as raised:
        parse_alerts({"receivers": [OPS], "rules": [{"name": "lab"}, bad]}, registry=REGISTRY)
    assert raised.value.where.startswith("alerts.rules[1]")
    assert raised.value.key == next(iter(change))


@pytest.mark.parametrize(
    ("table", "min_severity", "message"),
    [
        ({"rule": []}, None, "alerts: rule = []: unknown key; known: rules, receivers"),
        ({"rules": {"name": "x"}}, None, "alerts: rules = {'name': 'x'}: expected tables"),
        ({"receiver": "pager", "receivers": [OPS]}, None, "alerts: receiver = 'pager': no such"),
        ({"resolve_timeout": "soon"}, None, "alerts: resolve_timeout = 'soon': expected a dura"),
        ({"max_events": 0}, None, "alerts: max_events = 0: expected an integer above 0"),
        ({"receivers": [OPS]}, "LOUD", "setting: alert_min_severity = 'LOUD': unknown severity"),
        ({}, "ERROR", "setting: alert_min_severity = 'ERROR': needs a receiver"),
        (
            {"receivers": [OPS, {**OPS, "name": "mail"}]},
            None,
            "alert_min_severity = 'ERROR': needs a receiver: set alerts.receiver (receivers: "
            "ops, mail)",
        ),
        (
            {"receivers": [OPS, {**OPS, "name": "mail"}], "rules": [{"name": "r"}]},
            None,
            "alerts.rules[0] ('r'): receivers = None: required: no default receiver",
        ),
        (
            {"receivers": [{"name": "ops", "kind": "pager"}]},
            None,
            "alerts.receivers[0] ('ops'): kind = 'pager': expected webhook, email, syslog",
        ),
        ({"receivers": [OPS, OPS]}, None, "receivers[1] ('ops'): name = 'ops': another receiver"),
        (
            {"receivers": [OPS], "rules": [{"name": "default"}]},
            "ERROR",
            "alert_min_severity = 'ERROR': makes the rule 'default', and a rule of that name",
        ),
    ],
)
def test_bad_alert_settings_name_where_and_the_key(
    table: dict[str, Any], min_severity: str | None, message: str
) -> None:
    with pytest.raises(RuleConfigError, match=_literal(message)):
        parse_alerts(table, registry=REGISTRY, min_severity=min_severity)


def _literal(text: str) -> str:
    import re

    return re.escape(text)
