"""The inquiry log: every inbound message, stored before any decision, threaded and tied to
a customer (a new lead when the sender is unknown).

Threading looks, in order, at In-Reply-To and References (our inquiries' Message-IDs, and
the Message-IDs of what we sent about an inquiry), then at a reference token such as
"[#42]" in the subject, for mail clients that drop those headers. Both can be guessed, so a
message joins a thread only from someone who takes part in it; from anyone else it opens
an inquiry of its own that names the one it claimed.

What people do with an inquiry (status changes, assignments, notes, replies) is recorded
as an event with who did it, so the desk shows a timeline and nothing changes silently.
A reply from the desk is such an event plus the outbox row it queued, whose dedupe key
names the thread and the event: the customer's answer to it threads back by its
Message-ID, and a person writing again in a thread support answered re-opens it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    Integer,
    Select,
    Table,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql.elements import ColumnElement

from mailer.core import jsonvalues
from mailer.core.search import term
from mailer.customers import contacts, profiles
from mailer.customers.csv_rows import normalise_email
from mailer.customers.profiles import CUSTOMERS
from mailer.hooks import events as webhooks
from mailer.hooks.events import EventType
from mailer.inbound import autoreply
from mailer.inbound.parsing import Inbound, fingerprint, subject_reference
from mailer.outbound.outbox import OUTBOX
from mailer.store.models import Inquiry, InquiryEvent, InquiryStatus

INQUIRIES: Table = Inquiry.__table__  # type: ignore[attr-defined]
INQUIRY_EVENTS: Table = InquiryEvent.__table__  # type: ignore[attr-defined]
ACK_PREFIX = "ack:inquiry:"  # an acknowledgement's dedupe key: this, then the inquiry's id
_DIGITS = re.compile(r"(\d+)\]$")
TRIGRAM = 3  # the shortest search the trigram indexes can answer
REPLY_PREFIX = "reply:inquiry:"  # a desk reply's dedupe key: this, the thread, the event
# outbox rows that acknowledge an inquiry (a prefix LIKE, which an index can serve)
IS_ACKNOWLEDGEMENT = OUTBOX.c.dedupe_key.like(ACK_PREFIX + "%")
IS_REPLY = OUTBOX.c.dedupe_key.like(REPLY_PREFIX + "%")
# where it is support's turn; a reply moves these to answered, the customer's answer back
WAITING_FOR_SUPPORT = (InquiryStatus.NEW, InquiryStatus.ACKNOWLEDGED, InquiryStatus.OPEN)
FROM_PEOPLE = autoreply.FROM_PEOPLE  # decisions about mail a person wrote, not a robot
REOPENED_BY_CUSTOMER = (InquiryStatus.ANSWERED, InquiryStatus.CLOSED)


def ack_key(inquiry_id: int) -> str:
    """The dedupe key of an inquiry's acknowledgement, so it is queued at most once."""
    return f"{ACK_PREFIX}{inquiry_id}"


def reply_key(thread_id: int, event_id: int) -> str:
    """The dedupe key of the message one reply event queued."""
    return f"{REPLY_PREFIX}{thread_id}:{event_id}"


def reference(inquiry_id: int) -> str:
    """What a customer quotes back: shown in acknowledgement subjects as "[#42]"."""
    return f"#{inquiry_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Logged:
    inquiry_id: int
    thread_id: int | None  # the first inquiry of the thread, None when this one starts it
    customer_id: int | None
    duplicate: bool  # the same message was logged before: nothing new was written


def log(
    conn: Connection,
    inbound: Inbound,
    received_at: datetime,
    channel: str = "mail",
    language: Callable[[], str | None] | None = None,
) -> Logged:
    """Store one inbound message (from ``channel``: mail, or web for the website's form); a
    re-delivery of one logged before returns the earlier row. A sender not known yet becomes
    a customer in the ``language`` they wrote in (asked only then: telling takes a model;
    None: in no language of their own).

    A message joins the thread it refers to only when its sender already takes part in it;
    anyone else starts a new inquiry that records which one it claimed to continue."""
    earlier = _same_message(conn, inbound)
    if earlier is not None:
        return earlier
    claimed = find_thread(conn, inbound)
    thread_id = claimed if claimed is not None and _takes_part(conn, claimed, inbound) else None
    customer_id = _customer_for(conn, inbound, received_at, language)
    values = _values(inbound, received_at, thread_id, customer_id)
    values["claimed_thread_id"] = claimed if thread_id is None else None
    values["channel"] = channel
    new_id = conn.execute(insert(INQUIRIES).values(**values)).inserted_primary_key
    assert new_id is not None
    if customer_id is not None:
        contacts.heard_from(conn, customer_id, received_at)
    created = {
        "inquiry_id": int(new_id[0]),
        "thread_id": thread_id,
        "customer_id": customer_id,
        "from": values["sender"],
        "subject": values["subject"],
        "received_at": received_at,
    }
    webhooks.record(conn, EventType.INQUIRY_CREATED, [created], received_at)
    return Logged(
        inquiry_id=int(new_id[0]), thread_id=thread_id, customer_id=customer_id, duplicate=False
    )


def erase_customer(conn: Connection, customer_id: int, address: str) -> int:
    """Clear everything the customer wrote and every trace of who they are from their
    inquiries (and the notes and replies on them), keeping each row's status and times for
    the counts."""
    c = INQUIRIES.c
    theirs = or_(c.customer_id == customer_id, func.lower(c.sender) == address.lower())
    ids = list(conn.execute(select(c.id).where(theirs)).scalars())
    if not ids:
        return 0
    cleared = {"sender": "", "sender_name": "", "subject": "", "body_text": "", "reply_text": ""}
    conn.execute(
        update(INQUIRIES)
        .where(c.id.in_(ids))
        .values(**cleared, message_id=None, attachments=[], defects=[], error=None, raw=b"")
    )
    events = INQUIRY_EVENTS.c
    about = events.inquiry_id.in_(ids)
    written = events.kind.not_in(("status", "assign"))  # notes and replies say who they are
    conn.execute(update(INQUIRY_EVENTS).where(about, written).values(text=""))
    by_them = func.lower(events.actor) == address.lower()  # a thread they re-opened
    conn.execute(update(INQUIRY_EVENTS).where(about, by_them).values(actor="customer"))
    return len(ids)


def never_answered() -> Select[Any]:
    """The ids of customers who wrote (a person, not a robot) in a conversation that no one
    at the company has answered: no reply from the desk, not marked answered."""
    asked, e = INQUIRIES.alias("asked"), INQUIRY_EVENTS.c
    root = func.coalesce(asked.c.thread_id, asked.c.id)
    replied = select(e.id).where(e.inquiry_id == root, e.kind == "reply").exists()
    marked = select(INQUIRIES.c.id).where(
        INQUIRIES.c.id == root, INQUIRIES.c.status == InquiryStatus.ANSWERED
    )
    return select(asked.c.customer_id).where(
        asked.c.customer_id.is_not(None),
        asked.c.decision.in_(FROM_PEOPLE),
        ~replied,
        ~marked.exists(),
    )


def record_decision(
    conn: Connection, inquiry_id: int, *, status: str, decision: str, reasons: list[str]
) -> None:
    """What was decided about a logged message (acknowledge, close, wait) and why, so
    support can read on the inquiry why it was or was not acknowledged."""
    conn.execute(
        update(INQUIRIES)
        .where(INQUIRIES.c.id == inquiry_id)
        .values(status=status, decision=decision, reasons=reasons)
    )


def _same_message(conn: Connection, inbound: Inbound) -> Logged | None:
    """The earlier row of this very message: its Message-ID and its fingerprint.

    Rows logged before fingerprints were kept have none: theirs is worked out from the raw
    bytes, and one whose raw bytes were cut short is taken to be the same message, as before.
    """
    if not inbound.message_id:
        return None
    rows = conn.execute(
        select(
            INQUIRIES.c.id,
            INQUIRIES.c.thread_id,
            INQUIRIES.c.customer_id,
            INQUIRIES.c.fingerprint,
            INQUIRIES.c.raw,
            INQUIRIES.c.raw_truncated,
        )
        .where(INQUIRIES.c.message_id == inbound.message_id)
        .order_by(INQUIRIES.c.id)
    )
    for row in rows:
        known = row.fingerprint or (None if row.raw_truncated else fingerprint(bytes(row.raw)))
        if known in (None, inbound.fingerprint):
            return Logged(
                inquiry_id=row.id,
                thread_id=row.thread_id,
                customer_id=row.customer_id,
                duplicate=True,
            )
    return None


def _takes_part(conn: Connection, root: int, inbound: Inbound) -> bool:
    """Whether the sender opened the thread or already wrote in it."""
    if not inbound.sender:
        return False
    in_thread = (INQUIRIES.c.id == root) | (INQUIRIES.c.thread_id == root)
    found = conn.execute(
        select(INQUIRIES.c.id).where(in_thread, INQUIRIES.c.sender == inbound.sender).limit(1)
    ).scalar()
    return found is not None


def log_failed(conn: Connection, raw: bytes, error: str, received_at: datetime) -> int:
    """Keep a message that could not be handled, with the error, for a human to read."""
    new_id = conn.execute(
        insert(INQUIRIES).values(
            received_at=received_at,
            status=InquiryStatus.FAILED,
            decision="failed",
            error=error,
            raw=raw,
            attachments=[],
            defects=[],
            reasons=[],
        )
    ).inserted_primary_key
    assert new_id is not None
    return int(new_id[0])


def _values(
    inbound: Inbound, received_at: datetime, thread_id: int | None, customer_id: int | None
) -> dict[str, Any]:
    return {
        "message_id": inbound.message_id,
        "thread_id": thread_id,
        "customer_id": customer_id,
        "sender": inbound.sender[:320],
        "sender_name": inbound.sender_name[:200],
        "subject": inbound.subject[:998],
        "body_text": inbound.text,
        "reply_text": inbound.reply_text,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size}
            for a in inbound.attachments
        ],
        "defects": list(inbound.defects),
        "received_at": received_at,
        "status": InquiryStatus.NEW,
        "reasons": [],
        "raw": inbound.raw,
        "raw_truncated": inbound.raw_truncated,
        "fingerprint": inbound.fingerprint,
    }


def find_thread(conn: Connection, inbound: Inbound) -> int | None:
    """The root inquiry this message continues, if any."""
    ids = [i for i in (inbound.in_reply_to, *reversed(inbound.references)) if i]
    parent = _by_message_ids(conn, ids) if ids else None
    if parent is None:
        parent = _by_subject(conn, inbound.subject)
    if parent is None:
        return None
    root = conn.execute(select(INQUIRIES.c.thread_id).where(INQUIRIES.c.id == parent)).scalar()
    return int(root) if root is not None else parent


def _by_message_ids(conn: Connection, ids: list[str]) -> int | None:
    found = conn.execute(
        select(INQUIRIES.c.id).where(INQUIRIES.c.message_id.in_(ids)).order_by(INQUIRIES.c.id)
    ).scalar()
    if found is not None:
        return int(found)
    key = conn.execute(
        select(OUTBOX.c.dedupe_key).where(
            OUTBOX.c.message_id.in_(ids), or_(IS_ACKNOWLEDGEMENT, IS_REPLY)
        )
    ).scalar()
    return _existing(conn, _inquiry_of_key(key)) if key else None


def _inquiry_of_key(key: str) -> int:
    """The inquiry an acknowledgement ("ack:inquiry:42") or a reply
    ("reply:inquiry:42:7") was about."""
    if key.startswith(REPLY_PREFIX):
        return int(key.removeprefix(REPLY_PREFIX).partition(":")[0])
    return int(key.removeprefix(ACK_PREFIX))


def _by_subject(conn: Connection, subject: str) -> int | None:
    token = subject_reference(subject)
    digits = _DIGITS.search(token) if token else None
    return _existing(conn, int(digits.group(1))) if digits else None


def _existing(conn: Connection, inquiry_id: int) -> int | None:
    found = conn.execute(select(INQUIRIES.c.id).where(INQUIRIES.c.id == inquiry_id)).scalar()
    return int(found) if found is not None else None


def _customer_for(
    conn: Connection, inbound: Inbound, now: datetime, language: Callable[[], str | None] | None
) -> int | None:
    """The sender's customer; an unknown but valid sender becomes a new lead."""
    try:
        email = normalise_email(inbound.sender)
    except ValueError:
        return None
    found = conn.execute(select(CUSTOMERS.c.id).where(CUSTOMERS.c.email == email)).scalar()
    if found is not None:
        return int(found)
    locale = language() if language is not None else None
    return profiles.add_lead(conn, email, inbound.sender_name, now, locale)


@dataclass(frozen=True, slots=True, kw_only=True)
class Listed:
    """An inquiry as lists show it: without what was written or the raw bytes."""

    id: int
    message_id: str | None
    fingerprint: str | None
    thread_id: int | None
    customer_id: int | None
    sender: str
    sender_name: str
    subject: str
    attachments: list[dict[str, Any]]
    defects: list[str]
    received_at: datetime
    status: str
    decision: str | None
    reasons: list[str]
    error: str | None
    raw_truncated: bool
    assignee: str | None
    claimed_thread_id: int | None
    channel: str = "mail"  # or "web": asked on the website's inquiry form


@dataclass(frozen=True, slots=True, kw_only=True)
class Message(Listed):
    """One message of a thread, with what it said (the raw bytes stay in the database)."""

    body_text: str
    reply_text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Opened(Message):
    """One inquiry as the desk opens it: its raw bytes and every message of its thread."""

    raw: bytes
    thread: list[Message]


@dataclass(frozen=True, slots=True, kw_only=True)
class OfCustomer:
    """A customer's inquiry on their profile; what they wrote is None for readers who may
    not see it."""

    id: int
    thread_id: int | None
    received_at: datetime
    status: str
    subject: str | None = None
    sender: str | None = None
    body_text: str | None = None
    reply_text: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Acknowledgement:
    """A message queued about an inquiry (its acknowledgement, a reply), as the desk shows it."""

    status: str
    subject: str | None
    to_address: str
    created_at: datetime
    sent_at: datetime | None
    reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something a person did with an inquiry."""

    id: int
    inquiry_id: int
    at: datetime
    actor: str
    kind: str
    text: str


_R = TypeVar("_R", Listed, Message, Opened, OfCustomer, Acknowledgement, Event)


def _load(record: type[_R], row: RowMapping, **more: Any) -> _R:
    """The one way a row becomes one of these records: the columns it declares, by name
    (those a query left out take their defaults), and what is not a column."""
    return record(**{f.name: row[f.name] for f in fields(record) if f.name in row}, **more)


def columns(record: Listed) -> dict[str, Any]:
    """The record's columns in the table's order, as `mailer inquiries` prints them."""
    return {c.name: getattr(record, c.name) for c in INQUIRIES.c if hasattr(record, c.name)}


_BODIES = ("raw", "body_text", "reply_text")
_NEWEST = (INQUIRIES.c.received_at.desc(), INQUIRIES.c.id.desc())
_OLDEST = (INQUIRIES.c.received_at, INQUIRIES.c.id)
EventKind = Literal["status", "assign", "note", "reply"]


def _columns(*leave_out: str) -> list[Any]:
    return [c for c in INQUIRIES.c if c.name not in leave_out]


def find(conn: Connection, *, status: str | None = None, limit: int = 50) -> list[Listed]:
    """Newest first, without raw bytes or bodies."""
    return browse(conn, status=status, size=limit).rows


@dataclass(frozen=True, slots=True)
class Page:
    """One screen of the newest-first list, and where to go on from either end."""

    rows: list[Listed]
    newer: int | None  # browse(after=newer) is the page before this one
    older: int | None  # browse(before=older) is the page after this one


def browse(
    conn: Connection,
    *,
    status: str | None = None,
    search: str | None = None,
    before: int | None = None,
    after: int | None = None,
    size: int = 50,
) -> Page:
    """Newest first, without bodies. Pages are keyset pages: ``before``/``after`` name the
    inquiry at the edge the reader comes from, so the last page costs what the first does.
    Control characters in ``search`` are not searched for (see mailer.core.search.term)."""
    query = select(*_columns(*_BODIES))
    if status:
        query = query.where(INQUIRIES.c.status == status)
    wanted = term(search) if search else ""
    if wanted:
        query = query.where(_matching(wanted, conn.dialect.name))
    return _keyset(conn, query, before=before, after=after, size=size)


def since(
    conn: Connection,
    *,
    status: str | None = None,
    received_since: datetime | None = None,
    email: str | None = None,
    after: int | None = None,
    size: int = 50,
) -> list[Listed]:
    """Up to ``size`` inquiries with ids above ``after``, oldest first and without bodies:
    what another system reads to keep up with support, going on from the last id it saw.
    ``email`` is the sender's address or their customer's."""
    c = INQUIRIES.c
    query = select(*_columns(*_BODIES)).where(c.id > (after or 0))
    if status:
        query = query.where(c.status == status)
    if received_since is not None:
        query = query.where(c.received_at >= received_since)
    if email:
        theirs = select(CUSTOMERS.c.id).where(CUSTOMERS.c.email == email)
        query = query.where((func.lower(c.sender) == email) | c.customer_id.in_(theirs))
    rows = conn.execute(query.order_by(c.id).limit(size)).mappings()
    return [_load(Listed, r) for r in rows]


def _keyset(
    conn: Connection, query: Any, *, before: int | None, after: int | None, size: int
) -> Page:
    """One page of ``query``'s inquiries, newest first, from the edge the reader comes from."""
    query = query.limit(size + 1)
    edge = after if after is not None else before
    if edge is not None:
        at = conn.execute(select(INQUIRIES.c.received_at).where(INQUIRIES.c.id == edge)).scalar()
        if at is None:
            return Page([], None, None)
        key, edge_key = tuple_(*_OLDEST), tuple_(at, edge)
        query = query.where(key > edge_key if after is not None else key < edge_key)
    order = _OLDEST if after is not None else _NEWEST
    rows = [_load(Listed, r) for r in conn.execute(query.order_by(*order)).mappings()]
    return _page(rows, size, forwards=after is None, from_edge=edge is not None)


def _page(rows: list[Listed], size: int, *, forwards: bool, from_edge: bool) -> Page:
    """One more row than shown was asked for: its presence says the list goes on that way."""
    more, rows = len(rows) > size, rows[:size]
    if not forwards:
        rows.reverse()
    newer = more if not forwards else from_edge
    older = more if forwards else True
    first, last = (rows[0].id, rows[-1].id) if rows else (None, None)
    return Page(rows, first if newer else None, last if older else None)


def _matching(search: str, dialect: str, source: Any = INQUIRIES) -> Any:
    """Sender, name, subject or text containing ``search``, in any case and script, answered
    from the trigram indexes of migration 0009 (three characters or more; shorter ones
    are few enough words to scan for). ``source`` may be an alias of the table."""
    table = source.c
    columns = (table.sender, table.sender_name, table.subject, table.body_text)
    if dialect == "sqlite" and len(search) >= TRIGRAM:
        phrase = '"' + search.replace('"', '""') + '"'  # FTS5 phrase: a substring, as typed
        found = text("SELECT rowid FROM inquiry_search WHERE inquiry_search MATCH :phrase")
        return table.id.in_(found.bindparams(phrase=phrase).columns(rowid=Integer))
    if dialect == "sqlite":
        return or_(*(c.contains(search, autoescape=True) for c in columns))
    pattern = "%" + _escape_like(search.lower()) + "%"
    return or_(*(func.lower(c).like(pattern, escape="\\") for c in columns))


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def get(conn: Connection, inquiry_id: int) -> Opened | None:
    """One inquiry with every message of its thread, oldest first (without raw bytes)."""
    row = conn.execute(select(INQUIRIES).where(INQUIRIES.c.id == inquiry_id)).mappings().first()
    if row is None:
        return None
    root = row["thread_id"] or row["id"]
    thread = conn.execute(
        select(*_columns("raw"))
        .where((INQUIRIES.c.id == root) | (INQUIRIES.c.thread_id == root))
        .order_by(*_OLDEST)
    ).mappings()
    return _load(Opened, row, thread=[_load(Message, t) for t in thread])


def of_customer(conn: Connection, customer_id: int, *, with_text: bool) -> list[OfCustomer]:
    """A customer's inquiries, newest first; what they wrote only for those who may read it."""
    c = INQUIRIES.c
    columns = [c.id, c.thread_id, c.received_at, c.status]
    if with_text:  # a subject is something the customer wrote too
        columns += [c.subject, c.sender, c.body_text, c.reply_text]
    query = select(*columns).where(c.customer_id == customer_id).order_by(*_NEWEST)
    return [_load(OfCustomer, r) for r in conn.execute(query).mappings()]


def acknowledgements(conn: Connection, inquiry_ids: list[int]) -> dict[int, Acknowledgement]:
    """The acknowledgement queued for each of these inquiries, by inquiry, where there is one."""
    keys = {ack_key(i): i for i in inquiry_ids}
    query = select(OUTBOX).where(OUTBOX.c.dedupe_key.in_(list(keys)))
    found = conn.execute(query).mappings()
    return {keys[r["dedupe_key"]]: _load(Acknowledgement, r) for r in found}


def set_status(conn: Connection, inquiry_id: int, status: InquiryStatus) -> bool:
    result = conn.execute(
        update(INQUIRIES).where(INQUIRIES.c.id == inquiry_id).values(status=status)
    )
    return bool(result.rowcount)


def change_status(
    conn: Connection, inquiry_id: int, status: InquiryStatus, actor: str, now: datetime
) -> bool:
    """Set the status, recording who moved it from what; False if there is no such inquiry."""
    before = conn.execute(select(INQUIRIES.c.status).where(INQUIRIES.c.id == inquiry_id)).scalar()
    if before is None:
        return False
    if before != status:
        set_status(conn, inquiry_id, status)
        _record(conn, inquiry_id, "status", f"{before} → {status}", actor, now)
    return True


def assign(
    conn: Connection, inquiry_id: int, assignee: str | None, actor: str, now: datetime
) -> bool:
    """Give the inquiry to a user by name, or to nobody (None); recorded like a status change."""
    found = conn.execute(
        select(INQUIRIES.c.assignee).where(INQUIRIES.c.id == inquiry_id)
    ).one_or_none()
    if found is None:
        return False
    if found.assignee != assignee:
        query = update(INQUIRIES).where(INQUIRIES.c.id == inquiry_id).values(assignee=assignee)
        conn.execute(query)
        _record(conn, inquiry_id, "assign", assignee or "", actor, now)
    return True


def add_note(conn: Connection, inquiry_id: int, text: str, actor: str, now: datetime) -> bool:
    """An internal note: for colleagues, never sent to the customer."""
    if _existing(conn, inquiry_id) is None:
        return False
    _record(conn, inquiry_id, "note", text, actor, now)
    return True


def reopen(conn: Connection, thread_id: int, sender: str, now: datetime) -> bool:
    """A person wrote again in a thread support answered or closed: it is support's turn
    again, recorded as the customer's own status change. True if it was re-opened."""
    before = conn.execute(select(INQUIRIES.c.status).where(INQUIRIES.c.id == thread_id)).scalar()
    if before not in REOPENED_BY_CUSTOMER:
        return False
    return change_status(conn, thread_id, InquiryStatus.OPEN, sender or "customer", now)


def record_reply(conn: Connection, thread_id: int, text: str, actor: str, now: datetime) -> int:
    """A reply's event: who wrote what, in the thread's timeline; its id keys the message."""
    return _record(conn, thread_id, "reply", text, actor, now)


def root_id(conn: Connection, inquiry_id: int) -> int | None:
    """The first inquiry of the thread this one belongs to; None when there is no such
    inquiry. What people do with a conversation is recorded there."""
    found = conn.execute(
        select(INQUIRIES.c.thread_id).where(INQUIRIES.c.id == inquiry_id)
    ).one_or_none()
    return None if found is None else int(found.thread_id or inquiry_id)


def root_of(inquiry: Listed) -> int:
    """The first inquiry of the thread this one belongs to."""
    return inquiry.thread_id or inquiry.id


def _record(
    conn: Connection, inquiry_id: int, kind: EventKind, text: str, actor: str, now: datetime
) -> int:
    values = {"inquiry_id": inquiry_id, "at": now, "actor": actor, "kind": kind, "text": text}
    new_id = conn.execute(insert(INQUIRY_EVENTS).values(**values)).inserted_primary_key
    assert new_id is not None
    return int(new_id[0])


def events(conn: Connection, inquiry_id: int) -> list[Event]:
    """What people did with the inquiry, oldest first."""
    query = (
        select(INQUIRY_EVENTS)
        .where(INQUIRY_EVENTS.c.inquiry_id == inquiry_id)
        .order_by(INQUIRY_EVENTS.c.id)
    )
    return [_load(Event, r) for r in conn.execute(query).mappings()]


def promises(conn: Connection, listed: list[Listed]) -> dict[int, datetime]:
    """When the acknowledgement promised a person's answer, by inquiry: its own
    acknowledgement's ``reply_expected_by``, else its thread's."""
    wanted = {i.id: (ack_key(i.id), ack_key(root_of(i))) for i in listed}
    keys = {key for pair in wanted.values() for key in pair}
    query = select(OUTBOX.c.dedupe_key, OUTBOX.c.context).where(OUTBOX.c.dedupe_key.in_(keys))
    found: dict[str, datetime] = {}
    for key, context in conn.execute(query):
        when = jsonvalues.decode(context or {}).get("reply_expected_by")
        if isinstance(when, datetime):
            found[key] = when
    by_inquiry = {i: found.get(own, found.get(root)) for i, (own, root) in wanted.items()}
    return {i: when for i, when in by_inquiry.items() if when is not None}


def past_promise(conn: Connection, now: datetime, *, size: int = 50) -> list[Conversation]:
    """Conversations still waiting for support whose promised answer time has passed, the
    longest overdue first. Only the open backlog is read, never the whole log."""
    c = INQUIRIES.c
    query = select(*_columns(*_BODIES)).where(
        c.thread_id.is_(None), c.status.in_(WAITING_FOR_SUPPORT)
    )
    waiting = [_load(Listed, r) for r in conn.execute(query.order_by(*_OLDEST)).mappings()]
    promised = promises(conn, waiting)
    late = sorted(
        (i for i in waiting if i.id in promised and promised[i.id] < now),
        key=lambda i: promised[i.id],
    )
    roots = [i.id for i in late[:size]]
    latest = select(*_columns(*_BODIES)).where(_in_threads(roots), _newest_of_thread())
    found = [_load(Listed, r) for r in conn.execute(latest).mappings()]
    by_root = {row.root.id: row for row in _conversations(conn, found)}
    return [by_root[r] for r in roots if r in by_root]


# Conversations: a thread (its first inquiry and the messages threaded onto it) as one row -----

FEW_ROOTS = 200  # past this many, the walk newest first finds a page sooner
_THREAD = func.coalesce(INQUIRIES.c.thread_id, INQUIRIES.c.id)  # the root of a row's thread


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversation:
    """A thread as the desk lists it: the root holds its status, assignee and promise (what
    people change is recorded on the root); the newest message heads the row."""

    root: Listed
    latest: Listed
    messages: int


@dataclass(frozen=True, slots=True)
class Conversations:
    """One screen of conversations, newest message first, and where to go on from either end
    (the edges name the newest message of the first and last row)."""

    rows: list[Conversation]
    newer: int | None
    older: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Wanted:
    """Which conversations a list shows, judged by the root: every condition given holds."""

    status: str | None = None
    waiting: bool = False  # support's turn: new, acknowledged or open
    assignee: str | None = None
    unassigned: bool = False
    search: str = ""  # in any message of the thread


def conversations(
    conn: Connection,
    wanted: Wanted,
    *,
    before: int | None = None,
    after: int | None = None,
    size: int = 50,
) -> Conversations:
    """One row per thread, the newest message first, in keyset pages like ``browse``: the
    list walks messages newest first and keeps each thread's newest one."""
    root = INQUIRIES.alias("root")
    joined = INQUIRIES.join(root, root.c.id == _THREAD)
    query = select(*_columns(*_BODIES)).select_from(joined).where(_newest_of_thread())
    query = query.where(*_of_root(root, wanted))
    few = _few_roots(conn, wanted)
    if few is not None:
        query = query.where(_in_threads(few))
    found = term(wanted.search) if wanted.search else ""
    if found:
        hit = INQUIRIES.alias("hit")
        threads = select(func.coalesce(hit.c.thread_id, hit.c.id))
        query = query.where(_in_threads(threads.where(_matching(found, conn.dialect.name, hit))))
    page = _keyset(conn, query, before=before, after=after, size=size)
    return Conversations(_conversations(conn, page.rows), page.newer, page.older)


def _of_root(root: Any, wanted: Wanted) -> list[ColumnElement[bool]]:
    conditions = []
    if wanted.status:
        conditions.append(root.c.status == wanted.status)
    if wanted.waiting:
        conditions.append(root.c.status.in_(WAITING_FOR_SUPPORT))
    if wanted.assignee:
        conditions.append(root.c.assignee == wanted.assignee)
    if wanted.unassigned:
        conditions.append(root.c.assignee.is_(None))
    return conditions


def _few_roots(conn: Connection, wanted: Wanted) -> list[int] | None:
    """The roots a filter keeps, read by the status or assignee index, when they are few
    enough to start from: walking the log newest first for an agent with five
    conversations would read all of it. Past ``FEW_ROOTS`` matches the walk finds a
    page sooner than reading every match would."""
    conditions = _of_root(INQUIRIES, wanted)
    if not conditions:
        return None
    roots = select(INQUIRIES.c.id).where(INQUIRIES.c.thread_id.is_(None), *conditions)
    found = list(conn.execute(roots.limit(FEW_ROOTS + 1)).scalars())
    return found if len(found) <= FEW_ROOTS else None


def _in_threads(roots: list[int] | Select[Any]) -> ColumnElement[bool]:
    """The messages of these threads (their roots' ids, or a query for them), found by the
    primary key and the thread index rather than by scanning."""
    return or_(INQUIRIES.c.id.in_(roots), INQUIRIES.c.thread_id.in_(roots))


def _newest_of_thread() -> ColumnElement[bool]:
    """The row is its thread's newest message: none in the thread came after it."""
    later = INQUIRIES.alias("later")
    in_thread = or_(later.c.thread_id == _THREAD, later.c.id == _THREAD)
    after = tuple_(later.c.received_at, later.c.id) > tuple_(*_OLDEST)
    return ~exists().where(in_thread, after)


def _conversations(conn: Connection, latest: list[Listed]) -> list[Conversation]:
    """Each thread's newest message with its root and how many messages the thread has."""
    roots = [root_of(m) for m in latest]
    c = INQUIRIES.c
    counted = select(_THREAD, func.count()).where(_in_threads(roots))
    counts = {int(r): int(n) for r, n in conn.execute(counted.group_by(_THREAD))}
    found = conn.execute(select(*_columns(*_BODIES)).where(c.id.in_(roots))).mappings()
    by_id = {r["id"]: _load(Listed, r) for r in found}
    return [
        Conversation(root=by_id[root_of(m)], latest=m, messages=counts[root_of(m)]) for m in latest
    ]


def replies(conn: Connection, thread_id: int) -> dict[int, Acknowledgement]:
    """The message each reply event of the thread queued, by event id: its status, and
    the subject once sent."""
    query = select(OUTBOX).where(OUTBOX.c.dedupe_key.like(f"{REPLY_PREFIX}{thread_id}:%"))
    found = conn.execute(query).mappings()
    return {int(r["dedupe_key"].rpartition(":")[2]): _load(Acknowledgement, r) for r in found}
