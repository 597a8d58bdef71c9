"""A data-access request and a request to be forgotten: everything mailer holds about one
customer, as JSON, and its erasure.

Erasure asks each table's owner to clear what identifies the person and keeps what
throttling, dedupe and the counts need (a message's key, category, status and times), so
an erased customer is never mailed again and reports still add up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from mailer.customers import contacts, events, followups, profiles
from mailer.hooks import deliveries
from mailer.inbound import inquiries
from mailer.outbound import bounces, outbox
from mailer.sandbox import smtp_server

EVERYTHING = 1_000_000  # a customer's rows, all of them: an export leaves nothing out


def export(conn: Connection, email: str, now: datetime) -> dict[str, Any]:
    """Everything stored about the customer: profile and tags, the history of changes to
    them, every message with its delivery attempts, every inquiry with what was written and
    done about it, every call, meeting and note logged."""
    customer = profiles.get(conn, email)
    messages = [
        outbox.get(conn, row["id"])
        for row in outbox.find(conn, customer_id=customer.id, limit=EVERYTHING)
    ]
    written = [
        {**asdict(inquiry), "events": [asdict(e) for e in inquiries.events(conn, inquiry.id)]}
        for inquiry in inquiries.of_customer(conn, customer.id, with_text=True)
    ]
    return {
        "exported_at": now,
        "customer": asdict(customer),
        "changes": [asdict(c) for c in profiles.history(conn, customer.id, EVERYTHING)],
        "messages": messages,
        "inquiries": written,
        "followups": followups.of_customer(conn, customer.id),
        "contacts": contacts.of_customer(conn, customer.id),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Erased:
    """What an erasure touched, for the person who asked to confirm it."""

    messages: int
    inquiries: int
    followups: int
    sandbox_messages: int
    contacts: int = 0
    webhooks: int = 0  # deliveries whose payload was emptied
    events: int = 0  # what the shop said they did, deleted
    bounce_reports: int = 0  # bounces and complaints about mail to them, deleted


def erase(conn: Connection, email: str, now: datetime) -> Erased:
    """Forget the customer in one transaction (the caller's), or not at all."""
    customer = profiles.get(conn, email)
    erased = Erased(
        messages=outbox.erase_customer(conn, customer.id, customer.email, now),
        inquiries=inquiries.erase_customer(conn, customer.id, customer.email),
        followups=followups.erase_customer(conn, customer.id),
        sandbox_messages=smtp_server.erase_address(conn, customer.email),
        contacts=contacts.erase_customer(conn, customer.id),
        webhooks=deliveries.erase_customer(conn, customer.id),
        events=events.erase_customer(conn, customer.id),
        bounce_reports=bounces.erase_address(conn, customer.email),
    )
    profiles.erase(conn, customer, now)
    return erased
