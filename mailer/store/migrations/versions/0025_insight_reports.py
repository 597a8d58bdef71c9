"""insight_reports: the insight report built by the last refresh, read by the page and CLI

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "insight_reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("fit_id", sa.Integer(), nullable=True),
        sa.Column("as_of", sa.Date(), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("built_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("insight_reports")
