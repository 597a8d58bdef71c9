"""delivery: template context, throttle reservations, envelope senders, rendered
subjects, the claim index, sandbox capture

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("params", new_column_name="context")
        batch.add_column(sa.Column("subject", sa.String(998), nullable=True))
        batch.add_column(sa.Column("envelope_from", sa.String(320), nullable=True))
        batch.add_column(sa.Column("reserved_at", UTCDateTime(), nullable=True))
        batch.drop_index("ix_outbox_claim")
        batch.drop_index("ix_outbox_customer_sent")
    op.create_index("ix_outbox_claim", "outbox", ["status", sa.text("priority DESC"), "due_at"])
    op.create_index("ix_outbox_customer_reserved", "outbox", ["customer_id", "reserved_at"])
    op.create_table(
        "sandbox_messages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("mail_from", sa.String(320), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("subject", sa.String(998), nullable=False),
        sa.Column("message_id", sa.String(998), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_sandbox_messages_received_at", "sandbox_messages", ["received_at"])


def downgrade() -> None:
    op.drop_table("sandbox_messages")
    op.drop_index("ix_outbox_customer_reserved", "outbox")
    op.drop_index("ix_outbox_claim", "outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("reserved_at")
        batch.drop_column("subject")
        batch.alter_column("context", new_column_name="params")
        batch.drop_column("envelope_from")
        batch.create_index("ix_outbox_customer_sent", ["customer_id", "sent_at"])
        batch.create_index("ix_outbox_claim", ["status", "priority", "due_at"])
