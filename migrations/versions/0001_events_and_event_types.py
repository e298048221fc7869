"""Events and event types.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 11:57:20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "event_types",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("service", sa.String(length=255), nullable=False),
        sa.Column("enum_name", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_event_types")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=255), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("message", sa.String(), nullable=False),
        sa.Column("source_node", sa.String(length=253), nullable=False),
        sa.Column("source_component", sa.String(length=128), nullable=False),
        sa.Column("object_kind", sa.String(length=128), nullable=False),
        sa.Column("object_namespace", sa.String(length=128), nullable=False),
        sa.Column("object_name", sa.String(length=253), nullable=False),
        sa.Column("attributes", JSON_DOCUMENT, nullable=False),
        sa.Column("data", JSON_DOCUMENT, nullable=True),
        sa.Column("time", TIMESTAMP, nullable=False),
        sa.Column("first_time", TIMESTAMP, nullable=False),
        sa.Column("last_time", TIMESTAMP, nullable=False),
        sa.Column("received_time", TIMESTAMP, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    indexes = {
        "ix_events_time_id": ["time", "id"],
        "ix_events_type_time": ["type", "time"],
        "ix_events_severity_time": ["severity", "time"],
        "ix_events_source_node_source_component_time": ["source_node", "source_component", "time"],
        "ix_events_object_kind_object_namespace_object_name_time": [
            "object_kind",
            "object_namespace",
            "object_name",
            "time",
        ],
    }
    for name, columns in indexes.items():
        op.create_index(op.f(name), "events", columns)


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("event_types")
