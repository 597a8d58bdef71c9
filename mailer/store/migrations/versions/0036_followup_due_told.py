"""followups.told_due_at: the due time a followup.due webhook was recorded for

Revision ID: 0036
Revises: 0032
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0036"
down_revision: str | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("followups", sa.Column("told_due_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("followups") as batch:
        batch.drop_column("told_due_at")
