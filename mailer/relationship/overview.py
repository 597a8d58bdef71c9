"""One customer as `mailer customers show --json` and the API's GET /customers/{email}
give them: the profile, the timeline, last contact each way, the messages sent, when they
may next be contacted, their orders and what those say."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from mailer.commerce import insights, orders
from mailer.core.config import Settings
from mailer.customers import contacts, profiles
from mailer.outbound import outbox
from mailer.relationship import history


def overview(
    conn: Connection,
    email: str,
    now: datetime,
    settings: Settings,
    *,
    messages: int = 20,
    timeline: int = 50,
) -> dict[str, Any]:
    """Everything the customer's page shows; NotFound when there is no such customer."""
    customer = profiles.get(conn, email)
    touches = history.page(conn, customer.id, customer.unsubscribed_at, size=timeline)
    insight = insights.export(conn, customer_id=customer.id)
    return {
        **asdict(customer),
        "next_contact": outbox.next_contact(conn, customer, now, settings),
        "history": outbox.find(conn, customer_id=customer.id, limit=messages),
        "timeline": [asdict(e) for e in touches.entries],
        "last_contact": contacts.last_of(conn, customer.id),
        "orders": orders.summary(conn, customer.id),
        "insight": insight[0] if insight else None,
    }
