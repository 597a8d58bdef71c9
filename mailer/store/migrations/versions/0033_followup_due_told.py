"""followups.told_due_at: the due time a followup.due webhook was recorded for, and an
index of the follow-ups not told yet, so a pass every few seconds reads only those

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0033"
down_revision: str | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


UNTOLD = sa.text("told_due_at IS NULL OR told_due_at != due_at")


def upgrade() -> None:
    op.add_column("followups", sa.Column("told_due_at", UTCDateTime(), nullable=True))
    op.create_index(
        "ix_followups_untold_due",
        "followups",
        ["status", "due_at"],
        sqlite_where=UNTOLD,
        postgresql_where=UNTOLD,
    )


def downgrade() -> None:
    op.drop_index("ix_followups_untold_due", "followups")
    with op.batch_alter_table("followups") as batch:
        batch.drop_column("told_due_at")
