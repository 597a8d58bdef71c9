"""when each schedule was first seen: catch-up never reaches back before it

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

A schedule that already has runs was known by its first run; the rest count from the first
firing after this upgrade.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedules_seen",
        sa.Column("schedule", sa.String(100), primary_key=True),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
    )
    op.execute(
        "INSERT INTO schedules_seen (schedule, first_seen_at)"
        " SELECT schedule, MIN(started_at) FROM schedule_runs GROUP BY schedule"
    )


def downgrade() -> None:
    op.drop_table("schedules_seen")
