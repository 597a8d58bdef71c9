"""The inquiry log: every inbound message, stored before any decision, threaded and tied to
a customer (a new lead when the sender is unknown).

Threading looks, in order, at In-Reply-To and References (our inquiries' Message-IDs, and
the Message-IDs of what we sent about an inquiry), then at a reference token such as
"[#42]" in the subject, for mail clients that drop those headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.engine import Connection

from mailer.customer_csv import normalise_email
from mailer.customers import CUSTOMERS
from mailer.inbound import Inbound, subject_reference
from mailer.models import Inquiry, InquiryStatus, OutboxMessage

INQUIRIES: Table = Inquiry.__table__  # type: ignore[attr-defined]
OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]
ACK_KEY = "ack:inquiry:{id}"  # the dedupe key of an inquiry's acknowledgement
_DIGITS = re.compile(r"(\d+)\]$")


def reference(inquiry_id: int) -> str:
    """What a customer quotes back: shown in acknowledgement subjects as "[#42]"."""
    return f"#{inquiry_id}"


@dataclass(frozen=True, slots=True)
class Logged:
    inquiry_id: int
    thread_id: int | None  # the first inquiry of the thread, None when this one starts it
    customer_id: int | None
    duplicate: bool  # the same Message-ID was logged before: nothing new was written


def log(conn: Connection, inbound: Inbound, received_at: datetime) -> Logged:
    """Store one inbound message; a Message-ID seen before returns the earlier row."""
    if inbound.message_id:
        earlier = conn.execute(
            select(INQUIRIES.c.id, INQUIRIES.c.thread_id, INQUIRIES.c.customer_id).where(
                INQUIRIES.c.message_id == inbound.message_id
            )
        ).one_or_none()
        if earlier is not None:
            return Logged(earlier.id, earlier.thread_id, earlier.customer_id, duplicate=True)
    thread_id = find_thread(conn, inbound)
    customer_id = _customer_for(conn, inbound, received_at)
    new_id = conn.execute(
        insert(INQUIRIES).values(**_values(inbound, received_at, thread_id, customer_id))
    ).inserted_primary_key
    assert new_id is not None
    return Logged(int(new_id[0]), thread_id, customer_id, duplicate=False)


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
            OUTBOX.c.message_id.in_(ids), OUTBOX.c.dedupe_key.like("ack:inquiry:%")
        )
    ).scalar()
    return _existing(conn, int(key.rpartition(":")[2])) if key else None


def _by_subject(conn: Connection, subject: str) -> int | None:
    token = subject_reference(subject)
    digits = _DIGITS.search(token) if token else None
    return _existing(conn, int(digits.group(1))) if digits else None


def _existing(conn: Connection, inquiry_id: int) -> int | None:
    found = conn.execute(select(INQUIRIES.c.id).where(INQUIRIES.c.id == inquiry_id)).scalar()
    return int(found) if found is not None else None


def _customer_for(conn: Connection, inbound: Inbound, now: datetime) -> int | None:
    """The sender's customer; an unknown but valid sender becomes a new lead."""
    try:
        email = normalise_email(inbound.sender)
    except ValueError:
        return None
    found = conn.execute(select(CUSTOMERS.c.id).where(CUSTOMERS.c.email == email)).scalar()
    if found is not None:
        return int(found)
    name = inbound.sender_name
    lead = conn.execute(
        insert(CUSTOMERS).values(
            email=email,
            name=name,
            first_name=name.split()[0] if name else "",
            fields={},
            marketing_consent=False,  # writing to support is no consent to newsletters
            relationship_consent=False,
            source="inquiry",
            created_at=now,
            updated_at=now,
        )
    ).inserted_primary_key
    assert lead is not None
    return int(lead[0])


def find(conn: Connection, *, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Newest first, without raw bytes or bodies."""
    skip = {"raw", "body_text", "reply_text"}
    query = (
        select(*(c for c in INQUIRIES.c if c.name not in skip))
        .order_by(INQUIRIES.c.received_at.desc(), INQUIRIES.c.id.desc())
        .limit(limit)
    )
    if status:
        query = query.where(INQUIRIES.c.status == status)
    return [dict(r) for r in conn.execute(query).mappings()]


def get(conn: Connection, inquiry_id: int) -> dict[str, Any] | None:
    """One inquiry with the other messages of its thread."""
    row = conn.execute(select(INQUIRIES).where(INQUIRIES.c.id == inquiry_id)).mappings().first()
    if row is None:
        return None
    root = row["thread_id"] or row["id"]
    thread = conn.execute(
        select(INQUIRIES.c.id, INQUIRIES.c.received_at, INQUIRIES.c.subject, INQUIRIES.c.status)
        .where((INQUIRIES.c.id == root) | (INQUIRIES.c.thread_id == root))
        .order_by(INQUIRIES.c.received_at, INQUIRIES.c.id)
    ).mappings()
    return {**row, "thread": [dict(t) for t in thread]}


def set_status(conn: Connection, inquiry_id: int, status: InquiryStatus) -> bool:
    result = conn.execute(
        update(INQUIRIES).where(INQUIRIES.c.id == inquiry_id).values(status=status)
    )
    return bool(result.rowcount)
