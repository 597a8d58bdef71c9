"""The events webhooks tell of, and the one call that records one.

``record`` runs in the caller's transaction: the delivery rows commit with the change that
raised the event (an unsubscribe, a logged inquiry, a message sent), or not at all, so a
crash loses no event and invents none.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.engine import Connection

from mailer.store.models import WebhookDelivery, WebhookEndpoint, WebhookStatus

ENDPOINTS: Table = WebhookEndpoint.__table__  # type: ignore[attr-defined]
DELIVERIES: Table = WebhookDelivery.__table__  # type: ignore[attr-defined]
# built once: every delivered batch, inquiry and customer change asks who listens
_IN_USE = select(ENDPOINTS.c.id, ENDPOINTS.c.events).where(ENDPOINTS.c.disabled_at.is_(None))


class EventType(StrEnum):
    INQUIRY_CREATED = "inquiry.created"
    MESSAGE_SENT = "message.sent"
    MESSAGE_BOUNCED = "message.bounced"
    CUSTOMER_UNSUBSCRIBED = "customer.unsubscribed"
    FOLLOWUP_DUE = "followup.due"


def new_event_id() -> str:
    """The ``webhook-id`` of an event: unique, and the same on every attempt."""
    return "evt_" + secrets.token_hex(12)


def payload(event_type: EventType, data: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """The body the Standard Webhooks specification suggests: type, timestamp and data."""
    return {"type": str(event_type), "timestamp": _plain(at), "data": _plain(data)}


def _plain(value: Any) -> Any:
    """JSON as a receiver expects it: times in UTC as RFC 3339 with a Z."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def subscribers(conn: Connection, event_type: EventType) -> list[int]:
    """The endpoints in use that asked for this event."""
    return [row.id for row in conn.execute(_IN_USE) if str(event_type) in row.events]


def record(
    conn: Connection, event_type: EventType, items: Iterable[Mapping[str, Any]], now: datetime
) -> int:
    """Queue one delivery per event and subscribed endpoint; returns how many.

    ``items`` is read only when some endpoint wants the event, so a caller may pass a
    generator that queries what the event says, and pays nothing while nobody listens."""
    endpoint_ids = subscribers(conn, event_type)
    if not endpoint_ids:
        return 0
    rows = []
    for data in items:
        body, event_id = payload(event_type, data, now), new_event_id()
        rows += [
            {
                "endpoint_id": endpoint_id,
                "event_type": str(event_type),
                "event_id": event_id,
                "customer_id": data.get("customer_id"),  # so an erasure can find it
                "payload": body,
                "status": WebhookStatus.QUEUED,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for endpoint_id in endpoint_ids
        ]
    if rows:
        conn.execute(insert(DELIVERIES), rows)
    return len(rows)
