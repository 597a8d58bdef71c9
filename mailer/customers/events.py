"""Custom events the shop sends (viewed_product, cart_abandoned, ...): kept on the customer
they are about, for their timeline. The only writer of ``customer_events``.

An event that carries the caller's id is kept once per customer: sending it again, as a
shop does after a timeout, changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, insert, select, tuple_
from sqlalchemy.engine import Connection

from mailer.customers import profiles
from mailer.store.models import CustomerEvent

EVENTS: Table = CustomerEvent.__table__  # type: ignore[attr-defined]
LEAD_SOURCE = "api"  # what an address first seen in an event is recorded as coming from


@dataclass(frozen=True, slots=True, kw_only=True)
class Draft:
    """One event as checked at the edge: a normalised address and an aware time."""

    email: str
    name: str
    occurred_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)
    ref: str | None = None


@dataclass(slots=True)
class Recorded:
    added: int = 0
    unchanged: int = 0
    customers_added: int = 0


def record(conn: Connection, drafts: Sequence[Draft], now: datetime, source: str) -> Recorded:
    """Store the events; an address not known yet becomes a lead, with no consent implied,
    and an event whose (customer, ref) is stored already is left as it is."""
    report = Recorded()
    if not drafts:
        return report
    ids, report.customers_added = profiles.ensure(conn, {d.email for d in drafts}, now, LEAD_SOURCE)
    keys = {(ids[d.email], d.ref) for d in drafts if d.ref is not None}
    stored: set[tuple[int, str]] = set()
    if keys:
        pair = tuple_(EVENTS.c.customer_id, EVENTS.c.ref)
        query = select(EVENTS.c.customer_id, EVENTS.c.ref).where(pair.in_(list(keys)))
        stored = {(r.customer_id, r.ref) for r in conn.execute(query)}
    rows = [
        {
            "customer_id": ids[d.email],
            "name": d.name,
            "occurred_at": d.occurred_at,
            "payload": d.payload,
            "ref": d.ref,
            "source": source[:120],
            "created_at": now,
        }
        for d in drafts
        if d.ref is None or (ids[d.email], d.ref) not in stored
    ]
    if rows:
        conn.execute(insert(EVENTS), rows)
    report.added, report.unchanged = len(rows), len(drafts) - len(rows)
    return report


def erase_customer(conn: Connection, customer_id: int) -> int:
    """Delete the customer's events: a payload may say anything about them, and what they
    did is no count anyone needs once they are forgotten."""
    return int(conn.execute(delete(EVENTS).where(EVENTS.c.customer_id == customer_id)).rowcount)
