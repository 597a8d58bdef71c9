"""follow-ups: dated reminders to contact a customer again; staff names, zones and addresses

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("display_name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("timezone", sa.String(64), nullable=True))
        batch.add_column(sa.Column("email", sa.String(320), nullable=True))
    op.create_table(
        "followups",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "customer_id",
            sa.Integer(),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("assignee", sa.String(100), nullable=True),
        sa.Column("note", sa.String(), nullable=False),
        sa.Column("inquiry_id", sa.Integer(), sa.ForeignKey("inquiries.id", ondelete="SET NULL")),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("done_at", UTCDateTime(), nullable=True),
        sa.Column("done_by", sa.String(100), nullable=True),
        sa.Column("snoozed", sa.Integer(), nullable=False),
    )
    op.create_index("ix_followups_customer_id", "followups", ["customer_id"])
    op.create_index("ix_followups_status_due", "followups", ["status", "due_at"])
    op.create_index(
        "ix_followups_assignee_status_due", "followups", ["assignee", "status", "due_at"]
    )


def downgrade() -> None:
    op.drop_table("followups")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email")
        batch.drop_column("timezone")
        batch.drop_column("display_name")
