"""`mailer inquiries ...`: what customers wrote to support, threaded, and its status."""

from __future__ import annotations

import typer

from mailer.cli.common import (
    CLI_ACTOR,
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
    terminal,
)
from mailer.core.errors import NotFound
from mailer.inbound import inquiries
from mailer.store.models import InquiryStatus

app = group("Inquiries: every message customers wrote to support.")

COLUMNS = ("id", "received_at", "sender", "subject", "status")  # the thread: show, --json


@app.command("list")
def list_(
    ctx: typer.Context,
    status: InquiryStatus | None = typer.Option(None, help="Only this status."),
    limit: int = LIMIT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Inquiries, newest first."""
    with app_of(ctx).engine().connect() as conn:
        rows = inquiries.find(conn, status=status.value if status else None, limit=limit)
    shown = [inquiries.columns(row) for row in rows]
    print_rows(shown, COLUMNS, as_json=as_json)


@app.command("show")
def show(ctx: typer.Context, inquiry_id: RowId, as_json: bool = JSON_OPTION) -> None:
    """One inquiry: who wrote, what, the rest of its thread."""
    with app_of(ctx).engine().connect() as conn:
        inquiry = inquiries.get(conn, inquiry_id)
    if inquiry is None:
        raise NotFound(f"no inquiry {inquiry_id}")
    thread = [inquiries.columns(message) for message in inquiry.thread]
    row = inquiries.columns(inquiry)
    if as_json:
        print_json({**row, "thread": thread})
        return
    del row["body_text"], row["reply_text"]
    print_fields(row, title=f"inquiry {inquiry_id}")
    out.print("\n" + terminal(inquiry.reply_text or inquiry.body_text))
    if len(thread) > 1:
        print_table(thread, ("id", "received_at", "subject", "status"), title="\nthread")


@app.command("set-status")
def set_status(ctx: typer.Context, inquiry_id: RowId, status: InquiryStatus) -> None:
    """Move an inquiry along: new, acknowledged, open, answered, closed."""
    app_ = app_of(ctx)
    with app_.engine().begin() as conn:
        if not inquiries.change_status(conn, inquiry_id, status, CLI_ACTOR, app_.clock.now()):
            raise NotFound(f"no inquiry {inquiry_id}")
    out.print(f"inquiry {inquiry_id} is now {status.value}")
