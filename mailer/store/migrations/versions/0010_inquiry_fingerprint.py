"""inquiries: Message-ID unique only with a content fingerprint; the inquiry a message claims

Broken mailers reuse Message-IDs, so a Message-ID alone dropped a second, different message
as a duplicate. The unique constraint moves to (message_id, fingerprint); rows logged before
keep a NULL fingerprint, which the inquiry log computes from their raw bytes when needed.
``claimed_thread_id`` names the inquiry a message said it continues when its sender was
no participant of that thread.

SQLite cannot drop a column's unique constraint without copying the table. Copying drops
the table's triggers (the search triggers of 0009 are made again) and, with foreign keys on,
the implicit delete of the old table cascades to inquiry_events (they are kept aside and
put back).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNIQUE = "uq_inquiries_message_fingerprint"
# Names the unnamed UNIQUE of 0002 on SQLite, so that the copy can leave it out.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _keep_events()
    else:
        op.drop_constraint("inquiries_message_id_key", "inquiries", type_="unique")
    with op.batch_alter_table("inquiries", naming_convention=NAMING) as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
        batch.add_column(sa.Column("claimed_thread_id", sa.Integer(), nullable=True))
        if sqlite:
            batch.drop_constraint("uq_inquiries_message_id", type_="unique")
        batch.create_unique_constraint(UNIQUE, ["message_id", "fingerprint"])
        batch.create_index("ix_inquiries_message_id", ["message_id"])
    if sqlite:
        _restore_after_copy()


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _keep_events()
    with op.batch_alter_table("inquiries", naming_convention=NAMING) as batch:
        batch.drop_index("ix_inquiries_message_id")
        batch.drop_constraint(UNIQUE, type_="unique")
        batch.drop_column("claimed_thread_id")
        batch.drop_column("fingerprint")
        batch.create_unique_constraint(
            "uq_inquiries_message_id" if sqlite else "inquiries_message_id_key", ["message_id"]
        )
    if sqlite:
        _restore_after_copy()


def _keep_events() -> None:
    op.execute("CREATE TEMP TABLE kept_inquiry_events AS SELECT * FROM inquiry_events")


def _restore_after_copy() -> None:
    op.execute(
        "INSERT INTO inquiry_events SELECT * FROM kept_inquiry_events "
        "WHERE id NOT IN (SELECT id FROM inquiry_events)"
    )
    op.execute("DROP TABLE kept_inquiry_events")
    for statement in _search_triggers():
        op.execute(statement)


def _search_triggers() -> list[str]:
    """The trigger statements of revision 0009, read from it rather than copied."""
    path = Path(__file__).with_name("0009_inquiry_search.py")
    spec = importlib.util.spec_from_file_location("inquiry_search_0009", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [s for s in module.SQLITE_UP if s.startswith("CREATE TRIGGER")]
