"""`mailer sandbox ...`: read what the local sandbox server captured."""

from __future__ import annotations

import asyncio
from email.headerregistry import Address
from email.utils import parseaddr

import typer

from mailer.cli.common import (
    JSON_OPTION,
    LIMIT_OPTION,
    RowId,
    app_of,
    group,
    out,
    print_json,
    print_rows,
    terminal,
)
from mailer.core.errors import MailerError, NotFound, SmtpUnavailable
from mailer.core.fieldtypes import email_address
from mailer.outbound import smtp
from mailer.outbound.compose import Envelope, compose
from mailer.sandbox import smtp_server

app = group("The local sandbox: messages captured instead of delivered.")


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: int = LIMIT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Captured messages, newest first."""
    with app_of(ctx).engine().connect() as conn:
        rows = smtp_server.find(conn, limit=limit)
    print_rows(rows, ("id", "received_at", "recipients", "subject"), as_json=as_json)


@app.command("show")
def show(ctx: typer.Context, message_id: RowId, as_json: bool = JSON_OPTION) -> None:
    """One captured message: its headers, text part and HTML part."""
    with app_of(ctx).engine().connect() as conn:
        message = smtp_server.get(conn, message_id)
    if message is None:
        raise NotFound(f"no sandbox message {message_id}")
    if as_json:
        print_json(message)
        return
    for name, value in message["headers"]:
        out.print(terminal(f"{name}: {value}"))
    out.print("\n--- text ---", style="bold")
    out.print(terminal(message["text"] or "(none)"))
    out.print("\n--- HTML ---", style="bold")
    out.print(terminal(message["html"] or "(none)"))


@app.command("send-inquiry")
def send_inquiry(
    ctx: typer.Context,
    sender: str = typer.Option(
        ..., "--from", help="The customer's address, e.g. 'Ana <ana@example.com>'."
    ),
    subject: str = typer.Option(..., "--subject"),
    body: str = typer.Option(..., "--body"),
) -> None:
    """Write to support as a customer would, through the running sandbox's SMTP server."""
    app = app_of(ctx)
    cfg = app.config
    name, address = parseaddr(sender)
    try:
        address = email_address(address)
    except ValueError as exc:
        raise MailerError(str(exc)) from None
    support = parseaddr(cfg.settings.sender.reply_to or cfg.settings.sender.from_)[1]
    envelope = Envelope(from_=str(Address(name, addr_spec=address)), to_address=support)
    raw = compose(envelope, subject, body, None)
    target = smtp.SmtpTarget.from_config(cfg, sandbox=True)
    try:
        asyncio.run(smtp.send_one(target, app.clock, address, support, raw))
    except SmtpUnavailable as exc:
        raise MailerError(f"the sandbox does not answer: {exc}; start `mailer run` first") from None
    out.print(f"sent to {support}; `mailer inquiries list` shows it once the daemon has read it")
