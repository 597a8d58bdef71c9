"""schedule runs, webinar calendar identities, outbox.run_id, customers by time zone

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("schedule", sa.String(100), nullable=False),
        sa.Column("occurrence", sa.String(100), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("planned_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("queued", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.UniqueConstraint("schedule", "occurrence", "zone", name="uq_schedule_run"),
    )
    op.create_index("ix_schedule_runs_schedule", "schedule_runs", ["schedule"])
    op.create_table(
        "webinar_events",
        sa.Column("schedule", sa.String(100), primary_key=True),
        sa.Column("uid", sa.String(300), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(500), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("run_id", sa.Integer(), nullable=True))
    op.create_index("ix_outbox_run", "outbox", ["run_id", "status"])
    op.create_index("ix_customers_timezone", "customers", ["timezone"])


def downgrade() -> None:
    op.drop_index("ix_customers_timezone", "customers")
    op.drop_index("ix_outbox_run", "outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("run_id")
    op.drop_table("webinar_events")
    op.drop_index("ix_schedule_runs_schedule", "schedule_runs")
    op.drop_table("schedule_runs")
