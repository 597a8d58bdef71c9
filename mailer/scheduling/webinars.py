"""A webinar's calendar identity and the template context of its messages.

Calendar clients match an invitation to the event they already hold by its UID, and take it
as newer only when its SEQUENCE is higher (RFC 5546). So the UID is fixed per schedule
file, and the SEQUENCE grows exactly when what a calendar shows changes: the time, the
length, the place (join link), or the cancellation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import formataddr
from typing import Any, Literal

from sqlalchemy import Table, select, update
from sqlalchemy.engine import Connection

from mailer.scheduling.occurrences import WebinarState
from mailer.scheduling.schedules import WebinarSchedule
from mailer.store.models import WebinarEvent

WEBINAR_EVENTS: Table = WebinarEvent.__table__  # type: ignore[attr-defined]


def uid(schedule_name: str, domain: str) -> str:
    return f"webinar-{schedule_name}@{domain}"


def fingerprint(schedule: WebinarSchedule) -> str:
    """What a calendar shows that, when edited, makes the event change in calendars."""
    starts = schedule.starts_at.astimezone(UTC).isoformat()
    return (
        f"{starts}|{schedule.duration.total_seconds():.0f}|{schedule.join_url}|{schedule.cancelled}"
    )


def state(
    conn: Connection, name: str, schedule: WebinarSchedule, domain: str, now: datetime
) -> WebinarState:
    """The current SEQUENCE, raised by one if the file changed since it was last seen."""
    seen = fingerprint(schedule)
    row = (
        conn.execute(select(WEBINAR_EVENTS).where(WEBINAR_EVENTS.c.schedule == name))
        .mappings()
        .first()
    )
    if row is None:
        conn.execute(
            WEBINAR_EVENTS.insert().values(
                schedule=name, uid=uid(name, domain), sequence=0, fingerprint=seen, updated_at=now
            )
        )
        return WebinarState(0)
    sequence = int(row["sequence"])
    if row["fingerprint"] != seen:
        sequence += 1
        conn.execute(
            update(WEBINAR_EVENTS)
            .where(WEBINAR_EVENTS.c.schedule == name)
            .values(sequence=sequence, fingerprint=seen, updated_at=now)
        )
    return WebinarState(sequence)


def context(
    name: str,
    schedule: WebinarSchedule,
    domain: str,
    sequence: int,
    method: Literal["REQUEST", "CANCEL"] | None,
    *,
    changed: bool = False,
) -> dict[str, Any]:
    """``webinar`` for the templates; ``calendar`` (the event to attach) unless a reminder.
    ``changed`` marks an update to an invitation already sent."""
    starts = schedule.starts_at.astimezone(UTC)
    ends = starts + schedule.duration
    webinar = {
        "title": schedule.title,
        "description": schedule.description,
        "starts_at": starts,
        "ends_at": ends,
        "duration": schedule.duration,
        "join_url": schedule.join_url,
        "organizer": formataddr((schedule.organizer_name or "", schedule.organizer)),
        "changed": changed,
        "cancelled": schedule.cancelled,
    }
    found: dict[str, Any] = {"webinar": webinar, "params": dict(schedule.params)}
    if method is not None:
        found["calendar"] = {
            "uid": uid(name, domain),
            "sequence": sequence,
            "method": method,
            "title": schedule.title,
            "description": schedule.description,
            "starts_at": starts,
            "ends_at": ends,
            "join_url": schedule.join_url,
            "organizer": schedule.organizer,
            "organizer_name": schedule.organizer_name,
        }
    return found
