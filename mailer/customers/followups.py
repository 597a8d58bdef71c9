"""Follow-ups: dated reminders that someone contacts a customer again (owner of ``followups``).

Due times are stored in UTC and entered in the agent's own zone: a date-time written
without a zone is read in the assignee's zone, else in the business zone. Who gets a
morning digest, and when, is decided here by a pure function over plain data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, func, insert, or_, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from mailer.core import fieldtypes
from mailer.core.durations import parse_duration
from mailer.core.errors import MailerError, NotFound
from mailer.core.text import plain_lines
from mailer.customers.profiles import CUSTOMERS
from mailer.hooks import events as webhooks
from mailer.hooks.events import EventType
from mailer.staff.users import USERS
from mailer.store.models import FollowUp, FollowUpStatus

FOLLOWUPS: Table = FollowUp.__table__  # type: ignore[attr-defined]
DAY_STARTS = time(9, 0)  # a due date without a time means the start of that working day
NOTE_MAX = 10_000
PLACE_MAX = 500
_MEETING_UID = re.compile(r"meeting-(\d{1,18})@(.+)")


def meeting_uid(meeting_id: int, domain: str) -> str:
    """The calendar UID every message about one meeting names."""
    return f"meeting-{meeting_id}@{domain}"


def meeting_of_uid(uid: str) -> tuple[int, str] | None:
    """(meeting id, domain) of a UID ``meeting_uid`` made, None for any other UID."""
    found = _MEETING_UID.fullmatch(uid)
    return (int(found[1]), found[2].lower()) if found else None


def parse_due(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """``3d``, ``2h30m`` (from now), ``2026-12-24`` or ``2026-12-24T15:00`` (in ``zone``
    unless it carries an offset) as a UTC time; ValueError says what is accepted."""
    text = text.strip()
    try:
        return now + parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a due time; write a duration such as '3d' or '4h', "
            "a date such as '2026-12-24' or a date-time such as '2026-12-24 15:00'"
        ) from None
    if len(text) <= len("2026-12-24"):
        when = datetime.combine(when.date(), DAY_STARTS)
    try:
        return fieldtypes.wall_moment(when, zone).astimezone(now.tzinfo)
    except ValueError as exc:
        raise ValueError(f"{text!r} is {exc}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    """A staff user as follow-ups see them: where they are and where their digest goes."""

    name: str
    display_name: str
    zone: ZoneInfo
    email: str | None


def agents(conn: Connection, fallback: ZoneInfo) -> dict[str, Agent]:
    """Every enabled staff user by name; those without a zone are in ``fallback``."""
    rows = conn.execute(
        select(USERS.c.name, USERS.c.display_name, USERS.c.timezone, USERS.c.email).where(
            USERS.c.disabled.is_(False)
        )
    ).mappings()
    return {row["name"]: _agent(row, fallback) for row in rows}


def _agent(row: Any, fallback: ZoneInfo) -> Agent:
    try:
        zone = fieldtypes.zone(row["timezone"]) if row["timezone"] else fallback
    except ValueError:  # validated when set; a zone the system dropped falls back
        zone = fallback
    return Agent(
        name=row["name"],
        display_name=row["display_name"] or row["name"],
        zone=zone,
        email=row["email"],
    )


def agent(conn: Connection, name: str, fallback: ZoneInfo) -> Agent:
    """The enabled user named ``name``; one clear error otherwise."""
    found = agents(conn, fallback).get(name)
    if found is None:
        raise NotFound(f"no staff user named {name!r}")
    return found


def due_for(
    conn: Connection, text: str, assignee: str | None, now: datetime, fallback: ZoneInfo
) -> datetime:
    """``parse_due`` in the assignee's zone (checking they exist), else in ``fallback``."""
    zone = agent(conn, assignee, fallback).zone if assignee else fallback
    try:
        return parse_due(text, now, zone)
    except ValueError as exc:
        raise MailerError(f"due: {exc}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewFollowUp:
    customer_id: int
    due_at: datetime
    note: str
    created_by: str
    assignee: str | None = None
    inquiry_id: int | None = None
    contact_id: int | None = None  # the call or meeting it came from
    meeting: MeetingPlan | None = None  # a meeting starts at due_at


@dataclass(frozen=True, slots=True, kw_only=True)
class MeetingPlan:
    """What makes a follow-up a meeting; the customer is always invited, so only staff
    are named."""

    duration: timedelta
    place: str
    attendees: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not timedelta(minutes=1) <= self.duration <= timedelta(hours=24):
            raise MailerError("a meeting lasts between a minute and a day")
        if not self.place.strip() or len(self.place) > PLACE_MAX:
            raise MailerError(f"a meeting needs a place or a link, at most {PLACE_MAX} characters")

    def columns(self) -> dict[str, Any]:
        return {
            "duration_minutes": int(self.duration.total_seconds() // 60),
            "place": self.place.strip(),
            "attendees": list(dict.fromkeys(self.attendees)),
        }


def customer_id(conn: Connection, email: str) -> int:
    """The customer's id by address: the one read of ``customers`` follow-ups need."""
    found = conn.execute(
        select(CUSTOMERS.c.id).where(CUSTOMERS.c.email == email.strip().lower())
    ).scalar()
    if found is None:
        raise NotFound(f"no customer with the address {email.strip()!r}")
    return int(found)


def add(conn: Connection, new: NewFollowUp, now: datetime) -> int:
    """Record a follow-up; returns its id, which `mailer followups done` takes."""
    if len(new.note) > NOTE_MAX:
        raise MailerError(f"a follow-up's note has at most {NOTE_MAX} characters")
    values = {
        "customer_id": new.customer_id,
        "due_at": new.due_at,
        "assignee": new.assignee,
        "note": plain_lines(new.note),
        "inquiry_id": new.inquiry_id,
        "contact_id": new.contact_id,
        "status": FollowUpStatus.OPEN,
        "created_by": new.created_by,
        "created_at": now,
        "snoozed": 0,
        **(new.meeting.columns() if new.meeting else {}),
    }
    try:
        new_id = conn.execute(insert(FOLLOWUPS).values(**values)).inserted_primary_key
    except IntegrityError:  # the customer or the inquiry is gone, or never was
        raise NotFound("no such customer or inquiry for a follow-up") from None
    assert new_id is not None
    return int(new_id[0])


def find(
    conn: Connection, *, due_before: datetime | None = None, assignee: str | None = None
) -> list[dict[str, Any]]:
    """Open follow-ups, soonest first, with the customer's address and name."""
    query = (
        select(FOLLOWUPS, CUSTOMERS.c.email, CUSTOMERS.c.name.label("customer_name"))
        .join(CUSTOMERS, CUSTOMERS.c.id == FOLLOWUPS.c.customer_id)
        .where(FOLLOWUPS.c.status == FollowUpStatus.OPEN)
        .order_by(FOLLOWUPS.c.due_at, FOLLOWUPS.c.id)
    )
    if assignee is not None:
        query = query.where(FOLLOWUPS.c.assignee == assignee)
    if due_before is not None:
        query = query.where(FOLLOWUPS.c.due_at < due_before)
    return [dict(row) for row in conn.execute(query).mappings()]


def of_customer(conn: Connection, customer_id: int) -> list[dict[str, Any]]:
    """Every follow-up and meeting about a customer, open or not, newest due first."""
    query = (
        select(FOLLOWUPS)
        .where(FOLLOWUPS.c.customer_id == customer_id)
        .order_by(FOLLOWUPS.c.due_at.desc(), FOLLOWUPS.c.id.desc())
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def erase_customer(conn: Connection, customer_id: int) -> int:
    """Clear what staff wrote about an erased customer (notes, a meeting's place), keeping
    who, when and the status; open ones are closed, since nobody is left to contact."""
    about = FOLLOWUPS.c.customer_id == customer_id
    conn.execute(
        update(FOLLOWUPS)
        .where(about, FOLLOWUPS.c.status == FollowUpStatus.OPEN)
        .values(status=FollowUpStatus.CANCELLED)
    )
    return int(conn.execute(update(FOLLOWUPS).where(about).values(note="", place=None)).rowcount)


def overdue_count(conn: Connection, assignee: str, now: datetime) -> int:
    """What the desk's navigation shows (index on assignee, status, due_at)."""
    query = select(func.count()).where(
        FOLLOWUPS.c.assignee == assignee,
        FOLLOWUPS.c.status == FollowUpStatus.OPEN,
        FOLLOWUPS.c.due_at < now,
    )
    return int(conn.execute(query).scalar_one())


def done(conn: Connection, followup_id: int, by: str, now: datetime) -> None:
    """Kept, not deleted: who contacted the customer, and when, stays on record."""
    _change(conn, followup_id, status=FollowUpStatus.DONE, done_at=now, done_by=by)


def snooze(conn: Connection, followup_id: int, delay: timedelta, now: datetime) -> None:
    """Due ``delay`` later than now, or than when it was due if that is still ahead; a
    meeting is moved instead, since the customer must hear of it."""
    row = conn.execute(
        select(FOLLOWUPS.c.due_at, FOLLOWUPS.c.duration_minutes).where(
            FOLLOWUPS.c.id == followup_id
        )
    ).first()
    if row is None:
        raise NotFound(f"no follow-up {followup_id}")
    due, minutes = row
    if minutes is not None:
        raise MailerError(f"follow-up {followup_id} is a meeting: move it instead")
    _change(conn, followup_id, due_at=max(due, now) + delay, snoozed=FOLLOWUPS.c.snoozed + 1)


def meeting(conn: Connection, followup_id: int) -> dict[str, Any]:
    """An open meeting with its customer's address and name; one clear error otherwise."""
    row = (
        conn.execute(
            select(FOLLOWUPS, CUSTOMERS.c.email, CUSTOMERS.c.name.label("customer_name"))
            .join(CUSTOMERS, CUSTOMERS.c.id == FOLLOWUPS.c.customer_id)
            .where(
                FOLLOWUPS.c.id == followup_id,
                FOLLOWUPS.c.status == FollowUpStatus.OPEN,
                FOLLOWUPS.c.duration_minutes.is_not(None),
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound(f"no open meeting {followup_id}")
    return dict(row)


def move(conn: Connection, followup_id: int, starts_at: datetime, plan: MeetingPlan) -> None:
    """A new time, length or place: the calendar event's next version."""
    meeting(conn, followup_id)
    columns = {k: v for k, v in plan.columns().items() if k != "attendees" or v}
    _change(conn, followup_id, due_at=starts_at, sequence=FOLLOWUPS.c.sequence + 1, **columns)


def cancel(conn: Connection, followup_id: int, by: str, now: datetime) -> None:
    """Called off, and kept on record: the last version of its calendar event says so."""
    meeting(conn, followup_id)
    _change(
        conn,
        followup_id,
        status=FollowUpStatus.CANCELLED,
        done_at=now,
        done_by=by,
        sequence=FOLLOWUPS.c.sequence + 1,
    )


def reassign(conn: Connection, followup_id: int, assignee: str | None) -> None:
    _change(conn, followup_id, assignee=assignee)


def _change(conn: Connection, followup_id: int, **values: Any) -> None:
    """Change an open follow-up; a done or unknown one is a clear error."""
    changed = conn.execute(
        update(FOLLOWUPS)
        .where(FOLLOWUPS.c.id == followup_id, FOLLOWUPS.c.status == FollowUpStatus.OPEN)
        .values(**values)
    ).rowcount
    if not changed:
        raise NotFound(f"no open follow-up {followup_id}")


def tell_due(conn: Connection, now: datetime) -> int:
    """Record a ``followup.due`` webhook for each open follow-up whose due time has come and
    was not told yet; returns how many. One UPDATE marks them (``told_due_at`` takes the due
    time told), so a restart or a second daemon tells none twice: on PostgreSQL the second
    UPDATE waits for the first and then finds the rows told. A follow-up moved to a new due
    time is told again when that comes."""
    f = FOLLOWUPS.c
    told = (
        conn.execute(
            update(FOLLOWUPS)
            .where(
                f.status == FollowUpStatus.OPEN,
                f.due_at <= now,
                or_(f.told_due_at.is_(None), f.told_due_at != f.due_at),
            )
            .values(told_due_at=f.due_at)
            .returning(f.id, f.customer_id, f.due_at, f.note, f.assignee)
        )
        .mappings()
        .all()
    )
    if told:
        webhooks.record(conn, EventType.FOLLOWUP_DUE, _due_events(conn, told), now)
    return len(told)


def _due_events(conn: Connection, told: Sequence[RowMapping]) -> Iterator[dict[str, Any]]:
    """What ``followup.due`` says, read only when some endpoint wants it."""
    ids = {row["customer_id"] for row in told}
    query = select(CUSTOMERS.c.id, CUSTOMERS.c.email).where(CUSTOMERS.c.id.in_(ids))
    emails = {row.id: row.email for row in conn.execute(query)}
    for row in sorted(told, key=lambda r: (r["due_at"], r["id"])):
        yield {
            "followup_id": row["id"],
            "customer_id": row["customer_id"],
            "email": emails.get(row["customer_id"]),
            "due_at": row["due_at"],
            "note": row["note"],
            "assignee": row["assignee"],
        }


def end_of_day(now: datetime, zone: ZoneInfo) -> datetime:
    """The next local midnight in ``zone``, in UTC: what is due before it is due today."""
    tomorrow = now.astimezone(zone).date() + timedelta(days=1)
    return datetime.combine(tomorrow, time(0), tzinfo=zone).astimezone(now.tzinfo)


@dataclass(frozen=True, slots=True)
class Digest:
    agent: Agent
    day: date  # the agent's local date: one digest per agent and day

    @property
    def dedupe_key(self) -> str:
        return f"followups-digest:{self.agent.name}:{self.day.isoformat()}"


def digests_due(
    staff: Iterable[Agent],
    earliest_due: Mapping[str, datetime],
    now: datetime,
    send_at: time,
) -> list[Digest]:
    """Agents owed a digest now: an address, ``send_at`` passed in their own zone today,
    and an open follow-up due before their local midnight. Sending is idempotent per day,
    so asking again later that day (a restart, the next tick) adds nothing."""
    found = []
    for person in staff:
        local = now.astimezone(person.zone)
        first = earliest_due.get(person.name)
        if not person.email or first is None or local.time() < send_at:
            continue
        if first < end_of_day(now, person.zone):
            found.append(Digest(person, local.date()))
    return found


def earliest_due(conn: Connection) -> dict[str, datetime]:
    """Each assignee's soonest open follow-up."""
    query = (
        select(FOLLOWUPS.c.assignee, func.min(FOLLOWUPS.c.due_at))
        .where(FOLLOWUPS.c.status == FollowUpStatus.OPEN, FOLLOWUPS.c.assignee.is_not(None))
        .group_by(FOLLOWUPS.c.assignee)
    )
    return {name: first for name, first in conn.execute(query)}


def by_day(
    rows: Sequence[Mapping[str, Any]], now: datetime, zone: ZoneInfo
) -> dict[str, list[Any]]:
    """Open follow-ups as "overdue", "today" and "upcoming" for someone in ``zone``."""
    midnight = end_of_day(now, zone)
    groups: dict[str, list[Any]] = {"overdue": [], "today": [], "upcoming": []}
    for row in rows:
        due = row["due_at"]
        groups["overdue" if due < now else "today" if due < midnight else "upcoming"].append(row)
    return groups
