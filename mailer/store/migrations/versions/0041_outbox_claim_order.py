"""outbox claim index in claim order again on SQLite: (status, priority DESC, due_at)

Rebuilding the outbox table on SQLite (0007 and later) copied this index without its DESC,
and a claim sorted every waiting row to take the first 200; with the order back, and the
claim reading one status at a time, it reads the index in order and stops at the 200th.

Revision ID: 0041
Revises: 0040
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0041"
down_revision: str | None = "0040"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL kept the order: its migrations alter the table in place
    op.drop_index("ix_outbox_claim", "outbox")
    op.create_index("ix_outbox_claim", "outbox", ["status", sa.text("priority DESC"), "due_at"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index("ix_outbox_claim", "outbox")
    op.create_index("ix_outbox_claim", "outbox", ["status", "priority", "due_at"])
