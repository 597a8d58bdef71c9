"""meetings: a follow-up with a length, a place and attendees, and its calendar SEQUENCE

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("followups") as batch:
        batch.add_column(sa.Column("duration_minutes", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("place", sa.String(500), nullable=True))
        batch.add_column(sa.Column("attendees", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("sequence", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("followups") as batch:
        batch.drop_column("sequence")
        batch.drop_column("attendees")
        batch.drop_column("place")
        batch.drop_column("duration_minutes")
