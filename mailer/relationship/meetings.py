"""Meetings with a customer: a follow-up with a time, a place and attendees, whose invitation
reaches the customer's calendar.

The invitation is transactional (the customer agreed to meet) and goes through the outbox
like any message. Every message about one meeting names the same UID, and each change
the calendar shows (a new time, length or place, or the cancellation) raises its SEQUENCE,
so the customer's calendar updates the event it holds instead of adding a second one.
Each version is queued under its own dedupe key, so asking twice sends it once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection

from mailer.core.categories import Category
from mailer.core.config import Config
from mailer.core.durations import parse_duration
from mailer.core.errors import MailerError, NotFound
from mailer.customers import followups
from mailer.customers.followups import MeetingPlan, NewFollowUp
from mailer.outbound import outbox
from mailer.outbound.outbox import NewMessage
from mailer.outbound.prepare import FROM_NAME

TEMPLATE = "meeting_invitation"
Method = Literal["REQUEST", "CANCEL"]
NO_ZONE = ZoneInfo("UTC")  # staff are looked up here for their names, not where they are


@dataclass(frozen=True, slots=True)
class Sender:
    """The support address invitations come from and answers go to, and the company name
    the calendar shows the meeting under."""

    address: str
    company: str

    @classmethod
    def from_config(cls, cfg: Config) -> Sender:
        settings = cfg.settings
        return cls(parseaddr(settings.sender.from_)[1], str(settings.company.get("name", "")))

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


def dedupe_key(meeting_id: int, sequence: int) -> str:
    """One message per version of the event."""
    return f"meeting:{meeting_id}:{sequence}"


def context(
    meeting: Mapping[str, Any],
    sender: Sender,
    *,
    organizer: str,
    attendees: list[str],
    method: Method,
) -> dict[str, Any]:
    """The templates' ``meeting`` and the ``calendar`` event for a followups row; pure.
    ``organizer`` and ``attendees`` are staff display names."""
    starts = meeting["due_at"].astimezone(UTC)
    duration = timedelta(minutes=int(meeting["duration_minutes"]))
    place = str(meeting["place"])
    sequence = int(meeting["sequence"])
    title = f"{sender.company}: {organizer}" if sender.company else organizer
    return {
        "meeting": {
            "starts_at": starts,
            "ends_at": starts + duration,
            "duration": duration,
            "place": place,
            "online": place.startswith(("https://", "http://")),
            "organizer": organizer,
            "attendees": attendees,
            "changed": sequence > 0 and method == "REQUEST",
            "cancelled": method == "CANCEL",
        },
        "calendar": {
            "uid": followups.meeting_uid(int(meeting["id"]), sender.domain),
            "sequence": sequence,
            "method": method,
            "title": title,
            "description": ", ".join(dict.fromkeys([organizer, *attendees])),
            "starts_at": starts,
            "ends_at": starts + duration,
            "join_url": place,
            "organizer": sender.address,
            "organizer_name": organizer,
        },
        FROM_NAME: organizer,
    }


def plan(duration: str, place: str, attendees: tuple[str, ...] = ()) -> MeetingPlan:
    """A plan from what a person typed (``30m``, ``1h``); one clear error for bad input."""
    try:
        length = parse_duration(duration)
    except ValueError as exc:
        raise MailerError(f"duration: {exc}") from None
    return MeetingPlan(duration=length, place=place, attendees=attendees)


def replan(meeting: Mapping[str, Any], duration: str | None, place: str | None) -> MeetingPlan:
    """A moved meeting's plan: what was given, else what it was."""
    kept = MeetingPlan(
        duration=timedelta(minutes=int(meeting["duration_minutes"])), place=str(meeting["place"])
    )
    return MeetingPlan(
        duration=plan(duration, kept.place).duration if duration else kept.duration,
        place=place or kept.place,
    )


def schedule(conn: Connection, new: NewFollowUp, sender: Sender, now: datetime) -> int:
    """Record the meeting and queue its invitation, in the caller's transaction."""
    if new.meeting is None:
        raise ValueError("a meeting needs its plan")
    _check(conn, new.due_at, new.meeting, now)
    meeting_id = followups.add(conn, new, now)
    _queue(conn, followups.meeting(conn, meeting_id), sender, "REQUEST", now)
    return meeting_id


def move(
    conn: Connection,
    meeting_id: int,
    starts_at: datetime,
    plan: MeetingPlan,
    *,
    sender: Sender,
    now: datetime,
) -> None:
    """A new time, length or place, and the update that tells the customer's calendar."""
    _check(conn, starts_at, plan, now)
    followups.move(conn, meeting_id, starts_at, plan)
    _queue(conn, followups.meeting(conn, meeting_id), sender, "REQUEST", now)


def cancel(conn: Connection, meeting_id: int, by: str, sender: Sender, now: datetime) -> None:
    """Call it off; the customer hears of it unless it has already begun."""
    meeting = followups.meeting(conn, meeting_id)
    followups.cancel(conn, meeting_id, by, now)
    if meeting["due_at"] > now:
        _queue(conn, {**meeting, "sequence": meeting["sequence"] + 1}, sender, "CANCEL", now)


def _check(conn: Connection, starts_at: datetime, plan: MeetingPlan, now: datetime) -> None:
    if starts_at <= now:
        raise MailerError(f"a meeting cannot start in the past ({starts_at:%Y-%m-%d %H:%M} UTC)")
    unknown = set(plan.attendees) - set(followups.agents(conn, NO_ZONE))
    if unknown:
        raise NotFound(f"no staff user named {', '.join(map(repr, sorted(unknown)))}")


def _queue(
    conn: Connection, meeting: Mapping[str, Any], sender: Sender, method: Method, now: datetime
) -> None:
    staff = followups.agents(conn, NO_ZONE)
    organizer = meeting["assignee"] or meeting["created_by"]
    shown = staff[organizer].display_name if organizer in staff else organizer
    names = [staff[n].display_name if n in staff else n for n in meeting["attendees"] or []]
    message = NewMessage(
        dedupe_key=dedupe_key(int(meeting["id"]), int(meeting["sequence"])),
        to_address=meeting["email"],
        category=Category.TRANSACTIONAL,
        template=TEMPLATE,
        customer_id=meeting["customer_id"],
        context=context(meeting, sender, organizer=shown, attendees=names, method=method),
        priority=100,
        valid_for=meeting["due_at"] - now,  # news of a meeting is worth nothing once it began
    )
    outbox.enqueue_in(conn, [message], now)
