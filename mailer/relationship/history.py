"""Reads a page of a customer's timeline: a bounded, indexed query per source, merged by
``timeline.merge``. Marketing may see that a customer wrote, not what: ``with_text``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, and_, select, true
from sqlalchemy.engine import Connection

from mailer.customers.contacts import CONTACTS, EMAIL
from mailer.customers.events import EVENTS
from mailer.customers.followups import FOLLOWUPS
from mailer.inbound.inquiries import INQUIRIES, INQUIRY_EVENTS
from mailer.inbound.rsvp import CALENDAR_REPLIES
from mailer.outbound.outbox import OUTBOX
from mailer.relationship.timeline import Bound, Cursor, Entry, Page, Source, after, bound, merge
from mailer.store.models import OutboxStatus

PAGE = 50
# what happened to a message; queued and sending ones have not happened yet
MAIL_SHOWN = [s.value for s in OutboxStatus if s not in (OutboxStatus.QUEUED, OutboxStatus.SENDING)]
AUTOMATIC = "mailer"  # who sent what the outbox sent
SHOP = "shop"  # the channel of the events a shop sends through the API
SUMMARY = 200  # characters of an event's payload a timeline shows


def page(
    conn: Connection,
    customer_id: int,
    unsubscribed_at: datetime | None,
    *,
    cursor: Cursor | None = None,
    size: int = PAGE,
    with_text: bool = True,
) -> Page:
    """The ``size`` latest entries after ``cursor`` (the newest when None)."""
    read = size + 1  # one more than a page says whether an older page exists
    sources = [
        _mail(conn, customer_id, bound(cursor, Source.MAIL), read),
        _inquiries(conn, customer_id, bound(cursor, Source.INQUIRY), read, with_text),
        _contacts(conn, customer_id, bound(cursor, Source.CONTACT), read),
        _replies(conn, customer_id, bound(cursor, Source.REPLY), read, with_text),
        _followups(conn, customer_id, bound(cursor, Source.FOLLOWUP), read),
        _answers(conn, customer_id, bound(cursor, Source.RSVP), read),
        _events(conn, customer_id, bound(cursor, Source.EVENT), read),
        _unsubscribed(customer_id, unsubscribed_at, cursor),
    ]
    return merge(sources, size, cursor)


def _below(table: Table, at: str, limit: Bound | None) -> ColumnElement[bool]:
    column, row = table.c[at], table.c.id
    if limit is None:
        return true()
    if limit.inclusive:
        return column <= limit.at
    if limit.below_id is None:
        return column < limit.at
    return (column < limit.at) | and_(column == limit.at, row < limit.below_id)


def _newest(query: Select[Any], table: Table, at: str, limit: int) -> Select[Any]:
    return query.order_by(table.c[at].desc(), table.c.id.desc()).limit(limit)


def _mail(conn: Connection, customer_id: int, limit: Bound | None, count: int) -> list[Entry]:
    o = OUTBOX.c
    query = select(o.id, o.status, o.template, o.category, o.reason, o.subject, o.updated_at)
    query = query.where(
        o.customer_id == customer_id, _below(OUTBOX, "updated_at", limit), o.status.in_(MAIL_SHOWN)
    )
    return [
        Entry(
            at=r.updated_at,
            source=Source.MAIL,
            id=r.id,
            kind=r.status,
            direction="out",
            channel=EMAIL,
            by=AUTOMATIC,
            title=r.template,
            text=r.reason or "",
            details={"category": r.category, "subject": r.subject},
        )
        for r in conn.execute(_newest(query, OUTBOX, "updated_at", count))
    ]


def _inquiries(
    conn: Connection, customer_id: int, limit: Bound | None, count: int, with_text: bool
) -> list[Entry]:
    i = INQUIRIES.c
    query = select(i.id, i.received_at, i.sender, i.subject, i.status, i.thread_id).where(
        i.customer_id == customer_id, _below(INQUIRIES, "received_at", limit)
    )
    return [
        Entry(
            at=r.received_at,
            source=Source.INQUIRY,
            id=r.id,
            kind="inquiry",
            direction="in",
            channel=EMAIL,
            by=r.sender,
            title=r.subject if with_text else "",  # a subject is something they wrote too
            details={"status": r.status, "thread_id": r.thread_id or r.id},
        )
        for r in conn.execute(_newest(query, INQUIRIES, "received_at", count))
    ]


def _contacts(conn: Connection, customer_id: int, limit: Bound | None, count: int) -> list[Entry]:
    c = CONTACTS.c
    query = select(CONTACTS).where(c.customer_id == customer_id, _below(CONTACTS, "at", limit))
    return [
        Entry(
            at=r.at,
            source=Source.CONTACT,
            id=r.id,
            kind=r.kind,
            direction=r.direction,
            channel=r.kind,
            by=r.logged_by,
            title=r.outcome,
            text=r.note,
            details={
                "duration_seconds": r.duration_seconds,
                "outcome": r.outcome,
                "location": r.location,
                "attendees": list(r.attendees or []),
            },
        )
        for r in conn.execute(_newest(query, CONTACTS, "at", count))
    ]


def _replies(
    conn: Connection, customer_id: int, limit: Bound | None, count: int, with_text: bool
) -> list[Entry]:
    """What support wrote back from the desk, by whom; the mail that carried it is a mail
    entry of its own, with what became of it."""
    e, i = INQUIRY_EVENTS.c, INQUIRIES.c
    query = (
        select(e.id, e.at, e.actor, e.text, e.inquiry_id)
        .join(INQUIRIES, i.id == e.inquiry_id)
        .where(i.customer_id == customer_id, e.kind == "reply", _below(INQUIRY_EVENTS, "at", limit))
    )
    return [
        Entry(
            at=r.at,
            source=Source.REPLY,
            id=r.id,
            kind="reply",
            direction="out",
            channel=EMAIL,
            by=r.actor,
            text=r.text if with_text else "",
            details={"thread_id": r.inquiry_id},
        )
        for r in conn.execute(_newest(query, INQUIRY_EVENTS, "at", count))
    ]


def _followups(conn: Connection, customer_id: int, limit: Bound | None, count: int) -> list[Entry]:
    """Follow-ups and meetings, when they were set up and by whom, with when they are due."""
    f, answers = FOLLOWUPS.c, CALENDAR_REPLIES.c
    query = (
        select(FOLLOWUPS, answers.answer)
        .outerjoin(CALENDAR_REPLIES, answers.followup_id == f.id)
        .where(f.customer_id == customer_id, _below(FOLLOWUPS, "created_at", limit))
    )
    return [
        Entry(
            at=r.created_at,
            source=Source.FOLLOWUP,
            id=r.id,
            kind="meeting" if r.duration_minutes else "follow-up",
            by=r.created_by,
            text=r.note,
            details={
                "due_at": r.due_at,
                "status": r.status,
                "assignee": r.assignee,
                "location": r.place,
                "answer": r.answer,  # the customer's, to a meeting's invitation
            },
        )
        for r in conn.execute(_newest(query, FOLLOWUPS, "created_at", count))
    ]


def _answers(conn: Connection, customer_id: int, limit: Bound | None, count: int) -> list[Entry]:
    """The customer's latest answer to each calendar invitation: when it arrived, what it
    was, and the event it answers."""
    a = CALENDAR_REPLIES.c
    query = select(a.id, a.answered_at, a.answer, a.title, a.schedule, a.followup_id).where(
        a.customer_id == customer_id, _below(CALENDAR_REPLIES, "answered_at", limit)
    )
    return [
        Entry(
            at=r.answered_at,
            source=Source.RSVP,
            id=r.id,
            kind=r.answer,
            direction="in",
            channel=EMAIL,
            title=r.title,
            details={"schedule": r.schedule, "followup_id": r.followup_id},
        )
        for r in conn.execute(_newest(query, CALENDAR_REPLIES, "answered_at", count))
    ]


def _events(conn: Connection, customer_id: int, limit: Bound | None, count: int) -> list[Entry]:
    """What the shop saw the customer do, by the event's name, with what it sent along."""
    e = EVENTS.c
    query = select(e.id, e.occurred_at, e.name, e.payload, e.source).where(
        e.customer_id == customer_id, _below(EVENTS, "occurred_at", limit)
    )
    return [
        Entry(
            at=r.occurred_at,
            source=Source.EVENT,
            id=r.id,
            kind="event",
            direction="in",
            channel=SHOP,
            by=r.source,
            title=r.name,
            text=_summary(r.payload),
            details={"payload": r.payload},
        )
        for r in conn.execute(_newest(query, EVENTS, "occurred_at", count))
    ]


def _summary(payload: dict[str, Any]) -> str:
    """An event's payload on one line, as far as a timeline's column shows it."""
    text = json.dumps(payload, ensure_ascii=False, separators=(", ", ": "), sort_keys=True)
    return "" if text == "{}" else text if len(text) <= SUMMARY else text[: SUMMARY - 1] + "…"


def _unsubscribed(customer_id: int, at: datetime | None, cursor: Cursor | None) -> list[Entry]:
    if at is None:
        return []
    entry = Entry(at=at, source=Source.UNSUBSCRIBE, id=customer_id, kind="unsubscribed")
    return [entry] if after(entry, cursor) else []
