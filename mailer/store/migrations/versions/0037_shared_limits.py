"""shared limits and fencing: outbox lease tokens, a rate shared by every process, sign-in
attempts counted in the database, and web sessions kept server side

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0037"
down_revision: str | None = "0036"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(
            sa.Column("lease_token", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    op.create_table(
        "rate_buckets",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("free_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "sign_in_attempts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_sign_in_attempts_client_at", "sign_in_attempts", ["client", "at"])
    user = sa.ForeignKey("users.id", ondelete="CASCADE")
    op.create_table(
        "web_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer(), user, nullable=False, index=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("web_sessions")
    op.drop_index("ix_sign_in_attempts_client_at", "sign_in_attempts")
    op.drop_table("sign_in_attempts")
    op.drop_table("rate_buckets")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("lease_token")
