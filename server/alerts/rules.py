"""The `[alerts]` table of the config file (`[[alerts.rules]]`, `[[alerts.receivers]]`) and the
one-key default `alert_min_severity`, parsed into typed, validated alert rules.

Every rule whose matchers all hold takes an event (each rule is its own Alertmanager route
with `continue: true`). A forced alert (`Event.alert`) skips the severity matcher only: it goes
through every rule whose other matchers hold, and when none does, through the `forced` rule to
the default receiver, so it is never dropped for want of a rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from protoevents.proxy.alerts.durations import format_duration, parse_duration
from protoevents.proxy.sources import pattern_problem
from protoevents.recorder.registry import Registry, parse_severity, severity_name
from protoevents.v1 import event_pb2

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RECEIVER_KINDS = ("webhook", "email", "syslog")
# The fields an event is grouped by; `attributes.X` groups by attribute X, `...` by all.
GROUP_FIELDS = (
    "type",
    "severity",
    "category",
    "node",
    "component",
    "object_kind",
    "object_namespace",
    "object_name",
    "site",
)
ALL = "..."
RULE_KEYS = (
    "name",
    "min_severity",
    "types",
    "categories",
    "sources",
    "object",
    "attributes",
    "sites",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "receivers",
    "annotations",
)
ALERTS_KEYS = ("rules", "receivers", "receiver", "resolve_timeout", "max_events")
OBJECT_KEYS = ("kind", "namespace", "name")
DEFAULT_RULE = "default"  # the rule `alert_min_severity` makes
FORCED_RULE = "forced"  # the rule of forced alerts no other rule takes
DEFAULT_MIN_SEVERITY = "ERROR"


class RuleConfigError(ValueError):
    """A bad alert setting; the message names the rule (index and name) or receiver and the key."""

    def __init__(self, where: str, key: str, value: object, why: str) -> None:
        super().__init__(f"{where}: {key} = {value!r}: {why}")
        self.where = where
        self.key = key


class _KeyError(ValueError):
    """A bad key of one table, before the table's label is known to the message."""

    def __init__(self, key: str, value: object, why: str) -> None:
        super().__init__(why)
        self.key = key
        self.value = value


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One rule: which stored events alert (all given matchers must hold, empty ones pass
    everything), how they are grouped and timed (seconds; Alertmanager's meanings and
    defaults), and the receivers its notifications go to."""

    name: str
    receivers: tuple[str, ...]
    min_severity: int = 0
    types: frozenset[str] = field(default_factory=frozenset)  # qualified names
    categories: frozenset[str] = field(default_factory=frozenset)
    sources: tuple[tuple[str, str], ...] = ()  # (node glob, component glob)
    object_kind: str = ""
    object_namespace: str = ""
    object_name: str = ""
    attributes: tuple[tuple[str, str], ...] = ()  # exact key = value pairs
    sites: frozenset[str] | None = None  # None: any site; "" is the proxy's own events
    group_by: tuple[str, ...] = ()  # () puts all the rule's events in one group
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 4 * 3600.0
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)

    def matches(self, event: event_pb2.Event, *, forced: bool = False) -> bool:
        """Whether `event` alerts through this rule; a forced alert skips `min_severity`."""
        if not forced and event.severity < self.min_severity:
            return False
        if self.types and event.type not in self.types:
            return False
        if self.categories and event.category not in self.categories:
            return False
        if self.sources and not any(
            fnmatchcase(event.source.node, node) and fnmatchcase(event.source.component, comp)
            for node, comp in self.sources
        ):
            return False
        ref = event.object
        if (
            (self.object_kind and ref.kind != self.object_kind)
            or (self.object_namespace and ref.namespace != self.object_namespace)
            or (self.object_name and ref.name != self.object_name)
        ):
            return False
        if self.sites is not None and event.site not in self.sites:
            return False
        attributes = event.attributes
        return all(key in attributes and attributes[key] == v for key, v in self.attributes)

    def group_labels(self, event: event_pb2.Event) -> dict[str, str]:
        """The `group_by` fields of `event` and their values (empty values left out, as
        Alertmanager leaves out a missing label)."""
        labels = event_labels(event)
        if self.group_by == (ALL,):
            return labels
        return {name: labels[name] for name in self.group_by if labels.get(name)}


def event_labels(event: event_pb2.Event) -> dict[str, str]:
    """Every field an event can be grouped or silenced by, with its value (empty ones left
    out): what `group_by = ["..."]` groups by."""
    ref = event.object
    values = {
        "type": event.type,
        "severity": severity_name(event.severity),
        "category": event.category,
        "node": event.source.node,
        "component": event.source.component,
        "object_kind": ref.kind,
        "object_namespace": ref.namespace,
        "object_name": ref.name,
        "site": event.site,
    }
    labels = {name: value for name, value in values.items() if value}
    for key, value in sorted(event.attributes.items()):
        if value:
            labels[f"attributes.{key}"] = value
    return labels


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """One `[[alerts.receivers]]` table: its name, its kind, and the kind's options as given
    (the receiver of that kind validates them)."""

    name: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """The proxy's alerting: its rules, receivers, the default receiver, the rule forced
    alerts take when no other does, how long a quiet group stays open (`resolve_timeout`,
    Alertmanager's default 5m) and the most events a notification holds."""

    rules: tuple[AlertRule, ...] = ()
    receivers: tuple[ReceiverConfig, ...] = ()
    default_receiver: str | None = None
    forced_rule: AlertRule | None = None
    resolve_timeout: float = 300.0
    max_events: int = 100

    @property
    def enabled(self) -> bool:
        return bool(self.rules or self.forced_rule)


def _strings(key: str, raw: object, *, empty: bool = False) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(
        isinstance(item, str) and (item or empty) for item in raw
    ):
        raise _KeyError(key, raw, "expected a string or a list of non-empty strings")
    return tuple(raw)


def _string_table(key: str, raw: object) -> dict[str, str]:
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in raw.items()
    ):
        raise _KeyError(key, raw, 'expected a table of strings, such as {nic = "eth0"}')
    return dict(raw)


def _duration(key: str, raw: object, *, positive: bool) -> float:
    try:
        if not isinstance(raw, str):
            raise ValueError("expected a duration string such as 30s, 5m or 4h")
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise _KeyError(key, raw, str(exc)) from None
    if positive and seconds <= 0:
        raise _KeyError(key, raw, "must be more than 0s")
    return seconds


def _severity(key: str, raw: object) -> int:
    try:
        if not isinstance(raw, str):
            raise ValueError("expected a severity name such as ERROR")
        return parse_severity(raw)
    except ValueError as exc:
        raise _KeyError(key, raw, str(exc)) from None


def _group_by(raw: object) -> tuple[str, ...]:
    names = _strings("group_by", raw)
    if ALL in names:
        if len(names) > 1:
            raise _KeyError("group_by", raw, f"{ALL!r} (every field) stands alone")
        return names
    for name in names:
        attribute = name.removeprefix("attributes.")
        if name not in GROUP_FIELDS and not (name.startswith("attributes.") and attribute):
            known = ", ".join([*GROUP_FIELDS, "attributes.NAME", ALL])
            raise _KeyError("group_by", raw, f"unknown field {name!r}; known: {known}")
    if len(set(names)) < len(names):
        raise _KeyError("group_by", raw, "names a field twice")
    return names


def _types(raw: object, registry: Registry) -> frozenset[str]:
    qualified: set[str] = set()
    for name in _strings("types", raw):
        try:
            qualified.add(registry.lookup(name).name)
        except KeyError as exc:
            raise _KeyError("types", raw, str(exc.args[0])) from None
    return frozenset(qualified)


def _object(raw: object) -> dict[str, str]:
    table = _string_table("object", raw)
    for key in table:
        if key not in OBJECT_KEYS:
            raise _KeyError("object", raw, f"unknown key {key!r}; known: {', '.join(OBJECT_KEYS)}")
    return table


def _sources(raw: object) -> tuple[tuple[str, str], ...]:
    patterns = _strings("sources", raw)
    for pattern in patterns:
        problem = pattern_problem(pattern)
        if problem is not None:
            raise _KeyError("sources", raw, problem)
    return tuple((node, comp) for node, _, comp in (p.partition("/") for p in patterns))


def _receiver_names(raw: object, known: Sequence[str]) -> tuple[str, ...]:
    names = _strings("receivers", raw)
    if not names:
        raise _KeyError("receivers", raw, "name at least one receiver")
    for name in names:
        if name not in known:
            listed = ", ".join(known) or "none: declare [[alerts.receivers]]"
            raise _KeyError("receivers", raw, f"no receiver named {name!r} (receivers: {listed})")
    return tuple(dict.fromkeys(names))


def parse_rule(
    table: Mapping[str, Any],
    *,
    registry: Registry,
    receivers: Sequence[str],
    default_receiver: str | None,
) -> AlertRule:
    """One `[[alerts.rules]]` table; raises _KeyError naming the key."""
    for key, raw in table.items():
        if key not in RULE_KEYS:
            raise _KeyError(key, raw, f"unknown key for a rule; known: {', '.join(RULE_KEYS)}")
    name = table.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise _KeyError("name", name, "expected letters, digits, '_', '.' or '-' (at most 64)")
    if "receivers" in table:
        names = _receiver_names(table["receivers"], receivers)
    elif default_receiver is not None:
        names = (default_receiver,)
    else:
        listed = ", ".join(receivers) or "none"
        why = f"required: no default receiver (set alerts.receiver; receivers: {listed})"
        raise _KeyError("receivers", None, why)
    ref = _object(table["object"]) if "object" in table else {}
    get = table.get
    group_wait = _duration("group_wait", get("group_wait", "30s"), positive=False)
    group_interval = _duration("group_interval", get("group_interval", "5m"), positive=True)
    repeat_interval = _duration("repeat_interval", get("repeat_interval", "4h"), positive=True)
    return AlertRule(
        name=name,
        receivers=names,
        min_severity=_severity("min_severity", table["min_severity"])
        if "min_severity" in table
        else 0,
        types=_types(table["types"], registry) if "types" in table else frozenset(),
        categories=frozenset(_strings("categories", get("categories", []))),
        sources=_sources(table["sources"]) if "sources" in table else (),
        object_kind=ref.get("kind", ""),
        object_namespace=ref.get("namespace", ""),
        object_name=ref.get("name", ""),
        attributes=tuple(sorted(_string_table("attributes", get("attributes", {})).items())),
        sites=frozenset(_strings("sites", table["sites"], empty=True))
        if "sites" in table
        else None,
        group_by=_group_by(get("group_by", [])),
        group_wait=group_wait,
        group_interval=group_interval,
        repeat_interval=repeat_interval,
        annotations=_string_table("annotations", get("annotations", {})),
    )


def _label(section: str, index: int, table: Mapping[str, Any]) -> str:
    label = f"alerts.{section}[{index}]"
    return f"{label} ({table['name']!r})" if "name" in table else label


def _tables(section: str, raw: object) -> list[Mapping[str, Any]]:
    if not isinstance(raw, list) or not all(isinstance(item, Mapping) for item in raw):
        raise RuleConfigError("alerts", section, raw, f"expected tables ([[alerts.{section}]])")
    return list(raw)


def _receiver(table: Mapping[str, Any]) -> ReceiverConfig:
    """One `[[alerts.receivers]]` table; raises _KeyError naming the key."""
    name = table.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise _KeyError("name", name, "expected letters, digits, '_', '.' or '-' (at most 64)")
    kind = table.get("kind")
    if kind not in RECEIVER_KINDS:
        raise _KeyError("kind", kind, f"expected {', '.join(RECEIVER_KINDS)}")
    options = {key: value for key, value in table.items() if key not in ("name", "kind")}
    return ReceiverConfig(name=name, kind=str(kind), options=options)


def _receivers(raw: object) -> tuple[ReceiverConfig, ...]:
    parsed: list[ReceiverConfig] = []
    for index, table in enumerate(_tables("receivers", raw)):
        where = _label("receivers", index, table)
        try:
            receiver = _receiver(table)
        except _KeyError as exc:
            raise RuleConfigError(where, exc.key, exc.value, str(exc)) from None
        if any(other.name == receiver.name for other in parsed):
            raise RuleConfigError(where, "name", receiver.name, "another receiver has this name")
        parsed.append(receiver)
    return tuple(parsed)


def _default_receiver(alerts: Mapping[str, Any], names: Sequence[str]) -> str | None:
    if "receiver" not in alerts:
        return names[0] if len(names) == 1 else None
    raw = alerts["receiver"]
    if raw not in names:
        listed = ", ".join(names) or "none: declare [[alerts.receivers]]"
        raise RuleConfigError("alerts", "receiver", raw, f"no such receiver (receivers: {listed})")
    return str(raw)


def parse_alerts(
    alerts: Mapping[str, Any] | None,
    *,
    registry: Registry,
    min_severity: str | None = None,
) -> AlertConfig:
    """The `[alerts]` table and `alert_min_severity` (None: not set) as an AlertConfig;
    raises RuleConfigError naming the rule or receiver and the key.

    Without `[[alerts.rules]]`, or with `alert_min_severity` set, there is a rule named
    `default` taking every event of that severity (default ERROR) and up to the default
    receiver: `alerts.receiver`, or the only receiver. Without receivers alerting is off.
    """
    alerts = alerts or {}
    for key, raw in alerts.items():
        if key not in ALERTS_KEYS:
            why = f"unknown key; known: {', '.join(ALERTS_KEYS)}"
            raise RuleConfigError("alerts", key, raw, why)
    receivers = _receivers(alerts.get("receivers", []))
    names = [receiver.name for receiver in receivers]
    default_receiver = _default_receiver(alerts, names)
    try:
        resolve_timeout = _duration(
            "resolve_timeout", alerts.get("resolve_timeout", "5m"), positive=True
        )
    except _KeyError as exc:
        raise RuleConfigError("alerts", exc.key, exc.value, str(exc)) from None
    max_events = alerts.get("max_events", 100)
    if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
        raise RuleConfigError("alerts", "max_events", max_events, "expected an integer above 0")
    rules: list[AlertRule] = []
    for index, table in enumerate(_tables("rules", alerts.get("rules", []))):
        where = _label("rules", index, table)
        try:
            rule = parse_rule(
                table, registry=registry, receivers=names, default_receiver=default_receiver
            )
        except _KeyError as exc:
            raise RuleConfigError(where, exc.key, exc.value, str(exc)) from None
        if rule.name in (other.name for other in rules) or rule.name == FORCED_RULE:
            why = "another rule has this name" if rule.name != FORCED_RULE else "reserved"
            raise RuleConfigError(where, "name", rule.name, why)
        rules.append(rule)
    if min_severity is not None or not rules:
        default = _default_rule(min_severity, receivers, default_receiver, rules)
        rules.extend(default)
    forced = None
    if default_receiver is not None:
        forced = AlertRule(name=FORCED_RULE, receivers=(default_receiver,))
    return AlertConfig(
        rules=tuple(rules),
        receivers=receivers,
        default_receiver=default_receiver,
        forced_rule=forced,
        resolve_timeout=resolve_timeout,
        max_events=max_events,
    )


def _default_rule(
    min_severity: str | None,
    receivers: Sequence[ReceiverConfig],
    default_receiver: str | None,
    rules: Sequence[AlertRule],
) -> list[AlertRule]:
    """The rule of `alert_min_severity` ([] when it is not set and there is no receiver)."""
    where = "alert_min_severity"
    raw = DEFAULT_MIN_SEVERITY if min_severity is None else min_severity
    try:
        severity = _severity(where, raw)
    except _KeyError as exc:
        raise RuleConfigError("setting", where, raw, str(exc)) from None
    if not receivers and min_severity is None:
        return []
    if default_receiver is None:
        listed = ", ".join(r.name for r in receivers) or "none: declare [[alerts.receivers]]"
        why = f"needs a receiver: set alerts.receiver (receivers: {listed})"
        raise RuleConfigError("setting", where, raw, why)
    if any(rule.name == DEFAULT_RULE for rule in rules):
        why = f"makes the rule {DEFAULT_RULE!r}, and a rule of that name is declared"
        raise RuleConfigError("setting", where, raw, why)
    return [AlertRule(name=DEFAULT_RULE, receivers=(default_receiver,), min_severity=severity)]


def describe(rule: AlertRule) -> str:
    """One line saying what `rule` takes and when it notifies, for logs and the CLI."""
    parts = [f"rule {rule.name!r}"]
    if rule.min_severity:
        parts.append(f"severity >= {severity_name(rule.min_severity)}")
    if rule.types:
        parts.append(f"types {', '.join(sorted(rule.types))}")
    if rule.categories:
        parts.append(f"categories {', '.join(sorted(rule.categories))}")
    parts.append(f"group_by [{', '.join(rule.group_by)}]")
    parts.append(
        f"wait {format_duration(rule.group_wait)}, interval {format_duration(rule.group_interval)}"
        f", repeat {format_duration(rule.repeat_interval)}"
    )
    parts.append(f"to {', '.join(rule.receivers)}")
    return "; ".join(parts)
