"""customer_events: what the shop saw customers do, sent by its API, on their timelines

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0032"
down_revision: str | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    customer = sa.ForeignKey("customers.id", ondelete="CASCADE")
    op.create_table(
        "customer_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("customer_id", sa.Integer(), customer, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("ref", sa.String(200), nullable=True),
        sa.Column("source", sa.String(120), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("customer_id", "ref", name="uq_customer_events_customer_ref"),
    )
    op.create_index(
        "ix_customer_events_customer_at", "customer_events", ["customer_id", "occurred_at"]
    )


def downgrade() -> None:
    op.drop_table("customer_events")
