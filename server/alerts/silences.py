"""Alert silences kept in the database: Alertmanager's matchers over an alerting event's
labels (`rules.event_labels`, what the grouping's `silenced(labels)` predicate is given), a
time window, who set one and why; create, list, expire, and the set in force at a time.

A matcher compares one label with `=`, `!=`, `=~` or `!~`; a label the event lacks has the
value "" (so `name=""` holds where it is missing), and a regular expression must match the
whole value (Alertmanager anchors it: `^(?:re)$`, where `.` does not match a line break).
A silence silences an event when all its matchers hold. Its window is half open: active
from `starts_at` (included) to `ends_at` (excluded), pending before, expired after, or from
`expired_at` on once expired by hand.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from protoevents.proxy.db.models import alert_silences

EQUAL = "="
NOT_EQUAL = "!="
REGEX = "=~"
NOT_REGEX = "!~"
OPERATORS = (EQUAL, NOT_EQUAL, REGEX, NOT_REGEX)

PENDING = "pending"
ACTIVE = "active"
EXPIRED = "expired"
STATES = (PENDING, ACTIVE, EXPIRED)

MAX_AUTHOR = 255  # characters, the column's length

Clock = Callable[[], float]


class SilenceError(ValueError):
    """A silence asked for is invalid: `field` names what is wrong (`matchers[1].value`,
    `ends_at`), `problem` says how; a service answers INVALID_ARGUMENT with `str()`."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class SilenceNotFoundError(LookupError):
    """No silence has this id (a service answers NOT_FOUND)."""

    def __init__(self, silence_id: uuid.UUID | str) -> None:
        super().__init__(f"no silence {silence_id}")
        self.silence_id = str(silence_id)


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label condition: `name`, `op` one of OPERATORS and `value` (a regular expression
    for `=~` and `!~`)."""

    name: str
    value: str
    op: str = EQUAL

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "value": self.value, "op": self.op}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Matcher:
        return cls(name=str(raw["name"]), value=str(raw["value"]), op=str(raw["op"]))

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value!r}"


class CompiledMatcher:
    """A matcher with its regular expression compiled once; `matches(labels)`."""

    __slots__ = ("name", "negated", "pattern", "value")

    def __init__(self, matcher: Matcher, field: str = "matcher") -> None:
        if not matcher.name:
            raise SilenceError(f"{field}.name", "empty")
        if matcher.name != matcher.name.strip() or not matcher.name.isprintable():
            raise SilenceError(f"{field}.name", f"{matcher.name!r} is not a label name")
        if matcher.op not in OPERATORS:
            known = ", ".join(OPERATORS)
            raise SilenceError(f"{field}.op", f"{matcher.op!r} unknown (expected one of {known})")
        self.name = matcher.name
        self.value = matcher.value
        self.negated = matcher.op in (NOT_EQUAL, NOT_REGEX)
        self.pattern: re.Pattern[str] | None = None
        if matcher.op in (REGEX, NOT_REGEX):
            try:
                self.pattern = re.compile(f"(?:{matcher.value})")
            except re.error as exc:
                raise SilenceError(
                    f"{field}.value", f"invalid regular expression {matcher.value!r}: {exc}"
                ) from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.name, "")
        found = value == self.value if self.pattern is None else bool(self.pattern.fullmatch(value))
        return found is not self.negated


def compile_matchers(matchers: Sequence[Matcher]) -> tuple[CompiledMatcher, ...]:
    """The matchers compiled, validated as a silence's: at least one, and (as Alertmanager
    asks) at least one that does not hold on the empty label set, so no silence silences
    everything."""
    if not matchers:
        raise SilenceError("matchers", "empty: a silence needs at least one matcher")
    compiled = tuple(
        CompiledMatcher(matcher, f"matchers[{n}]") for n, matcher in enumerate(matchers)
    )
    if all(matcher.matches({}) for matcher in compiled):
        raise SilenceError(
            "matchers", "every matcher matches an empty label: the silence would silence all"
        )
    return compiled


@dataclass(frozen=True, slots=True)
class Silence:
    """One silence as stored. `expired_at` is when it was expired by hand, None otherwise."""

    id: uuid.UUID
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    comment: str
    author: str
    created_at: datetime
    expired_at: datetime | None = None

    @property
    def ended_at(self) -> datetime:
        """When it stops (or stopped) being in force: `ends_at`, or earlier `expired_at`."""
        if self.expired_at is not None and self.expired_at < self.ends_at:
            return self.expired_at
        return self.ends_at

    def state(self, now: datetime) -> str:
        """PENDING, ACTIVE or EXPIRED at `now`."""
        if now >= self.ended_at:
            return EXPIRED
        return PENDING if now < self.starts_at else ACTIVE


def _aware(field: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise SilenceError(field, f"{value.isoformat()} has no time zone")
    return value.astimezone(UTC)


def _text(field: str, value: str, limit: int | None = None) -> str:
    if not value.strip():
        raise SilenceError(field, "empty")
    if limit is not None and len(value) > limit:
        raise SilenceError(field, f"longer than {limit} characters ({len(value)})")
    return value


class SilenceSet:
    """The silences in force at one time, matchers compiled: `silences(labels)` is the
    grouping's `silenced` predicate. `changes_at` is when the set next changes (a silence
    ends or a pending one starts), None when no silence is due to: read a new set then."""

    def __init__(
        self, silences: Iterable[Silence], now: datetime, changes_at: datetime | None = None
    ) -> None:
        self.now = now
        self.changes_at = changes_at
        self._silences = [(s.id, compile_matchers(s.matchers)) for s in silences]

    def __len__(self) -> int:
        return len(self._silences)

    def silences(self, labels: Mapping[str, str]) -> bool:
        """Whether any silence in force silences an event with these labels."""
        return any(all(m.matches(labels) for m in ms) for _, ms in self._silences)

    __call__ = silences

    def matching(self, labels: Mapping[str, str]) -> list[uuid.UUID]:
        """The ids of the silences that silence an event with these labels."""
        return [id_ for id_, ms in self._silences if all(m.matches(labels) for m in ms)]


def _row_to_silence(row: sa.Row[Any]) -> Silence:
    return Silence(
        id=uuid.UUID(row.id),
        matchers=tuple(Matcher.from_dict(raw) for raw in row.matchers),
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        comment=row.comment,
        author=row.author,
        created_at=row.created_at,
        expired_at=row.expired_at,
    )


_table = alert_silences
_c = _table.c


def _state_clause(state: str, now: datetime) -> sa.ColumnElement[bool]:
    not_expired = sa.and_(_c.expired_at.is_(None), _c.ends_at > now)
    if state == EXPIRED:
        return sa.not_(not_expired)
    if state == PENDING:
        return sa.and_(not_expired, _c.starts_at > now)
    return sa.and_(not_expired, _c.starts_at <= now)


class SilenceStore:
    """The silences of the `alert_silences` table. `clock` gives the time in seconds
    (time.time's scale); each call reads it once."""

    def __init__(self, engine: Engine, clock: Clock = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def create(
        self,
        matchers: Sequence[Matcher],
        ends_at: datetime,
        comment: str,
        author: str,
        starts_at: datetime | None = None,
    ) -> Silence:
        """Store a new silence and return it. As Alertmanager does, a start in the past (or
        none) becomes now; the end must be after the start and not past. SilenceError names
        the first bad field."""
        now = self.now()
        compile_matchers(matchers)
        start = now if starts_at is None else _aware("starts_at", starts_at)
        end = _aware("ends_at", ends_at)
        if end <= now:
            raise SilenceError("ends_at", "in the past")
        if end < start:
            raise SilenceError("ends_at", "before starts_at")
        if end == start:
            raise SilenceError("ends_at", "equal to starts_at: the silence would never be active")
        silence = Silence(
            id=uuid.uuid4(),
            matchers=tuple(matchers),
            starts_at=max(start, now),
            ends_at=end,
            comment=_text("comment", comment),
            author=_text("author", author, MAX_AUTHOR),
            created_at=now,
        )
        with self.engine.begin() as connection:
            connection.execute(
                _table.insert().values(
                    id=str(silence.id),
                    matchers=[m.to_dict() for m in silence.matchers],
                    starts_at=silence.starts_at,
                    ends_at=silence.ends_at,
                    comment=silence.comment,
                    author=silence.author,
                    created_at=silence.created_at,
                    expired_at=None,
                )
            )
        return silence

    def get(self, silence_id: uuid.UUID | str) -> Silence:
        """The silence of this id; SilenceNotFoundError when there is none."""
        key = _key(silence_id)
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(_table).where(_c.id == key)).one_or_none()
        if row is None:
            raise SilenceNotFoundError(silence_id)
        return _row_to_silence(row)

    def list(
        self,
        states: Collection[str] = (),
        *,
        author: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[Silence]:
        """The silences in these states now (all when none given), by `author` when given,
        silencing an event with `labels` when given; oldest start first."""
        for state in states:
            if state not in STATES:
                raise SilenceError("states", f"{state!r} unknown (expected one of {STATES})")
        now = self.now()
        query = sa.select(_table).order_by(_c.starts_at, _c.created_at, _c.id)
        if states and set(states) != set(STATES):
            query = query.where(sa.or_(*(_state_clause(state, now) for state in set(states))))
        if author is not None:
            query = query.where(_c.author == author)
        with self.engine.connect() as connection:
            found = [_row_to_silence(row) for row in connection.execute(query)]
        if labels is not None:
            found = [
                s for s in found if all(m.matches(labels) for m in compile_matchers(s.matchers))
            ]
        return found

    def expire(self, silence_id: uuid.UUID | str) -> Silence:
        """Expire a silence now and return it; one already expired is returned unchanged.
        SilenceNotFoundError when no silence has this id."""
        key = _key(silence_id)
        now = self.now()
        with self.engine.begin() as connection:
            connection.execute(
                _table.update()
                .where(_c.id == key, _c.expired_at.is_(None), _c.ends_at > now)
                .values(expired_at=now)
            )
        return self.get(silence_id)

    def active_at(self, now: datetime | None = None) -> SilenceSet:
        """The silences in force at `now` (the clock's time when None)."""
        moment = self.now() if now is None else _aware("now", now)
        query = sa.select(_table).where(_c.expired_at.is_(None), _c.ends_at > moment)
        with self.engine.connect() as connection:
            running = [_row_to_silence(row) for row in connection.execute(query)]
        active = [s for s in running if s.starts_at <= moment]
        changes = [s.ends_at if s.starts_at <= moment else s.starts_at for s in running]
        return SilenceSet(active, moment, min(changes, default=None))


def _key(silence_id: uuid.UUID | str) -> str:
    if isinstance(silence_id, uuid.UUID):
        return str(silence_id)
    try:
        return str(uuid.UUID(silence_id))
    except ValueError:
        raise SilenceError("id", f"{silence_id!r} is not a UUID") from None
