"""outbox.request_hash: what an API call asked for, so its Idempotency-Key can be told apart

Revision ID: 0029
Revises: 0027
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a nullable column is added in place on both backends: the outbox is not copied
    op.add_column("outbox", sa.Column("request_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("request_hash")
