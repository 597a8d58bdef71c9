"""saved replies: support's canned responses, per language

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

Replies themselves need no table: each is an inquiry event (who wrote what) and the outbox
row it queued, whose dedupe key names that event.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "saved_replies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("locale", sa.String(35), nullable=False),
        sa.Column("body", sa.String(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.UniqueConstraint("name", "locale", name="uq_saved_replies_name_locale"),
    )


def downgrade() -> None:
    op.drop_table("saved_replies")
