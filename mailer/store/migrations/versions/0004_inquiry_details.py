"""inquiry details: sender name, reply text without quoted history, attachments, defects

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inquiries") as batch:
        batch.add_column(
            sa.Column("sender_name", sa.String(200), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("reply_text", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("attachments", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("defects", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("inquiries") as batch:
        for column in ("defects", "attachments", "reply_text", "sender_name"):
            batch.drop_column(column)
