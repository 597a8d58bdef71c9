"""orders, their lines and products: what customers bought, money in minor units

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    customer = sa.ForeignKey("customers.id", ondelete="CASCADE")
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("order_ref", sa.String(100), nullable=False, unique=True),
        sa.Column("customer_id", sa.Integer(), customer, nullable=False),
        sa.Column("ordered_at", UTCDateTime(), nullable=False),
        sa.Column("channel", sa.String(50), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
    )
    op.create_index("ix_orders_customer_ordered", "orders", ["customer_id", "ordered_at"])
    order = sa.ForeignKey("orders.id", ondelete="CASCADE")
    op.create_table(
        "order_lines",
        sa.Column("order_id", sa.Integer(), order, primary_key=True),
        sa.Column("line_no", sa.Integer(), primary_key=True),
        sa.Column("sku", sa.String(100), nullable=False),
        sa.Column("product", sa.String(200), nullable=False),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price", sa.BigInteger(), nullable=False),
        sa.Column("unit_cost", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_order_lines_sku", "order_lines", ["sku"])
    op.create_table(
        "products",
        sa.Column("sku", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("products")
    op.drop_index("ix_order_lines_sku", "order_lines")
    op.drop_table("order_lines")
    op.drop_index("ix_orders_customer_ordered", "orders")
    op.drop_table("orders")
