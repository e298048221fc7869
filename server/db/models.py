"""SQLAlchemy models of the stored events, of the synced event-type registry and of the alert
silences."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from protoevents.proxy.fields import FIELD_LIMITS

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
# None is stored as SQL NULL (an event without data), not as the JSON `null`.
JsonDocument = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores `timestamptz`; SQLite stores naive UTC text, so values are converted
    to UTC before binding (text comparisons then order correctly) and read back as aware UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: stored times must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = metadata


class EventRow(Base):
    """One stored event; `id` is the client-assigned UUID, the idempotency key."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(FIELD_LIMITS["id"]), primary_key=True)
    type: Mapped[str] = mapped_column(String(FIELD_LIMITS["type"]))
    severity: Mapped[int] = mapped_column(Integer)
    category: Mapped[str] = mapped_column(String(FIELD_LIMITS["category"]))
    message: Mapped[str] = mapped_column(String)
    source_node: Mapped[str] = mapped_column(String(FIELD_LIMITS["source_node"]))
    source_component: Mapped[str] = mapped_column(String(FIELD_LIMITS["source_component"]))
    object_kind: Mapped[str] = mapped_column(String(FIELD_LIMITS["object_kind"]))
    object_namespace: Mapped[str] = mapped_column(String(FIELD_LIMITS["object_namespace"]))
    object_name: Mapped[str] = mapped_column(String(FIELD_LIMITS["object_name"]))
    attributes: Mapped[dict[str, str]] = mapped_column(JsonDocument)
    data: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument, nullable=True)
    time: Mapped[datetime] = mapped_column(UtcDateTime)
    first_time: Mapped[datetime] = mapped_column(UtcDateTime)
    last_time: Mapped[datetime] = mapped_column(UtcDateTime)
    received_time: Mapped[datetime] = mapped_column(UtcDateTime)
    count: Mapped[int] = mapped_column(BigInteger)
    # The site the event was forwarded from; '' for an event recorded at this proxy.
    site: Mapped[str] = mapped_column(String(FIELD_LIMITS["site"]), server_default=text("''"))
    # Whether the event asked for an alert whatever the alert rules match (Event.alert).
    alert: Mapped[bool] = mapped_column(Boolean, server_default=false())

    # Listings are ordered by (time, id) for keyset pagination; each filter of the query
    # service leads one index ending in time. The id tiebreak is left out of those: ties on
    # time are rare, and every indexed column costs PostgreSQL ingest throughput.
    __table_args__ = (
        Index(None, "time", "id"),
        Index(None, "type", "time"),
        Index(None, "severity", "time"),
        Index(None, "source_node", "source_component", "time"),
        Index(None, "object_kind", "object_namespace", "object_name", "time"),
        Index(None, "site", "time"),
    )


class EventTypeRow(Base):
    """One event type of the registry, as last synced by a proxy."""

    __tablename__ = "event_types"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    number: Mapped[int] = mapped_column(Integer)
    severity: Mapped[int] = mapped_column(Integer)
    category: Mapped[str] = mapped_column(String(FIELD_LIMITS["category"]))
    description: Mapped[str] = mapped_column(String)
    service: Mapped[str] = mapped_column(String(255))
    enum_name: Mapped[str] = mapped_column(String(255))


class SilenceRow(Base):
    """One alert silence (alerts/silences.py): `matchers` a JSON list of {name, value, op};
    `expired_at` when it was expired by hand, NULL while it runs to `ends_at`."""

    __tablename__ = "alert_silences"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID as text
    matchers: Mapped[list[dict[str, str]]] = mapped_column(JsonDocument)
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ends_at: Mapped[datetime] = mapped_column(UtcDateTime)
    comment: Mapped[str] = mapped_column(String)
    author: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expired_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    # The silences in force are read by end time: those not ended yet.
    __table_args__ = (Index(None, "ends_at"),)


events = cast(Table, EventRow.__table__)
event_types = cast(Table, EventTypeRow.__table__)
alert_silences = cast(Table, SilenceRow.__table__)
