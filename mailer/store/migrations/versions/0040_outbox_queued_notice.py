"""outbox_queued: on PostgreSQL, a NOTIFY on channel mailer_outbox after each insert into
the outbox, so an idle delivery worker in another process looks at the queue at once

Revision ID: 0040
Revises: 0039
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0040"
down_revision: str | None = "0039"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the channel mailer.outbound.outbox.QUEUED_CHANNEL listens on, written out: a migration
# keeps what it created even when the code's names change later


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: a worker watches the file's data version instead
    op.execute(
        """
        CREATE FUNCTION outbox_queued_notice() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('mailer_outbox', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER outbox_queued AFTER INSERT ON outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION outbox_queued_notice()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER outbox_queued ON outbox")
    op.execute("DROP FUNCTION outbox_queued_notice()")
