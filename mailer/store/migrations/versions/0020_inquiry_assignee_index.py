"""the desk finds an agent's conversations by an index on the assignee

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_inquiries_assignee", "inquiries", ["assignee"])


def downgrade() -> None:
    op.drop_index("ix_inquiries_assignee", "inquiries")
