"""domain_pacing: how fast each receiving domain (or group of domains) may get mail now,
slowed down when it says "try later" and recovering gradually

Revision ID: 0039
Revises: 0038
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0039"
down_revision: str | None = "0038"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "domain_pacing",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("rate", sa.Integer(), nullable=True),
        sa.Column("slowed_until", UTCDateTime(), nullable=True),
        sa.Column("changed_at", UTCDateTime(), nullable=True),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("window_start", UTCDateTime(), nullable=True),
        sa.Column("used", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    op.drop_table("domain_pacing")
