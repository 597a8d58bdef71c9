"""web forms: inquiries keep their channel, customers where their consent came from, and
the forms' posts are counted per client and per address

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inquiries") as batch:
        batch.add_column(sa.Column("channel", sa.String(20), nullable=False, server_default="mail"))
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("consent_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("consent_source", sa.String(50), nullable=True))
        batch.add_column(sa.Column("consent_ip", sa.String(45), nullable=True))
    op.create_table(
        "form_rate_windows",
        sa.Column("scope", sa.String(20), primary_key=True),
        sa.Column("subject", sa.String(64), primary_key=True),
        sa.Column("window_start", UTCDateTime(), primary_key=True),
        sa.Column("requests", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("form_rate_windows")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("consent_ip")
        batch.drop_column("consent_source")
        batch.drop_column("consent_at")
    with op.batch_alter_table("inquiries") as batch:
        batch.drop_column("channel")
