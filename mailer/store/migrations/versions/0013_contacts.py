"""the contact log (calls, meetings, notes) and each customer's last contact both ways

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

Last contacts start from what is already known: the latest mail the server accepted for
each customer (we reached them, by email) and the latest message they wrote (they reached
us, by email). Timestamps compare as stored on both databases, so MAX works on either.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _customer(*, primary_key: bool = False) -> sa.Column[int]:
    foreign = sa.ForeignKey("customers.id", ondelete="CASCADE")
    return sa.Column("customer_id", sa.Integer(), foreign, nullable=False, primary_key=primary_key)


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer(), primary_key=True),
        _customer(),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("direction", sa.String(3), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("duration_seconds", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(200), nullable=False),
        sa.Column("location", sa.String(500), nullable=False),
        sa.Column("attendees", sa.JSON(), nullable=False),
        sa.Column("note", sa.String(), nullable=False),
        sa.Column("logged_by", sa.String(100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_contacts_customer_at", "contacts", ["customer_id", "at"])
    op.create_table(
        "last_contacts",
        _customer(primary_key=True),
        sa.Column("out_at", UTCDateTime(), nullable=True),
        sa.Column("out_channel", sa.String(20), nullable=True),
        sa.Column("in_at", UTCDateTime(), nullable=True),
        sa.Column("in_channel", sa.String(20), nullable=True),
        sa.Column("last_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_last_contacts_last_at", "last_contacts", ["last_at", "customer_id"])
    op.create_index("ix_outbox_customer_updated", "outbox", ["customer_id", "updated_at"])
    op.create_index("ix_inquiries_customer_received", "inquiries", ["customer_id", "received_at"])
    op.execute(BACKFILL)


BACKFILL = """
INSERT INTO last_contacts (customer_id, out_at, out_channel, in_at, in_channel, last_at)
SELECT c.id, o.at, CASE WHEN o.at IS NULL THEN NULL ELSE 'email' END,
       i.at, CASE WHEN i.at IS NULL THEN NULL ELSE 'email' END,
       CASE WHEN i.at IS NULL OR o.at > i.at THEN o.at ELSE i.at END
FROM customers c
LEFT JOIN (SELECT customer_id, MAX(sent_at) AS at FROM outbox
           WHERE sent_at IS NOT NULL GROUP BY customer_id) o ON o.customer_id = c.id
LEFT JOIN (SELECT customer_id, MAX(received_at) AS at FROM inquiries
           GROUP BY customer_id) i ON i.customer_id = c.id
WHERE o.at IS NOT NULL OR i.at IS NOT NULL
"""


def downgrade() -> None:
    op.drop_index("ix_inquiries_customer_received", "inquiries")
    op.drop_index("ix_outbox_customer_updated", "outbox")
    op.drop_table("last_contacts")
    op.drop_table("contacts")
