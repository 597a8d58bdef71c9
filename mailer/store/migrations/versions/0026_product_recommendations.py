"""product_recommendations: for each SKU, what customers who bought it also bought

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "product_recommendations",
        sa.Column("sku", sa.String(100), primary_key=True),
        sa.Column("rank", sa.Integer(), primary_key=True),
        sa.Column("other_sku", sa.String(100), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("product_recommendations")
