"""`mailer customers ...`: import, list, show, unsubscribe, export and erase."""

from __future__ import annotations

import sys
from dataclasses import asdict, fields
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import typer
from rich.text import Text

from mailer.cli.common import (
    CLI_ACTOR,
    JSON_OPTION,
    LIMIT_OPTION,
    app_of,
    err,
    group,
    json_text,
    out,
    print_fields,
    print_json,
    print_table,
    progress,
)
from mailer.core.errors import MailerError
from mailer.core.fieldtypes import MAX_ID
from mailer.customers import contacts, profiles
from mailer.customers.csv_rows import RejectedRow, shown
from mailer.inbound import inquiries
from mailer.relationship import privacy
from mailer.relationship.overview import overview

app = group("Customers: import from CSV, look up, unsubscribe, export, erase.")

LIST_COLUMNS = ("email", "name", "locale", "last_out", "last_in")  # the rest: show, --json


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV with a header row and an 'email' column."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Add or update customers from a CSV file (UTF-8, with or without BOM).

    Columns: email (required), name, first_name, locale, timezone, birthday, tags,
    marketing_consent, relationship_consent; any other column is kept as a custom field.
    A tags cell replaces the customer's tags; an empty cell keeps what is stored. Rows
    with errors are reported by line and skipped; the rest are imported.
    """
    app_ = app_of(ctx)
    engine = app_.engine()
    total = profiles.count_rows(file)  # a file that cannot be read at all stops here
    with progress(total, "rows", quiet=as_json) as advance:
        report = profiles.import_csv(engine, file, app_.clock.now(), progress=advance)
    _print_report(file, report, as_json)
    if report.rejected:
        raise typer.Exit(1)


def _print_report(file: Path, report: profiles.ImportReport, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "inserted": report.inserted,
                "updated": report.updated,
                "unchanged": report.unchanged,
                "rejected": [vars_of(r) for r in report.rejected],
                "duplicates": [{"line": a, "first_line": b} for a, b in report.duplicates],
            }
        )
        return
    name = shown(str(file))
    for line, first in report.duplicates:
        err.print(f"{name}:{line}: same email as line {first}; the later row's values were kept")
    for row in report.rejected:
        where = Text(f"{name}:{row.line}: rejected", style="red")
        err.print(Text.assemble(where, f" {row.email or '(no email)'}: {row.reason}"))
    out.print(
        f"{report.inserted} added, {report.updated} updated, {report.unchanged} unchanged, "
        f"{len(report.rejected)} rejected"
    )


def vars_of(row: RejectedRow) -> dict[str, Any]:
    return {"line": row.line, "email": row.email, "reason": row.reason}


class Sort(StrEnum):
    EMAIL = "email"
    RECENT = "recent"
    QUIET = "quiet"


@app.command("list")
def list_(
    ctx: typer.Context,
    tag: str | None = typer.Option(None, help="Only customers with this tag."),
    search: str | None = typer.Option(None, help="Text in the email or name."),
    sort: Sort = typer.Option(
        Sort.EMAIL,
        help="recent: latest contact first; quiet: never contacted, then the longest "
        "without contact, first.",
    ),
    quiet: int | None = typer.Option(
        None,
        min=0,
        max=36_500,
        metavar="DAYS",
        help="Only those with no contact either way in DAYS days.",
    ),
    unanswered: bool = typer.Option(
        False, "--unanswered", help="Only those who wrote and were never answered by a person."
    ),
    limit: int = LIMIT_OPTION,
    offset: int = typer.Option(0, min=0, max=MAX_ID),
    as_json: bool = JSON_OPTION,
) -> None:
    """List customers with their last contact each way, sorted by email unless --sort says
    otherwise."""
    app_ = app_of(ctx)
    since = app_.clock.now() - timedelta(days=quiet) if quiet is not None else None
    with app_.engine().connect() as conn:
        found = contacts.browse(
            conn,
            search=search,
            tag=tag,
            order="" if sort is Sort.EMAIL else sort.value,
            quiet_since=since,
            only=inquiries.never_answered() if unanswered else None,
            limit=limit,
            offset=offset,
        )
    if as_json:
        print_json([{**asdict(r.customer), "last_contact": r.last_contact} for r in found])
        return
    zone = app_.config.settings.business_hours.timezone
    print_table([_listed(row, zone) for row in found], LIST_COLUMNS)


def _listed(row: contacts.Listed, zone: ZoneInfo) -> dict[str, Any]:
    """A row of the table: each way's last contact as its local day and channel."""
    cells = {
        f"last_{way}": f"{c['at'].astimezone(zone):%Y-%m-%d} {c['channel']}" if c else ""
        for way, c in row.last_contact.items()
    }
    return {**asdict(row.customer), **cells}


HISTORY_COLUMNS = ("id", "created_at", "category", "template", "status", "sent_at", "reason")


@app.command("show")
def show(
    ctx: typer.Context,
    email: str,
    history: int = typer.Option(
        20, min=0, max=MAX_ID, help="How many of the latest messages to show."
    ),
    timeline: int = typer.Option(
        50, min=1, max=MAX_ID, help="How many of the latest touches to show."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """A customer's profile, timeline, last contact both ways, contact history and when
    they may next be contacted."""
    app_ = app_of(ctx)
    settings, now = app_.config.settings, app_.clock.now()
    with app_.engine().connect() as conn:
        found = overview(conn, email, now, settings, messages=history, timeline=timeline)
    if as_json:
        print_json(found)
        return
    shown_fields = {k: v for k, v in found.items() if k in _PROFILE}
    print_fields(shown_fields, title=found["email"])
    never = "never (unsubscribed or no consent)"
    allowed = {c: when or never for c, when in found["next_contact"].items()}
    print_fields(allowed, title="\nnext allowed contact")
    print_fields(_both_ways(found["last_contact"]), title="\nlast contact")
    print_table(found["timeline"], TIMELINE_COLUMNS, title="\ntimeline (newest first)")
    print_table(found["history"], HISTORY_COLUMNS, title="\ncontact history (newest first)")


_PROFILE = frozenset(f.name for f in fields(profiles.Profile))
TIMELINE_COLUMNS = ("at", "kind", "direction", "channel", "by", "title", "text")


def _both_ways(last: dict[str, dict[str, Any] | None]) -> dict[str, str]:
    named = {"out": "we reached them", "in": "they reached us"}
    return {
        named[way]: f"{seen['at']:%Y-%m-%d %H:%M %Z} by {seen['channel']}" if seen else "never"
        for way, seen in last.items()
    }


@app.command("unsubscribe")
def unsubscribe(ctx: typer.Context, email: str, as_json: bool = JSON_OPTION) -> None:
    """Stop all marketing and relationship mail to a customer, effective at once."""
    app_ = app_of(ctx)
    with app_.engine().begin() as conn:
        customer = profiles.unsubscribe(conn, email, app_.clock.now(), actor=CLI_ACTOR)
    if as_json:
        print_json(asdict(customer))
    else:
        since = customer.unsubscribed_at
        out.print(f"{customer.email} is unsubscribed since {since:%Y-%m-%d %H:%M} UTC")


@app.command("export")
def export(
    ctx: typer.Context,
    email: str,
    out_file: Path | None = typer.Option(None, "--out", help="Write here (mode 600), not stdout."),
) -> None:
    """Everything mailer holds about one customer, as JSON (a data-access request)."""
    app_ = app_of(ctx)
    with app_.engine().connect() as conn:
        data = privacy.export(conn, email, app_.clock.now())
    if out_file is None:
        print_json(data)
        return
    try:
        out_file.touch(mode=0o600, exist_ok=False)
        out_file.write_text(json_text(data) + "\n", encoding="utf-8")
    except OSError as exc:
        raise MailerError(f"{out_file}: cannot write the export ({exc.strerror or exc})") from None
    out.print(f"wrote everything about {data['customer']['email']} to {out_file}")


@app.command("erase")
def erase(
    ctx: typer.Context,
    email: str,
    yes: bool = typer.Option(False, "--yes", help="Confirm; there is no undo."),
) -> None:
    """Forget a customer for good: personal data cleared, the address kept only as a hash so
    it is never mailed again; counts and the throttle's history stay."""
    if not yes and not (sys.stdin.isatty() and typer.confirm(f"Erase {email} for good?")):
        raise MailerError(f"{email} was not erased: erasing cannot be undone, confirm with --yes")
    app_ = app_of(ctx)
    with app_.engine().begin() as conn:
        erased = privacy.erase(conn, email, app_.clock.now())
    out.print(
        f"erased {email}: {erased.messages} messages, {erased.inquiries} inquiries and "
        f"{erased.followups} follow-ups cleared, {erased.sandbox_messages} sandbox messages deleted"
    )
