"""Replies from the desk: support answers an inquiry and the answer goes through the outbox.

A reply is transactional (the customer asked), so it goes to a customer who unsubscribed
from marketing; it is refused for an address that hard-bounced or was suppressed, with
the reason, before anything is recorded. It is threaded on the customer's message
(In-Reply-To, References), carries the inquiry's reference in the subject for mail clients
that drop those headers, and shows the agent's name on the configured address. The
reply is an event in the inquiry's timeline (who wrote what) and the outbox row it
queued is keyed by that event, so the customer's answer threads back into the inquiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.engine import Connection

from mailer.core import moments
from mailer.core.categories import Category
from mailer.core.errors import MailerError
from mailer.customers.profiles import CUSTOMERS
from mailer.inbound import inquiries
from mailer.outbound import outbox
from mailer.outbound.outbox import NewMessage
from mailer.outbound.prepare import FROM_NAME
from mailer.staff import users
from mailer.store.models import InquiryStatus

TEMPLATE = "desk_reply"
TEXT_MAX = 50_000
VALID_FOR = timedelta(days=3)


class Refused(MailerError):
    """A reply that must not go; the message says why, for the person who wrote it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent:
    event_id: int
    thread_id: int
    to_address: str


def answering(inquiry: inquiries.Opened) -> inquiries.Message:
    """The message a reply answers: the newest a person wrote in the thread (an
    out-of-office threaded onto it is not one)."""
    written = [m for m in inquiry.thread if m.decision in inquiries.FROM_PEOPLE]
    return written[-1] if written else inquiry


def quoted(message: inquiries.Message, zone: ZoneInfo) -> str:
    """The customer's message as the editor starts below the reply, each line behind "> ",
    under the attribution mail clients write ("On ..., X wrote:"), its time in ``zone``
    (the customer's) with the zone named, since the customer reads it."""
    text = (message.reply_text or message.body_text).strip()
    who = message.sender_name or message.sender
    lines = "\n".join(f"> {line}".rstrip() for line in text.splitlines())
    return f"\n\nOn {moments.named(message.received_at, zone)}, {who} wrote:\n{lines}\n"


def refusal(conn: Connection, address: str) -> str | None:
    """Why no reply may go to this address, or None: a hard bounce or other suppression."""
    reason = conn.execute(
        select(CUSTOMERS.c.suppressed_reason).where(CUSTOMERS.c.email == address.lower())
    ).scalar()
    if reason is None:
        return None
    return f"No reply can go to {address}: the address is suppressed ({reason})."


def send(
    conn: Connection, inquiry: inquiries.Opened, *, text: str, user: str, now: datetime
) -> Sent:
    """Record the reply, queue it, and mark the thread answered, in the caller's
    transaction; raises Refused when it must not go."""
    if not text.strip() or len(text) > TEXT_MAX:
        raise Refused(f"A reply needs some text, at most {TEXT_MAX:,} characters.")
    message = answering(inquiry)
    reason = refusal(conn, message.sender)
    if reason is not None:
        raise Refused(reason)
    thread_id = inquiries.root_of(inquiry)
    event_id = inquiries.record_reply(conn, thread_id, text, user, now)
    key = inquiries.reply_key(thread_id, event_id)
    outbox.enqueue_in(
        conn, [_message(inquiry, message, text, users.shown_name(conn, user), key)], now
    )
    inquiries.change_status(conn, thread_id, InquiryStatus.ANSWERED, user, now)
    return Sent(event_id=event_id, thread_id=thread_id, to_address=message.sender)


def _message(
    inquiry: inquiries.Opened, message: inquiries.Message, text: str, agent: str, key: str
) -> NewMessage:
    thread_ids = [m.message_id for m in inquiry.thread if m.message_id]
    headers: dict[str, str] = {}
    if message.message_id:
        headers["In-Reply-To"] = message.message_id
        headers["References"] = " ".join(dict.fromkeys([*thread_ids, message.message_id]))
    root = inquiries.root_of(inquiry)
    first = inquiry.thread[0] if inquiry.thread else inquiry
    return NewMessage(
        dedupe_key=key,
        to_address=message.sender,
        category=Category.TRANSACTIONAL,
        template=TEMPLATE,
        customer_id=message.customer_id,
        context={
            "inquiry": {
                "reference": inquiries.reference(root),
                "subject": first.subject,
                "received_at": first.received_at,
            },
            "reply": {"text": text, "agent": agent},
            FROM_NAME: agent,
        },
        headers=headers,
        priority=100,
        valid_for=VALID_FOR,
    )
