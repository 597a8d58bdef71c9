"""`mailer contacts log ...`: a call, meeting or note with a customer, on their timeline."""

from __future__ import annotations

import getpass
from datetime import timedelta

import typer

from mailer.cli.common import JSON_OPTION, app_of, group, out, parse_moment, print_json
from mailer.core.durations import parse_duration
from mailer.core.errors import InvalidContact
from mailer.customers import contacts, profiles

app = group("Calls, meetings and notes: touches that are not mail.")

AT_HELP = "When it happened, with its UTC offset, e.g. 2026-12-01T09:00:00+02:00 [default: now]."


@app.command("log")
def log(
    ctx: typer.Context,
    email: str,
    kind: str = typer.Option(..., "--kind", help="call, meeting or note."),
    direction: str = typer.Option(
        None, "--direction", help="in: they reached us; out: we reached them (not for notes)."
    ),
    note: str = typer.Option("", "--note", help="What was said or agreed."),
    at: str = typer.Option(None, "--at", help=AT_HELP, show_default=False),
    duration: str = typer.Option(None, "--duration", help='A call\'s length, e.g. "15m".'),
    outcome: str = typer.Option("", "--outcome", help='E.g. "no answer", "agreed a demo".'),
    where: str = typer.Option("", "--where", help="A meeting's place or link."),
    attendees: list[str] = typer.Option([], "--attendee", help="Who was there (repeatable)."),
    by: str = typer.Option(None, "--by", help="Who logs it [default: your login name]."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Log a touch with a customer; an in or out one counts as the last contact that way."""
    app_ = app_of(ctx)
    now = app_.clock.now()
    entry = contacts.NewContact(
        kind=kind,
        direction=direction,
        at=parse_moment(at) if at else now,
        by=by or getpass.getuser(),
        note=note,
        duration=_duration(duration),
        outcome=outcome,
        location=where,
        attendees=attendees,
    )
    with app_.engine().begin() as conn:
        customer = profiles.get(conn, email)
        entry_id = contacts.log(conn, customer.id, entry, now)
    if as_json:
        print_json({"id": entry_id, "email": customer.email, "kind": kind, "at": entry.at})
    else:
        way = f" ({direction})" if direction else ""
        when = f"{entry.at:%Y-%m-%d %H:%M %Z}"
        out.print(f"logged {kind}{way} #{entry_id} for {customer.email} at {when}")


def _duration(text: str | None) -> timedelta | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise InvalidContact(f"--duration: {exc}") from None
