"""Customers' answers to our calendar invitations (owner of ``calendar_replies``).

A calendar client mails an iTIP REPLY (see ``itip``) when the customer clicks Accept,
Maybe or Decline. A reply naming one of our events (a webinar's UID, kept in
``webinar_events``, or a meeting's) is kept as that customer's answer to it: one row per
event and customer, replaced only by a newer answer, so an old reply that arrives late
does not undo the customer's latest word.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.engine import Connection

from mailer.customers.followups import FOLLOWUPS, meeting_of_uid
from mailer.customers.profiles import CUSTOMERS
from mailer.inbound.itip import ANSWERS, CalendarReply
from mailer.store.models import CalendarReply as CalendarReplyRow
from mailer.store.models import WebinarEvent

CALENDAR_REPLIES: Table = CalendarReplyRow.__table__  # type: ignore[attr-defined]
WEBINAR_EVENTS: Table = WebinarEvent.__table__  # type: ignore[attr-defined]
NAMES_SHOWN: Final = 10  # who answered, by name, up to this many per answer


@dataclass(frozen=True, slots=True)
class Event:
    """Which of our events a UID names: a webinar's schedule or a meeting's follow-up."""

    schedule: str | None = None
    followup_id: int | None = None


def event_of(conn: Connection, uid: str, domains: Collection[str]) -> Event | None:
    """Our event with this UID, or None: a meeting's UID counts only at one of our domains
    and while the meeting exists."""
    webinars = WEBINAR_EVENTS.c
    schedule = conn.execute(select(webinars.schedule).where(webinars.uid == uid)).scalar()
    if schedule is not None:
        return Event(schedule=schedule)
    meeting = meeting_of_uid(uid)
    if meeting is None or meeting[1] not in domains:
        return None
    f = FOLLOWUPS.c
    found = conn.execute(
        select(f.id).where(f.id == meeting[0], f.duration_minutes.is_not(None))
    ).scalar()
    return None if found is None else Event(followup_id=int(found))


def customer_of(conn: Connection, reply: CalendarReply, sender_customer: int | None) -> int | None:
    """The customer the attendee address belongs to, else the one who sent the mail."""
    found = conn.execute(select(CUSTOMERS.c.id).where(CUSTOMERS.c.email == reply.attendee))
    return next(iter(found.scalars()), sender_customer)


def record(
    conn: Connection,
    reply: CalendarReply,
    event: Event,
    *,
    customer_id: int,
    inquiry_id: int,
    now: datetime,
) -> bool:
    """Keep the answer unless a newer one is already kept; True when it was kept."""
    c = CALENDAR_REPLIES.c
    earlier = conn.execute(
        select(c.id, c.sequence, c.stamp).where(c.uid == reply.uid, c.customer_id == customer_id)
    ).first()
    if earlier is not None and not reply.newer_than(earlier.sequence, earlier.stamp):
        return False
    values = {
        "answer": reply.answer,
        "sequence": reply.sequence,
        "stamp": reply.stamp,
        "title": reply.title,
        "answered_at": now,
        "inquiry_id": inquiry_id,
    }
    if earlier is None:
        ids = {"uid": reply.uid, "customer_id": customer_id}
        where = {"schedule": event.schedule, "followup_id": event.followup_id}
        conn.execute(insert(CALENDAR_REPLIES).values(**ids, **where, **values))
    else:
        conn.execute(update(CALENDAR_REPLIES).where(c.id == earlier.id).values(**values))
    return True


@dataclass(frozen=True, slots=True)
class Answers:
    """How many answered a webinar each way, and the first few of them by name."""

    counts: dict[str, int]
    names: dict[str, list[str]]


def of_webinar(conn: Connection, schedule: str) -> Answers:
    """Accepted, tentative and declined, each with its count and up to NAMES_SHOWN names
    (the earliest answers first)."""
    c, people = CALENDAR_REPLIES.c, CUSTOMERS.c
    counts = dict.fromkeys(ANSWERS.values(), 0)
    found = conn.execute(
        select(c.answer, func.count()).where(c.schedule == schedule).group_by(c.answer)
    )
    counts.update({answer: int(n) for answer, n in found})
    rows = conn.execute(
        select(c.answer, people.name, people.email)
        .join(CUSTOMERS, people.id == c.customer_id)
        .where(c.schedule == schedule)
        .order_by(c.answered_at, c.id)
    )
    names: dict[str, list[str]] = {answer: [] for answer in counts}
    for answer, name, email in rows:
        shown = names.setdefault(answer, [])
        if len(shown) < NAMES_SHOWN:
            shown.append(name or email)
    return Answers(counts, names)


def of_meetings(conn: Connection, customer_id: int) -> dict[int, str]:
    """The customer's answer to each of their meetings that they answered, by follow-up id."""
    c = CALENDAR_REPLIES.c
    found = conn.execute(
        select(c.followup_id, c.answer).where(
            c.customer_id == customer_id, c.followup_id.is_not(None)
        )
    )
    return {int(followup_id): str(answer) for followup_id, answer in found}
