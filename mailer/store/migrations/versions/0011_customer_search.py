"""customer search in any case and script: customers.search_text, filled for every customer

SQLite folds ASCII case only, PostgreSQL by its database's ctype; the column holds
Python's case folding of address, name and first name (mailer.customers.profiles.search_text), so
"contains" answers alike on both. On PostgreSQL a trigram index answers it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.customers.profiles import search_text

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000
CUSTOMERS = sa.table(
    "customers",
    sa.column("id", sa.Integer()),
    sa.column("email", sa.String()),
    sa.column("name", sa.String()),
    sa.column("first_name", sa.String()),
    sa.column("search_text", sa.String()),
)


def upgrade() -> None:
    op.add_column(
        "customers", sa.Column("search_text", sa.String(), nullable=False, server_default="")
    )
    _fill(op.get_bind())
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_customers_search ON customers USING gin (search_text gin_trgm_ops)"
        )


def _fill(conn: sa.Connection) -> None:
    """A thousand customers at a time, by id, so a million never sit in memory at once."""
    c = CUSTOMERS.c
    read = sa.select(c.id, c.email, c.name, c.first_name).order_by(c.id).limit(BATCH)
    write = CUSTOMERS.update().where(c.id == sa.bindparam("row_id"))
    write = write.values(search_text=sa.bindparam("folded"))
    last = 0
    while rows := conn.execute(read.where(c.id > last)).mappings().all():
        conn.execute(write, [{"row_id": r["id"], "folded": search_text(dict(r))} for r in rows])
        last = rows[-1]["id"]


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_customers_search")
    # not a batch: recreating customers would cascade-delete their tags (foreign_keys=ON)
    op.drop_column("customers", "search_text")
