"""Aggregation groups on a clock the test moves: group_wait holds the first notification,
group_interval batches later events, repeat_interval resends an unchanged group, and quiet
groups close; sequence numbers only grow."""

from __future__ import annotations

import json
from collections.abc import Mapping

from protoevents.proxy.alerts.grouping import Due, Grouper
from protoevents.proxy.alerts.rules import AlertConfig, AlertRule
from protoevents.v1 import severity_pb2
from tests.support.alert_clock import FakeClock, created, forced, updated

RULE = AlertRule(name="cluster", receivers=("ops",), categories=frozenset({"cluster"}))


def grouper(*rules: AlertRule, clock: FakeClock, **options: object) -> Grouper:
    config = AlertConfig(
        rules=rules or (RULE,), forced_rule=AlertRule(name="forced", receivers=("ops",))
    )
    silenced = options.pop("silenced", None)
    if options:
        config = AlertConfig(**{**_fields(config), **options})  # type: ignore[arg-type]
    if silenced is None:
        return Grouper(config, clock=clock)
    return Grouper(config, clock=clock, silenced=silenced)  # type: ignore[arg-type]


def _fields(config: AlertConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def keys(found: list[Due]) -> list[str]:
    return [due.notification.key for due in found]


def test_group_wait_holds_the_first_notification() -> None:
    clock = FakeClock()
    groups = grouper(clock=clock)
    first = created(clock, 1)
    groups.add(first)
    assert groups.next_due() == clock.now + 30
    clock.advance(10)
    groups.add(created(clock, 2))  # joins the group (no group_by): no wait of its own
    clock.advance(19.9)
    assert groups.due() == []
    clock.advance(0.1)
    (due,) = groups.due()
    note = due.notification
    assert note.key == f"cluster/{note.group_key}/1"
    assert (note.rule, note.receiver, note.group_labels, note.truncated) == (
        "cluster",
        "ops",
        {},
        0,
    )
    assert [event.attributes["term"] for event in note.events] == ["1", "2"]  # oldest first
    assert note.firing_since.timestamp() == first.event.received_time.ToNanoseconds() / 1e9
    assert not due.silenced
    assert groups.due() == []  # looked at: next at group_interval
    assert groups.next_due() == clock.now + 300


def test_group_interval_batches_later_events_and_repeats_nothing_unchanged() -> None:
    clock = FakeClock()
    groups = grouper(clock=clock)
    groups.add(created(clock, 1))
    clock.advance(30)
    assert len(groups.due()) == 1
    for n in (2, 3):
        clock.advance(60)
        groups.add(created(clock, n))
        assert groups.due() == []
    clock.advance(180)  # 300 s after the first notification
    (due,) = groups.due()
    assert due.notification.key.endswith("/2")
    assert [e.attributes["term"] for e in due.notification.events] == ["1", "2", "3"]
    clock.advance(300)  # nothing new, and quiet for resolve_timeout: the group closes
    assert groups.due() == []
    assert groups.groups == 0


def test_repeat_interval_resends_an_unchanged_group_that_stays_active() -> None:
    clock = FakeClock()
    groups = grouper(clock=clock)
    first = created(clock, 1)
    groups.add(first)
    clock.advance(30)
    sent_at = clock.now
    assert keys(groups.due())[0].endswith("/1")
    count = 1
    resent: list[Due] = []
    while not resent:
        clock.advance(60)
        count += 1
        groups.add(updated(first, count))  # the event repeats: the group stays open
        resent = groups.due()
        assert resent == [] or clock.now - sent_at > 4 * 3600
    # The first look more than repeat_interval after the last notification (Alertmanager's
    # strict comparison): 4h05m after it with a 5m group_interval.
    assert clock.now - sent_at == 4 * 3600 + 300
    (due,) = resent
    assert due.notification.key.endswith("/2")
    (event,) = due.notification.events  # the update changed the count, not the events
    assert event.count == count
    assert event.id == first.event.id


def test_a_closed_group_reopens_with_its_wait_and_the_next_sequence() -> None:
    clock = FakeClock()
    groups = grouper(clock=clock)
    groups.add(created(clock, 1))
    clock.advance(30)
    (first,) = groups.due()
    clock.advance(600)
    assert groups.due() == [] and groups.groups == 0
    groups.add(created(clock, 2))
    clock.advance(29)
    assert groups.due() == []
    clock.advance(1)
    (second,) = groups.due()
    assert second.notification.group_key == first.notification.group_key
    assert second.notification.key.endswith("/2")
    assert [e.attributes["term"] for e in second.notification.events] == ["2"]


def test_group_by_splits_into_groups_with_their_own_timers_and_sequences() -> None:
    clock = FakeClock()
    rule = AlertRule(
        name="cluster",
        receivers=("ops", "mail"),
        categories=frozenset({"cluster"}),
        group_by=("node",),
        group_wait=10,
    )
    groups = grouper(rule, clock=clock)
    groups.add(created(clock, 0))  # node-0
    clock.advance(5)
    groups.add(created(clock, 1))  # node-1
    groups.add(created(clock, 5))  # node-0 again (n % 5)
    clock.advance(5)
    found = groups.due()
    assert [(d.notification.group_labels, d.notification.receiver) for d in found] == [
        ({"node": "node-0"}, "ops"),
        ({"node": "node-0"}, "mail"),
    ]
    assert found[0].notification.key == found[1].notification.key  # one key, each receiver
    assert len(found[0].notification.events) == 2
    clock.advance(5)
    later = groups.due()
    assert [d.notification.group_labels for d in later] == [{"node": "node-1"}] * 2
    assert later[0].notification.key.endswith("/1")
    assert later[0].notification.group_key != found[0].notification.group_key


def test_an_update_raises_the_count_in_place() -> None:
    clock = FakeClock()
    groups = grouper(clock=clock)
    first = created(clock, 1)
    groups.add(first)
    groups.add(updated(first, 5))
    groups.add(updated(first, 3))  # an older update replayed: counts only grow
    groups.add(first)  # a replay of the first event
    clock.advance(30)
    (due,) = groups.due()
    (event,) = due.notification.events
    assert event.count == 5


def test_an_event_received_long_ago_flushes_at_once() -> None:
    clock = FakeClock()
    old = created(clock, 1)
    clock.advance(3600)  # read from the log after a restart, an hour after it was received
    groups = grouper(clock=clock)
    groups.add(old)
    (due,) = groups.due()
    assert due.notification.key.endswith("/1")


def test_a_notification_holds_at_most_max_events_and_counts_the_rest() -> None:
    clock = FakeClock()
    groups = grouper(clock=clock, max_events=3)
    changes = [created(clock, n) for n in range(5)]
    for change in changes:
        groups.add(change)
    groups.add(updated(changes[4], 2))  # an update of an event beyond those held
    clock.advance(30)
    (due,) = groups.due()
    assert [e.attributes["term"] for e in due.notification.events] == ["0", "1", "2"]
    assert due.notification.truncated == 2


def test_100000_events_into_one_group_make_a_bounded_number_of_notifications() -> None:
    clock = FakeClock()
    groups = grouper(clock=clock)
    notified: list[Due] = []
    for n in range(100_000):
        groups.add(created(clock, n))
        if n % 100 == 0:
            clock.advance(1)  # 1,000 s of events, 100 a second
            notified.extend(groups.due())
    clock.advance(3600)
    notified.extend(groups.due())
    # The first after group_wait (30 s), then one per group_interval while new events came
    # (330, 630, 930 s), and the last for those after 930 s.
    group = notified[0].notification.group_key
    assert keys(notified) == [f"cluster/{group}/{sequence}" for sequence in range(1, 6)]
    assert all(len(d.notification.events) == 100 for d in notified)
    assert notified[-1].notification.truncated == 100_000 - 100


def test_silenced_events_are_marked_not_dropped_and_later_ones_go_through() -> None:
    clock = FakeClock()
    silence = {"active": True}

    def silenced(labels: Mapping[str, str]) -> bool:
        return silence["active"] and labels.get("node") == "node-1"

    groups = grouper(clock=clock, silenced=silenced)
    groups.add(created(clock, 1))
    clock.advance(30)
    (due,) = groups.due()
    assert due.silenced and len(due.notification.events) == 1  # recorded as silenced
    assert due.notification.key.endswith("/1")
    groups.add(created(clock, 2))
    groups.add(created(clock, 6))  # node-1, silenced
    clock.advance(300)
    (due,) = groups.due()
    assert not due.silenced and due.silenced_events == 2
    assert [e.attributes["term"] for e in due.notification.events] == ["2"]
    silence["active"] = False
    groups.add(created(clock, 11))  # node-1 once the silence ended
    clock.advance(300)
    (due,) = groups.due()
    assert not due.silenced and due.silenced_events == 0
    assert len(due.notification.events) == 4


def test_a_forced_alert_takes_the_rules_but_their_severity_else_the_forced_rule() -> None:
    clock = FakeClock()
    errors = AlertRule(
        name="errors",
        receivers=("ops",),
        min_severity=severity_pb2.SEVERITY_ERROR,
        categories=frozenset({"cluster"}),
    )
    groups = grouper(errors, clock=clock)
    plain = created(clock, 1)  # INFO: no rule takes it
    groups.add(plain)
    assert groups.groups == 0
    groups.add(forced(created(clock, 2)))
    groups.add(forced(created(clock, 3, category="lab")))  # no rule's matchers hold
    clock.advance(30)
    assert sorted(d.notification.rule for d in groups.due()) == ["errors", "forced"]


def test_state_round_trip_resumes_timers_and_sequences() -> None:
    clock = FakeClock()
    groups = grouper(clock=clock)
    first = created(clock, 1)
    groups.add(first)
    clock.advance(30)
    groups.due()
    clock.advance(100)
    groups.add(created(clock, 2))
    state = json.loads(json.dumps(groups.to_dict()))
    resumed = Grouper.from_dict(state, groups.config, clock=clock)
    assert resumed.to_dict() == groups.to_dict()
    assert resumed.next_due() == groups.next_due()
    clock.advance(200)
    assert [d.notification for d in resumed.due()] == [d.notification for d in groups.due()]


def test_a_group_of_a_rule_no_longer_configured_closes() -> None:
    clock = FakeClock()
    groups = grouper(clock=clock)
    groups.add(created(clock, 1))
    other = AlertRule(name="other", receivers=("ops",))
    resumed = Grouper.from_dict(groups.to_dict(), AlertConfig(rules=(other,)), clock=clock)
    clock.advance(30)
    assert resumed.due() == []
    assert resumed.groups == 0
