"""Silences on SQLite and PostgreSQL: Alertmanager's matcher semantics, validation errors
naming the field, listing by state, expiry, the active window's edges on a clock the test
moves, and the grouping's predicate fed from the store."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from protoevents.proxy.alerts.grouping import Grouper
from protoevents.proxy.alerts.rules import AlertConfig, AlertRule, event_labels
from protoevents.proxy.alerts.silences import (
    ACTIVE,
    EQUAL,
    EXPIRED,
    NOT_EQUAL,
    NOT_REGEX,
    PENDING,
    REGEX,
    CompiledMatcher,
    Matcher,
    Silence,
    SilenceError,
    SilenceNotFoundError,
    SilenceStore,
)
from tests.support.alert_clock import FakeClock, created

HOUR = timedelta(hours=1)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(migrated_engine: Engine, clock: FakeClock) -> SilenceStore:
    return SilenceStore(migrated_engine, clock=clock)


def at(clock: FakeClock, delta: timedelta = timedelta()) -> datetime:
    return datetime.fromtimestamp(clock.now, UTC) + delta


def silence_of(
    store: SilenceStore, clock: FakeClock, *matchers: Matcher, **times: timedelta
) -> Silence:
    starts = times.get("starts")
    return store.create(
        list(matchers),
        ends_at=at(clock, times.get("ends", HOUR)),
        starts_at=None if starts is None else at(clock, starts),
        comment="maintenance",
        author="ops@example.com",
    )


# -- matchers (Alertmanager's pkg/labels/matcher_test.go cases) ---------------------------


@pytest.mark.parametrize(
    ("name", "op", "value", "labels", "expected"),
    [
        ("bar", EQUAL, "baz", {"bar": "baz"}, True),
        ("bar", EQUAL, "baz", {"bar": "zap"}, False),
        ("bar", NOT_EQUAL, "baz", {"bar": "baz"}, False),
        ("bar", NOT_EQUAL, "baz", {"bar": "zap"}, True),
        ("bar", REGEX, "baz", {"bar": "baz"}, True),
        ("bar", REGEX, "baz", {"bar": "zap"}, False),
        ("bar", NOT_REGEX, "baz", {"bar": "baz"}, False),
        ("bar", NOT_REGEX, "baz", {"bar": "zap"}, True),
        # Anchored at both ends: a part of the value does not match.
        ("bar", REGEX, "a", {"bar": "bar"}, False),
        ("bar", REGEX, "b.*", {"bar": "bar"}, True),
        ("bar", REGEX, ".*r", {"bar": "bar"}, True),
        ("bar", REGEX, "ba", {"bar": "bar"}, False),
        ("bar", REGEX, "a|bar", {"bar": "bar"}, True),  # the alternation is grouped
        ("bar", REGEX, "bar", {"bar": "bar\n"}, False),  # no match before a final line break
        ("bar", REGEX, "b.r", {"bar": "b\nr"}, False),  # `.` does not take a line break
        ("bar", NOT_REGEX, "ba", {"bar": "bar"}, True),
        # A missing label has the value "".
        ("bar", EQUAL, "", {}, True),
        ("bar", EQUAL, "baz", {}, False),
        ("bar", NOT_EQUAL, "", {}, False),
        ("bar", NOT_EQUAL, "", {"bar": "baz"}, True),
        ("bar", REGEX, ".*", {}, True),
        ("bar", REGEX, ".+", {}, False),
        ("bar", NOT_REGEX, ".+", {}, True),
        # Label names are compared exactly, dots and all.
        ("attributes.term", EQUAL, "3", {"attributes.term": "3"}, True),
        ("attributes.term", EQUAL, "3", {"term": "3"}, False),
    ],
)
def test_matcher_semantics_are_alertmanagers(
    name: str, op: str, value: str, labels: Mapping[str, str], expected: bool
) -> None:
    assert CompiledMatcher(Matcher(name, value, op)).matches(labels) is expected


@pytest.mark.parametrize(
    ("matchers", "field", "problem"),
    [
        ([], "matchers", "empty"),
        (
            [Matcher("type", "x"), Matcher("node", "(", REGEX)],
            "matchers[1].value",
            "invalid regular",
        ),
        ([Matcher("type", "x", "==")], "matchers[0].op", "'==' unknown"),
        ([Matcher("", "x")], "matchers[0].name", "empty"),
        ([Matcher(" node", "x")], "matchers[0].name", "not a label name"),
        ([Matcher("node", ".*", REGEX)], "matchers", "would silence all"),
        ([Matcher("node", ""), Matcher("site", "x", NOT_EQUAL)], "matchers", "silence all"),
    ],
)
def test_bad_matchers_are_refused_naming_the_field(
    store: SilenceStore, clock: FakeClock, matchers: list[Matcher], field: str, problem: str
) -> None:
    with pytest.raises(SilenceError) as caught:
        store.create(matchers, ends_at=at(clock, HOUR), comment="c", author="a")
    assert caught.value.field == field
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{field}: ")
    assert store.list() == []


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"starts_at": HOUR, "ends_at": HOUR / 2}, "ends_at", "before starts_at"),
        ({"starts_at": HOUR, "ends_at": HOUR}, "ends_at", "equal to starts_at"),
        ({"ends_at": -HOUR}, "ends_at", "in the past"),
        ({"comment": " "}, "comment", "empty"),
        ({"author": ""}, "author", "empty"),
        ({"author": "a" * 256}, "author", "longer than 255"),
        ({"naive_end": True}, "ends_at", "no time zone"),
    ],
)
def test_bad_windows_and_texts_are_refused_naming_the_field(
    store: SilenceStore, clock: FakeClock, changes: dict[str, object], field: str, problem: str
) -> None:
    ends = at(clock, changes.get("ends_at", HOUR))  # type: ignore[arg-type]
    starts = changes.get("starts_at")
    with pytest.raises(SilenceError) as caught:
        store.create(
            [Matcher("node", "node-1")],
            ends_at=ends.replace(tzinfo=None) if changes.get("naive_end") else ends,
            starts_at=None if starts is None else at(clock, starts),  # type: ignore[arg-type]
            comment=str(changes.get("comment", "maintenance")),
            author=str(changes.get("author", "ops")),
        )
    assert (caught.value.field, problem in caught.value.problem) == (field, True)
    assert store.list() == []


def ids(*silences: Silence) -> set[uuid.UUID]:
    return {silence.id for silence in silences}


# -- the store ----------------------------------------------------------------------------


def test_a_created_silence_reads_back_as_stored(store: SilenceStore, clock: FakeClock) -> None:
    matchers = [Matcher("node", "node-1"), Matcher("type", ".*Leader.*", REGEX)]
    made = store.create(
        matchers,
        starts_at=at(clock, HOUR),
        ends_at=at(clock, 2 * HOUR),
        comment="upgrade of node-1",
        author="ops@example.com",
    )
    assert isinstance(made.id, uuid.UUID)
    assert made.matchers == tuple(matchers)
    assert (made.starts_at, made.ends_at) == (at(clock, HOUR), at(clock, 2 * HOUR))
    assert made.created_at == at(clock) and made.expired_at is None
    assert store.get(made.id) == made
    assert store.get(str(made.id)) == made
    assert store.list() == [made]


def test_a_start_in_the_past_becomes_now_as_in_alertmanager(
    store: SilenceStore, clock: FakeClock
) -> None:
    made = silence_of(store, clock, Matcher("node", "node-1"), starts=-HOUR)
    assert made.starts_at == at(clock)
    assert store.get(made.id).starts_at == at(clock)


def test_list_filters_by_state_author_and_labels(store: SilenceStore, clock: FakeClock) -> None:
    active = silence_of(store, clock, Matcher("node", "node-1"))
    pending = silence_of(store, clock, Matcher("node", "node-2"), starts=HOUR, ends=2 * HOUR)
    expired = store.expire(silence_of(store, clock, Matcher("node", "node-3")).id)
    other = store.create([Matcher("site", "lab")], at(clock, HOUR), "lab move", "lab@example.com")

    assert ids(*store.list()) == ids(active, expired, other, pending)
    assert store.list()[-1] == pending  # oldest start first
    assert ids(*store.list([ACTIVE])) == ids(active, other)
    assert ids(*store.list([PENDING])) == ids(pending)
    assert ids(*store.list([EXPIRED])) == ids(expired)
    assert ids(*store.list([ACTIVE, PENDING])) == ids(active, other, pending)
    assert ids(*store.list(author="lab@example.com")) == ids(other)
    assert ids(*store.list([ACTIVE], labels={"node": "node-1", "site": "lab"})) == ids(
        active, other
    )
    assert ids(*store.list(labels={"node": "node-2"})) == ids(pending)
    with pytest.raises(SilenceError) as caught:
        store.list(["gone"])
    assert caught.value.field == "states"

    clock.advance(HOUR.total_seconds())  # pending starts, the first ones end
    assert ids(*store.list([ACTIVE])) == ids(pending)
    assert ids(*store.list([EXPIRED])) == ids(active, expired, other)


def test_expire_is_idempotent_and_an_unknown_id_is_not_found(
    store: SilenceStore, clock: FakeClock
) -> None:
    made = silence_of(store, clock, Matcher("node", "node-1"))
    clock.advance(60)
    expired = store.expire(made.id)
    assert expired.expired_at == at(clock)
    assert expired.state(at(clock)) == EXPIRED
    assert not store.active_at().silences({"node": "node-1"})

    clock.advance(60)
    assert store.expire(made.id) == expired  # the first expiry time is kept
    assert store.expire(str(made.id)) == expired

    ran_out = silence_of(store, clock, Matcher("node", "node-2"), ends=timedelta(seconds=10))
    clock.advance(10)
    assert store.expire(ran_out.id) == ran_out  # ended on its own: nothing to change

    unknown = uuid.uuid4()
    with pytest.raises(SilenceNotFoundError) as caught:
        store.expire(unknown)
    assert caught.value.silence_id == str(unknown)
    with pytest.raises(SilenceNotFoundError):
        store.get(unknown)
    with pytest.raises(SilenceError) as bad:
        store.expire("not-a-uuid")
    assert bad.value.field == "id"


def test_a_pending_silence_expired_never_starts(store: SilenceStore, clock: FakeClock) -> None:
    pending = silence_of(store, clock, Matcher("node", "node-1"), starts=HOUR, ends=2 * HOUR)
    store.expire(pending.id)
    assert store.list([PENDING]) == []
    clock.advance(HOUR.total_seconds())
    assert len(store.active_at()) == 0


def test_the_active_window_is_half_open(store: SilenceStore, clock: FakeClock) -> None:
    labels = {"node": "node-1"}
    made = silence_of(store, clock, Matcher("node", "node-1"), starts=HOUR, ends=2 * HOUR)
    start, end = made.starts_at, made.ends_at
    tick = timedelta(microseconds=1)

    before = store.active_at(start - tick)
    assert not before.silences(labels) and before.changes_at == start
    assert made.state(start - tick) == PENDING
    starting = store.active_at(start)
    assert starting.silences(labels) and starting.changes_at == end
    assert made.state(start) == ACTIVE
    assert store.active_at(end - tick).silences(labels)
    ended = store.active_at(end)
    assert not ended.silences(labels) and ended.changes_at is None
    assert made.state(end) == EXPIRED

    # The clock's time when none is given.
    assert not store.active_at().silences(labels)
    clock.advance(HOUR.total_seconds())
    assert store.active_at().silences(labels)
    clock.advance(HOUR.total_seconds())
    assert not store.active_at().silences(labels)


def test_the_set_tells_which_silences_match(store: SilenceStore, clock: FakeClock) -> None:
    node = silence_of(store, clock, Matcher("node", "node-1"))
    both = silence_of(store, clock, Matcher("node", "node-.*", REGEX), Matcher("site", "lab"))
    found = store.active_at()
    assert len(found) == 2
    assert found.matching({"node": "node-1"}) == [node.id]
    assert sorted(found.matching({"node": "node-1", "site": "lab"})) == sorted([node.id, both.id])
    assert found.matching({"node": "node-2"}) == []
    assert found({"node": "node-2", "site": "lab"})  # callable as the grouping's predicate


def test_the_grouping_is_silenced_through_the_store(store: SilenceStore, clock: FakeClock) -> None:
    """Silences match the labels the grouping gives its predicate (rules.event_labels)."""
    quiet = created(clock, 1, node="node-1")
    assert event_labels(quiet.event)["node"] == "node-1"
    store.create(
        [Matcher("node", "node-1"), Matcher("attributes.term", "1")],
        ends_at=at(clock, HOUR),
        comment="node-1 is being replaced",
        author="ops",
    )
    rule = AlertRule(name="cluster", receivers=("ops",), group_wait=0.0)
    groups = Grouper(AlertConfig(rules=(rule,)), clock=clock, silenced=store.active_at().silences)
    groups.add(quiet)
    groups.add(created(clock, 2, node="node-2"))
    (due,) = groups.due()
    assert not due.silenced and due.silenced_events == 1
    assert [e.source.node for e in due.notification.events] == ["node-2"]
