"""template versions: every save of a template variant from the browser, with who and when

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03

The files under templates/ stay the source of truth; this table is their history.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "template_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("template", sa.String(100), nullable=False),
        sa.Column("variant", sa.String(35), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("html", sa.String(), nullable=True),
        sa.Column("text", sa.String(), nullable=True),
        sa.Column("saved_by", sa.String(100), nullable=False),
        sa.Column("saved_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_template_versions_variant", "template_versions", ["template", "variant", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_template_versions_variant", "template_versions")
    op.drop_table("template_versions")
