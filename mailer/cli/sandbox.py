"""`mailer sandbox ...`: read what the local sandbox server captured."""

from __future__ import annotations

import typer

from mailer import sandbox
from mailer.cli.common import JSON_OPTION, app_of, out, print_json, print_table
from mailer.errors import NotFound

app = typer.Typer(
    help="The local sandbox: messages captured instead of delivered.", no_args_is_help=True
)


@app.command("list")
def list_(
    ctx: typer.Context, limit: int = typer.Option(50, min=1), as_json: bool = JSON_OPTION
) -> None:
    """Captured messages, newest first."""
    with app_of(ctx).engine().connect() as conn:
        rows = sandbox.find(conn, limit=limit)
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ("id", "received_at", "recipients", "subject"))


@app.command("show")
def show(ctx: typer.Context, message_id: int, as_json: bool = JSON_OPTION) -> None:
    """One captured message: its headers, text part and HTML part."""
    with app_of(ctx).engine().connect() as conn:
        message = sandbox.get(conn, message_id)
    if message is None:
        raise NotFound(f"no sandbox message {message_id}")
    if as_json:
        print_json(message)
        return
    for name, value in message["headers"]:
        out.print(f"{name}: {value}")
    out.print("\n--- text ---", style="bold")
    out.print(message["text"] or "(none)")
    out.print("\n--- HTML ---", style="bold")
    out.print(message["html"] or "(none)")
