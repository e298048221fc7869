"""The site each event came through, and an index for listings filtered by site.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 20:30:00

Stored events were all recorded at the proxy that holds them: they get the site ''. Adding
a column with a constant default rewrites no rows on either database (PostgreSQL 11+ keeps
the default in the catalog; SQLite's ADD COLUMN appends to the schema); building the index
reads the table once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "events",
        sa.Column("site", sa.String(length=64), server_default=sa.text("''"), nullable=False),
    )
    op.create_index(op.f("ix_events_site_time"), "events", ["site", "time"])


def downgrade() -> None:
    op.drop_index(op.f("ix_events_site_time"), table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("site")
