"""Whether each event asked for an alert whatever the alert rules match (Event.alert).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 21:30:00

Stored events never asked: they get false. As with 0002's site, a column with a constant
default rewrites no rows on either database. No index: the alert engine follows the log, not
this table, and an index would cost every insert.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "events",
        sa.Column("alert", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("alert")
