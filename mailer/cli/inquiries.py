"""`mailer inquiries ...`: what customers wrote to support, threaded, and its status."""

from __future__ import annotations

import typer

from mailer.cli.common import JSON_OPTION, app_of, out, print_fields, print_json, print_table
from mailer.core.errors import NotFound
from mailer.inbound import inquiries
from mailer.store.models import InquiryStatus

CLI_ACTOR = "command line"  # who the inquiry's history says moved it
app = typer.Typer(help="Inquiries: every message customers wrote to support.", no_args_is_help=True)

COLUMNS = ("id", "received_at", "sender", "subject", "status", "thread_id")


@app.command("list")
def list_(
    ctx: typer.Context,
    status: InquiryStatus | None = typer.Option(None, help="Only this status."),
    limit: int = typer.Option(50, min=1),
    as_json: bool = JSON_OPTION,
) -> None:
    """Inquiries, newest first."""
    with app_of(ctx).engine().connect() as conn:
        rows = inquiries.find(conn, status=status.value if status else None, limit=limit)
    if as_json:
        print_json(rows)
    else:
        print_table(rows, COLUMNS)


@app.command("show")
def show(ctx: typer.Context, inquiry_id: int, as_json: bool = JSON_OPTION) -> None:
    """One inquiry: who wrote, what, the rest of its thread."""
    with app_of(ctx).engine().connect() as conn:
        row = inquiries.get(conn, inquiry_id)
    if row is None:
        raise NotFound(f"no inquiry {inquiry_id}")
    if as_json:
        print_json(row)
        return
    thread, text = row.pop("thread"), row.pop("reply_text") or row["body_text"]
    row.pop("body_text")
    print_fields(row, title=f"inquiry {inquiry_id}")
    out.print("\n" + text)
    if len(thread) > 1:
        print_table(thread, ("id", "received_at", "subject", "status"), title="\nthread")


@app.command("set-status")
def set_status(ctx: typer.Context, inquiry_id: int, status: InquiryStatus) -> None:
    """Move an inquiry along: new, acknowledged, open, answered, closed."""
    app_ = app_of(ctx)
    with app_.engine().begin() as conn:
        if not inquiries.change_status(conn, inquiry_id, status, CLI_ACTOR, app_.clock.now()):
            raise NotFound(f"no inquiry {inquiry_id}")
    out.print(f"inquiry {inquiry_id} is now {status.value}")
