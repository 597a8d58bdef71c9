"""calendar replies: each customer's latest answer to a webinar's or a meeting's invitation

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "calendar_replies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("uid", sa.String(300), nullable=False),
        sa.Column(
            "customer_id",
            sa.Integer(),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("schedule", sa.String(100), nullable=True),
        sa.Column("followup_id", sa.Integer(), sa.ForeignKey("followups.id", ondelete="CASCADE")),
        sa.Column("answer", sa.String(10), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("stamp", UTCDateTime(), nullable=True),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("answered_at", UTCDateTime(), nullable=False),
        sa.Column("inquiry_id", sa.Integer(), sa.ForeignKey("inquiries.id", ondelete="SET NULL")),
        sa.UniqueConstraint("uid", "customer_id", name="uq_calendar_replies_uid_customer"),
    )
    op.create_index("ix_calendar_replies_customer_id", "calendar_replies", ["customer_id"])
    op.create_index("ix_calendar_replies_schedule", "calendar_replies", ["schedule"])


def downgrade() -> None:
    op.drop_table("calendar_replies")
