"""`mailer outbox ...`: what is queued, sent, deferred, skipped or failed, and why."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import typer
from sqlalchemy.engine import Connection

from mailer.cli.common import (
    JSON_OPTION,
    LIMIT_OPTION,
    RowId,
    app_of,
    group,
    out,
    print_fields,
    print_json,
    print_rows,
    print_table,
)
from mailer.core.errors import NotFound
from mailer.outbound import outbox
from mailer.store.models import OutboxStatus

app = group("The outbox: every message on its way, and what became of it.")

COLUMNS = ("id", "status", "category", "template", "to_address", "due_at", "reason")
STATUS_HELP = "Only this status: " + ", ".join(s.value for s in OutboxStatus)


@app.command("list")
def list_(
    ctx: typer.Context,
    status: OutboxStatus | None = typer.Option(None, help=STATUS_HELP),
    limit: int = LIMIT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Messages, newest first."""
    with app_of(ctx).engine().connect() as conn:
        rows = outbox.find(conn, status=status.value if status else None, limit=limit)
    print_rows(rows, COLUMNS, as_json=as_json)


@app.command("show")
def show(ctx: typer.Context, message_id: RowId, as_json: bool = JSON_OPTION) -> None:
    """One message with every delivery attempt and the server's replies."""
    with app_of(ctx).engine().connect() as conn:
        row = outbox.get(conn, message_id)
    if row is None:
        raise NotFound(f"no outbox message {message_id}")
    if as_json:
        print_json(row)
        return
    attempts = row.pop("attempts_log")
    print_fields(row, title=f"outbox message {message_id}")
    if attempts:
        print_table(attempts, ("at", "outcome", "smtp_code", "smtp_reply"), title="attempts")


@app.command("retry")
def retry(ctx: typer.Context, message_id: RowId) -> None:
    """Queue a failed, expired, skipped or cancelled message again, due now."""
    _change(ctx, message_id, outbox.retry, "failed, expired, skipped or cancelled", "queued again")


@app.command("cancel")
def cancel(ctx: typer.Context, message_id: RowId) -> None:
    """Stop a message that is waiting or stuck while sending; `retry` queues it again."""
    _change(ctx, message_id, outbox.cancel, "queued, deferred or sending", "cancelled")


def _change(
    ctx: typer.Context,
    message_id: int,
    change: Callable[[Connection, int, datetime], bool],
    which: str,
    done: str,
) -> None:
    """An operator's change to one message, refused with what it applies to."""
    app_ = app_of(ctx)
    with app_.engine().begin() as conn:
        if not change(conn, message_id, app_.clock.now()):
            raise NotFound(f"no {which} outbox message {message_id}")
    out.print(f"outbox message {message_id} is {done}")
