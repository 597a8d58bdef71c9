"""customer_insights and insight_fits: per-customer figures from the orders, and the models
they came from

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.db import UTCDateTime

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    customer = sa.ForeignKey("customers.id", ondelete="CASCADE")
    op.create_table(
        "customer_insights",
        sa.Column("customer_id", sa.Integer(), customer, primary_key=True),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("first_order", sa.Date(), nullable=False),
        sa.Column("last_order", sa.Date(), nullable=False),
        sa.Column("recency_days", sa.Integer(), nullable=False),
        sa.Column("frequency", sa.Integer(), nullable=False),
        sa.Column("span_days", sa.Integer(), nullable=False),
        sa.Column("age_days", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("monetary", sa.BigInteger(), nullable=False),
        sa.Column("mean_repeat", sa.Float(), nullable=False),
        sa.Column("margin", sa.BigInteger(), nullable=True),
        sa.Column("r_score", sa.Integer(), nullable=False),
        sa.Column("f_score", sa.Integer(), nullable=False),
        sa.Column("m_score", sa.Integer(), nullable=False),
        sa.Column("rfm_segment", sa.String(50), nullable=False),
        sa.Column("p_active", sa.Float(), nullable=True),
        sa.Column("horizon_days", sa.Integer(), nullable=False),
        sa.Column("expected_orders", sa.Float(), nullable=True),
        sa.Column("clv", sa.BigInteger(), nullable=True),
        sa.Column("predicted_next_order", sa.Date(), nullable=True),
        sa.Column("next_order_confidence", sa.Float(), nullable=True),
        sa.Column("basis", sa.String(30), nullable=False),
        sa.Column("one_time_buyer", sa.Boolean(), nullable=False),
        sa.Column("preferred_channel", sa.String(50), nullable=False),
        sa.Column("basket", sa.JSON(), nullable=False),
    )
    op.create_index("ix_customer_insights_segment", "customer_insights", ["rfm_segment"])
    op.create_table(
        "insight_fits",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("fitted_at", UTCDateTime(), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("failure", sa.String(500), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("insight_fits")
    op.drop_index("ix_customer_insights_segment", "customer_insights")
    op.drop_table("customer_insights")
