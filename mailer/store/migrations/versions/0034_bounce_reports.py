"""bounce_reports: bounces and complaints per message, soft ones counted per address

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0034"
down_revision: str | None = "0033"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    message = sa.ForeignKey("outbox.id", ondelete="SET NULL")
    op.create_table(
        "bounce_reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("outbox_id", sa.Integer(), message, nullable=True),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("diagnostic", sa.String(1000), nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_bounce_reports_address_at", "bounce_reports", ["address", "reported_at"])
    op.create_index("ix_bounce_reports_outbox_id", "bounce_reports", ["outbox_id"])


def downgrade() -> None:
    op.drop_table("bounce_reports")
