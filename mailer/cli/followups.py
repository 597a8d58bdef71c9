"""`mailer followups ...`: dated reminders to contact a customer again."""

from __future__ import annotations

import typer

from mailer.cli.common import (
    CLI_ACTOR,
    JSON_OPTION,
    RowId,
    app_of,
    group,
    out,
    print_json,
    print_table,
)
from mailer.customers import followups
from mailer.relationship import meetings
from mailer.staff import users

app = group("Follow-ups: when to contact a customer again.")

COLUMNS = ("id", "due_at", "email", "assignee", "note", "snoozed")


@app.command("add")
def add(
    ctx: typer.Context,
    email: str,
    due: str = typer.Option(
        ..., help="3d, 4h, 2026-12-24 or '2026-12-24 15:00' (in the assignee's zone)"
    ),
    note: str = typer.Option(..., help="What to contact the customer about."),
    assignee: str = typer.Option(None, help="The staff user who should do it."),
) -> None:
    """Remind someone to contact a customer again."""
    app_ = app_of(ctx)
    now, zone = app_.clock.now(), app_.config.settings.business_hours.timezone
    with app_.engine().begin() as conn:
        due_at = followups.due_for(conn, due, assignee, now, zone)
        new = followups.NewFollowUp(
            customer_id=followups.customer_id(conn, email),
            due_at=due_at,
            note=note,
            created_by=CLI_ACTOR,
            assignee=assignee,
        )
        followup_id = followups.add(conn, new, now)
    out.print(f"follow-up {followup_id} due {due_at:%Y-%m-%d %H:%M} UTC")


@app.command("list")
def list_(
    ctx: typer.Context,
    overdue: bool = typer.Option(False, "--overdue", help="Only those past their due time."),
    assignee: str = typer.Option(None, help="Only this staff user's."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Open follow-ups, soonest first."""
    app_ = app_of(ctx)
    with app_.engine().connect() as conn:
        if assignee:  # a misspelt name would list nothing, as if they had none
            users.check_exists(conn, assignee)  # a disabled one's are listed, to hand on
        rows = followups.find(
            conn, assignee=assignee, due_before=app_.clock.now() if overdue else None
        )
    if as_json:
        print_json(rows)
    else:
        print_table(rows, COLUMNS)


@app.command("done")
def done(ctx: typer.Context, followup_id: RowId) -> None:
    """Mark a follow-up as done."""
    app_ = app_of(ctx)
    with app_.engine().begin() as conn:
        followups.done(conn, followup_id, CLI_ACTOR, app_.clock.now())
    out.print(f"follow-up {followup_id} is done")


@app.command("meeting")
def meeting(
    ctx: typer.Context,
    email: str,
    at: str = typer.Option(..., help="'2026-12-24 15:00' (in the assignee's zone) or 3d"),
    duration: str = typer.Option("30m", help="How long: 30m, 1h, 1h30m."),
    where: str = typer.Option(..., help="A room, an address or a link to join."),
    attendee: list[str] = typer.Option([], help="A staff user who also attends; repeatable."),
    assignee: str = typer.Option(None, help="The staff user the customer meets (organizer)."),
    note: str = typer.Option("", help="What the meeting is about, for staff."),
) -> None:
    """Schedule a meeting with a customer and send them a calendar invitation."""
    app_ = app_of(ctx)
    now, zone = app_.clock.now(), app_.config.settings.business_hours.timezone
    with app_.engine().begin() as conn:
        new = followups.NewFollowUp(
            customer_id=followups.customer_id(conn, email),
            due_at=followups.due_for(conn, at, assignee, now, zone),
            note=note,
            created_by=CLI_ACTOR,
            assignee=assignee,
            meeting=meetings.plan(duration, where, tuple(attendee)),
        )
        meeting_id = meetings.schedule(conn, new, meetings.Sender.from_config(app_.config), now)
    out.print(f"meeting {meeting_id} at {new.due_at:%Y-%m-%d %H:%M} UTC; invitation queued")


@app.command("move")
def move(
    ctx: typer.Context,
    meeting_id: RowId,
    at: str = typer.Option(..., help="The new start, in the assignee's zone."),
    duration: str = typer.Option(None, help="A new length; unchanged if left out."),
    where: str = typer.Option(None, help="A new place or link; unchanged if left out."),
) -> None:
    """Move a meeting; the customer's calendar gets the update."""
    app_ = app_of(ctx)
    now, zone = app_.clock.now(), app_.config.settings.business_hours.timezone
    with app_.engine().begin() as conn:
        current = followups.meeting(conn, meeting_id)
        starts_at = followups.due_for(conn, at, current["assignee"], now, zone)
        meetings.move(
            conn,
            meeting_id,
            starts_at,
            meetings.replan(current, duration, where),
            sender=meetings.Sender.from_config(app_.config),
            now=now,
        )
    out.print(f"meeting {meeting_id} moved to {starts_at:%Y-%m-%d %H:%M} UTC; update queued")


@app.command("cancel")
def cancel(ctx: typer.Context, meeting_id: RowId) -> None:
    """Call a meeting off; the customer's calendar gets the cancellation."""
    app_ = app_of(ctx)
    sender = meetings.Sender.from_config(app_.config)
    with app_.engine().begin() as conn:
        meetings.cancel(conn, meeting_id, CLI_ACTOR, sender, app_.clock.now())
    out.print(f"meeting {meeting_id} is cancelled")
