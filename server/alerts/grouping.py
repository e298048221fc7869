"""Aggregation groups of alerting events and when their notifications are due, with
Alertmanager's timers, on a clock the caller injects; no I/O.

A matching event opens a group of its rule and group labels, or joins the open one. A new
group's first notification is due `group_wait` after it opened (at once when its first event
was received more than `group_wait` ago: a backlog read after a restart). From then on the
group is looked at every `group_interval`: it notifies when it holds events it has not
notified yet, or, unchanged, once more than `repeat_interval` has passed since its last
notification. Each notification holds all the group's events (Alertmanager sends every firing
alert), oldest first, as they stand (a dedup update raises an event's count in place; it is
not a new event), at most `max_events` of them; `truncated` counts the rest.

Events do not resolve as Alertmanager's alerts do, so a group resolves as a whole: at a look
when it has had no event or update for `resolve_timeout` and nothing is left to notify, it
closes without a notification, and the next matching event opens a new group. Sequence
numbers go on from the closed group's, so a key is never used twice.

A group whose events are all silenced still makes its notification, marked silenced (to be
recorded, not sent); silenced events are left out of a notification that has others. Either
way they count as notified: once the silence ends, later events go through, the silenced
ones are not sent after it.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from protoevents.proxy.alerts.model import Notification
from protoevents.proxy.alerts.rules import AlertConfig, AlertRule, event_labels
from protoevents.proxy.changes import UPDATED, Change
from protoevents.v1 import event_pb2

STATE_VERSION = 1
MAX_CLOSED = 100_000  # closed groups whose last sequence number is remembered

Clock = Callable[[], float]
Silenced = Callable[[Mapping[str, str]], bool]
LastSequence = Callable[[str, str], int]


def group_key(labels: Mapping[str, str]) -> str:
    """A short stable key of a group's labels, safe in a header and a Message-ID."""
    text = json.dumps(dict(sorted(labels.items())), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Due:
    """A notification due to one receiver. `silenced`: every event it holds is silenced, so
    it is recorded, not sent; `silenced_events` counts the silenced events left out of it."""

    notification: Notification
    silenced: bool = False
    silenced_events: int = 0


@dataclass(slots=True)
class _Group:
    rule: str
    key: str
    labels: dict[str, str]
    opened: float
    next_look: float
    firing_since: float
    events: dict[str, event_pb2.Event] = field(default_factory=dict)  # oldest first
    overflow: int = 0  # distinct events beyond the `max_events` held
    flushed: bool = False  # Alertmanager's hasFlushed: the first look has happened
    changed: bool = True  # events not notified yet
    last_activity: float = 0.0
    last_sent: float | None = None
    sequence: int = 0  # the last sequence number used

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "key": self.key,
            "labels": self.labels,
            "opened": self.opened,
            "next_look": self.next_look,
            "firing_since": self.firing_since,
            "events": [
                base64.b64encode(event.SerializeToString()).decode()
                for event in self.events.values()
            ],
            "overflow": self.overflow,
            "flushed": self.flushed,
            "changed": self.changed,
            "last_activity": self.last_activity,
            "last_sent": self.last_sent,
            "sequence": self.sequence,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> _Group:
        events: dict[str, event_pb2.Event] = {}
        for text in raw["events"]:
            event = event_pb2.Event.FromString(base64.b64decode(text))
            events[event.id] = event
        last_sent = raw["last_sent"]
        return cls(
            rule=str(raw["rule"]),
            key=str(raw["key"]),
            labels={str(k): str(v) for k, v in raw["labels"].items()},
            opened=float(raw["opened"]),
            next_look=float(raw["next_look"]),
            firing_since=float(raw["firing_since"]),
            events=events,
            overflow=int(raw["overflow"]),
            flushed=bool(raw["flushed"]),
            changed=bool(raw["changed"]),
            last_activity=float(raw["last_activity"]),
            last_sent=None if last_sent is None else float(last_sent),
            sequence=int(raw["sequence"]),
        )


def _received(event: event_pb2.Event) -> float | None:
    stamp = event.received_time
    if not stamp.seconds and not stamp.nanos:
        return None
    return stamp.seconds + stamp.nanos / 1e9


class Grouper:
    """The open groups of every rule, fed matching changes with `add`, asked with `due` for
    the notifications due now; its state (`to_dict`, `from_dict`) resumes the same timers
    and sequence numbers after a restart.

    `clock` gives the time in seconds (time.time's scale: it is compared with the events'
    received times); `silenced(labels)` says whether an event with these labels (`event_labels`)
    is silenced; `last_sequence(rule, group_key)` the last sequence number a group no longer
    remembered used (the notification log knows; default 0).
    """

    def __init__(
        self,
        config: AlertConfig,
        *,
        clock: Clock,
        silenced: Silenced = lambda labels: False,
        last_sequence: LastSequence = lambda rule, key: 0,
    ) -> None:
        self.config = config
        self.clock = clock
        self.silenced = silenced
        self.last_sequence = last_sequence
        self.rules: dict[str, AlertRule] = {rule.name: rule for rule in config.rules}
        if config.forced_rule is not None:
            self.rules[config.forced_rule.name] = config.forced_rule
        self._groups: dict[tuple[str, str], _Group] = {}
        self._closed: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._looks: list[tuple[float, str, str]] = []  # (next_look, rule, key); stale kept

    @property
    def groups(self) -> int:
        """How many groups are open."""
        return len(self._groups)

    def rules_of(self, event: event_pb2.Event) -> list[AlertRule]:
        """The rules `event` alerts through: those whose matchers hold; for a forced alert
        those whose matchers but severity hold, else the forced rule."""
        forced = event.alert
        taken = [rule for rule in self.config.rules if rule.matches(event, forced=forced)]
        if forced and not taken and self.config.forced_rule is not None:
            taken.append(self.config.forced_rule)
        return taken

    def add(self, change: Change) -> None:
        """Take a stored event or a dedup update of one into the groups of its rules."""
        for rule in self.rules_of(change.event):
            self._add(rule, change)

    def add_all(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self.add(change)

    def _add(self, rule: AlertRule, change: Change) -> None:
        event = change.event
        now = self.clock()
        labels = rule.group_labels(event)
        key = group_key(labels)
        group = self._groups.get((rule.name, key))
        if group is None:
            received = _received(event)
            group = _Group(
                rule=rule.name,
                key=key,
                labels=labels,
                opened=now,
                next_look=now + rule.group_wait,
                firing_since=now if received is None else received,
                sequence=self._sequence_of(rule.name, key),
            )
            self._groups[(rule.name, key)] = group
            self._schedule(group)
        group.last_activity = now
        held = group.events.get(event.id)
        if held is not None:
            if event.count >= held.count:
                group.events[event.id] = event
        elif change.kind == UPDATED and group.overflow:
            pass  # most likely an update of an event beyond those held: nothing new
        elif len(group.events) < self.config.max_events:
            group.events[event.id] = event
            group.changed = True
        else:
            group.overflow += 1
            group.changed = True
        # Alertmanager flushes a group at once when its new alert's wait is already over.
        received = _received(event)
        late = received is not None and received + rule.group_wait < now
        if late and not group.flushed and group.next_look > now:
            group.next_look = now
            self._schedule(group)

    def _sequence_of(self, rule: str, key: str) -> int:
        closed = self._closed.pop((rule, key), None)
        return closed if closed is not None else self.last_sequence(rule, key)

    def _schedule(self, group: _Group) -> None:
        heapq.heappush(self._looks, (group.next_look, group.rule, group.key))

    def next_due(self) -> float | None:
        """When the next group is to be looked at (None: no group is open)."""
        while self._looks:
            at, rule, key = self._looks[0]
            group = self._groups.get((rule, key))
            if group is not None and group.next_look == at:
                return at
            heapq.heappop(self._looks)
        return None

    def due(self) -> list[Due]:
        """The notifications due now, per group oldest look first, one per receiver; the
        groups looked at are set to their next look."""
        now = self.clock()
        found: list[Due] = []
        while (at := self.next_due()) is not None and at <= now:
            _, rule_name, key = heapq.heappop(self._looks)
            group = self._groups[(rule_name, key)]
            rule = self.rules.get(rule_name)
            if rule is None:  # the rule is no longer configured
                self._close(group)
                continue
            found.extend(self._look(rule, group, now))
        return found

    def _look(self, rule: AlertRule, group: _Group, now: float) -> list[Due]:
        group.flushed = True
        if group.changed:
            notify = True
        elif now - group.last_activity >= self.config.resolve_timeout:
            self._close(group)
            return []
        else:
            # Alertmanager resends once the last notification is older than repeat_interval.
            notify = group.last_sent is not None and group.last_sent < now - rule.repeat_interval
        group.next_look = now + rule.group_interval
        self._schedule(group)
        if not notify:
            return []
        group.sequence += 1
        group.changed = False
        group.last_sent = now
        return self._notifications(rule, group)

    def _notifications(self, rule: AlertRule, group: _Group) -> list[Due]:
        events = list(group.events.values())
        loud = [event for event in events if not self.silenced(event_labels(event))]
        silenced = not loud
        held = tuple(events if silenced else loud)
        since = datetime.fromtimestamp(group.firing_since, UTC)
        return [
            Due(
                notification=Notification(
                    key=f"{rule.name}/{group.key}/{group.sequence}",
                    rule=rule.name,
                    receiver=receiver,
                    group_key=group.key,
                    group_labels=dict(group.labels),
                    events=held,
                    firing_since=since,
                    truncated=group.overflow,
                    extra=dict(rule.annotations),
                ),
                silenced=silenced,
                silenced_events=0 if silenced else len(events) - len(loud),
            )
            for receiver in rule.receivers
        ]

    def _close(self, group: _Group) -> None:
        del self._groups[(group.rule, group.key)]
        self._closed[(group.rule, group.key)] = group.sequence
        while len(self._closed) > MAX_CLOSED:
            self._closed.popitem(last=False)

    def to_dict(self) -> dict[str, Any]:
        """The groups, their timers and sequence numbers as plain JSON values."""
        return {
            "version": STATE_VERSION,
            "groups": [group.to_dict() for group in self._groups.values()],
            "closed": [[rule, key, sequence] for (rule, key), sequence in self._closed.items()],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take the groups of `to_dict`'s `state`, replacing the current ones."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"alert grouping state version {state.get('version')!r} unknown")
        self._groups = {}
        self._looks = []
        for raw in state["groups"]:
            group = _Group.from_dict(raw)
            self._groups[(group.rule, group.key)] = group
            self._schedule(group)
        self._closed = OrderedDict(
            ((str(rule), str(key)), int(sequence)) for rule, key, sequence in state["closed"]
        )

    @classmethod
    def from_dict(
        cls,
        state: Mapping[str, Any],
        config: AlertConfig,
        *,
        clock: Clock,
        silenced: Silenced = lambda labels: False,
        last_sequence: LastSequence = lambda rule, key: 0,
    ) -> Grouper:
        """A Grouper resuming `state` (from `to_dict`) with these rules and clock."""
        grouper = cls(config, clock=clock, silenced=silenced, last_sequence=last_sequence)
        grouper.restore(state)
        return grouper
