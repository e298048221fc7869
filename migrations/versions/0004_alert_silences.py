"""The alert silences: matchers, a time window, who set it and why, when it was expired.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 22:00:00

A new table, so no stored row changes. One index, on the end time: the alert engine reads
the silences not ended yet.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alert_silences",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("matchers", JSON_DOCUMENT, nullable=False),
        sa.Column("starts_at", TIMESTAMP, nullable=False),
        sa.Column("ends_at", TIMESTAMP, nullable=False),
        sa.Column("comment", sa.String(), nullable=False),
        sa.Column("author", sa.String(length=255), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expired_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_silences")),
    )
    op.create_index(op.f("ix_alert_silences_ends_at"), "alert_silences", ["ends_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_alert_silences_ends_at"), table_name="alert_silences")
    op.drop_table("alert_silences")
