"""customer_events by (name, occurred_at): event schedules find the events due in a pass

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0036"
down_revision: str | None = "0035"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_customer_events_name_at", "customer_events", ["name", "occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_customer_events_name_at", table_name="customer_events")
