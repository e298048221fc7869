"""Properties of grouping over random feeds of events, updates and clock moves: a restart
from the serialized state decides exactly as an uninterrupted run, and notifications keep
their bounds (events held, spacing, sequence numbers)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from protoevents.proxy.alerts.grouping import Due, Grouper
from protoevents.proxy.alerts.rules import AlertConfig, AlertRule
from protoevents.proxy.changes import Change
from tests.support.alert_clock import FakeClock, created, updated

RULE = AlertRule(
    name="nodes",
    receivers=("ops",),
    group_by=("node",),
    group_wait=30,
    group_interval=60,
    repeat_interval=600,
)
CONFIG = AlertConfig(rules=(RULE,), resolve_timeout=120, max_events=3)

# ("new", n): a new event of node n % 5; ("update", i): a repeat of the i-th event so far;
# ("advance", s): the clock moves s seconds; ("look",): the engine asks what is due.
OPERATION = st.one_of(
    st.tuples(st.just("new"), st.integers(0, 9)),
    st.tuples(st.just("update"), st.integers(0, 50)),
    st.tuples(st.just("advance"), st.integers(0, 400)),
    st.tuples(st.just("look")),
)
OPERATIONS = st.lists(OPERATION, max_size=60)


def silenced(labels: Mapping[str, str]) -> bool:
    return labels.get("node") == "node-2"


def run(operations: Sequence[tuple[Any, ...]], restart_at: int | None) -> list[tuple[Any, ...]]:
    """The decisions of a grouper fed `operations`, restarted from its JSON state before
    operation `restart_at` (None: never)."""
    clock = FakeClock()
    grouper = Grouper(CONFIG, clock=clock, silenced=silenced)
    events: list[Change] = []
    counts: dict[str, int] = {}
    decisions: list[tuple[Any, ...]] = []
    for index, operation in enumerate(operations):
        if index == restart_at:
            state = json.loads(json.dumps(grouper.to_dict()))
            grouper = Grouper.from_dict(state, CONFIG, clock=clock, silenced=silenced)
        match operation:
            case ("new", n):
                change = created(clock, n)
                change.event.id = f"00000000-0000-4000-8000-{len(events):012d}"
                events.append(change)
                counts[change.event.id] = 1
                grouper.add(change)
            case ("update", i) if events:
                first = events[i % len(events)]
                counts[first.event.id] += 1
                grouper.add(updated(first, counts[first.event.id]))
            case ("advance", seconds):
                clock.advance(seconds)
            case ("look",):
                decisions.extend(describe(due, clock.now) for due in grouper.due())
    clock.advance(10_000)
    decisions.extend(describe(due, clock.now) for due in grouper.due())
    return decisions


def describe(due: Due, now: float) -> tuple[Any, ...]:
    note = due.notification
    events = tuple((event.id, event.count, event.source.node) for event in note.events)
    return (now, note.key, note.group_key, events, note.truncated, due.silenced)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS, st.integers(0, 60))
@example([("new", 0), ("advance", 30), ("look",), ("new", 5), ("advance", 60), ("look",)], 3)
def test_a_restart_from_the_state_decides_as_an_uninterrupted_run(
    operations: list[tuple[Any, ...]], restart_at: int
) -> None:
    assert run(operations, restart_at) == run(operations, None)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_notifications_keep_their_bounds(operations: list[tuple[Any, ...]]) -> None:
    last: dict[str, tuple[float, int]] = {}
    for now, key, group, events, truncated, is_silenced in run(operations, None):
        sequence = int(key.rsplit("/", 1)[1])
        previous_at, previous_sequence = last.get(group, (None, 0))
        assert sequence == previous_sequence + 1  # never reused, never skipped
        if previous_at is not None:  # never more often than group_interval
            assert now - previous_at >= RULE.group_interval
        last[group] = (now, sequence)
        assert 1 <= len(events) <= CONFIG.max_events
        assert len({event_id for event_id, _, _ in events}) == len(events)
        assert len({node for _, _, node in events}) == 1  # one group, one node
        assert truncated >= 0
        # Marked, not dropped: a silenced notification holds only silenced events, and
        # silenced events are left out of the others.
        assert all((node == "node-2") == is_silenced for _, _, node in events)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50), max_size=80))
def test_updates_change_counts_never_the_number_of_events(repeats: list[int]) -> None:
    clock = FakeClock()
    grouper = Grouper(AlertConfig(rules=(RULE,)), clock=clock)
    firsts = [created(clock, n) for n in (0, 5, 10)]  # node-0, three events
    counts = dict.fromkeys((change.event.id for change in firsts), 1)
    for change in firsts:
        grouper.add(change)
    for index in repeats:
        first = firsts[index % 3]
        counts[first.event.id] += 1
        grouper.add(updated(first, counts[first.event.id]))
    clock.advance(RULE.group_wait)
    (due,) = grouper.due()
    assert {event.id: event.count for event in due.notification.events} == counts
