"""Custom events the shop sends (viewed_product, cart_abandoned, ...): kept on the customer
they are about, for their timeline. The only writer of ``customer_events``.

An event that carries the caller's id is kept once per customer: sending it again, as a
shop does after a timeout, changes nothing; sending other content under the same id is a
conflict the caller hears of, never a silent keep of the old. Two calls racing with the
same new id both end well: the database keeps one (INSERT ... ON CONFLICT DO NOTHING) and
each call then compares what it sent with what is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, insert, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
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


@dataclass(slots=True, kw_only=True)
class Recorded:
    added: int = 0
    unchanged: int = 0
    customers_added: int = 0
    conflicts: list[int] = field(default_factory=list)  # drafts whose ref holds other content


def same(draft: Draft, name: str, occurred_at: datetime, payload: Any) -> bool:
    """Whether a stored event is the one sent again: the same name, time and payload."""
    return (draft.name, draft.occurred_at, draft.payload) == (name, occurred_at, payload)


def record(conn: Connection, drafts: Sequence[Draft], now: datetime, source: str) -> Recorded:
    """Store the events; an address not known yet becomes a lead, with no consent implied.
    An event whose (customer, ref) is stored already is left as it is, counted unchanged
    when it is the same event and listed in ``conflicts`` (by index) when it is not: the
    caller then rolls the call back."""
    report = Recorded()
    if not drafts:
        return report
    ids, report.customers_added = profiles.ensure(conn, {d.email for d in drafts}, now, LEAD_SOURCE)
    rows = [_row(d, ids[d.email], now, source) for d in drafts]
    plain = [row for row in rows if row["ref"] is None]
    if plain:
        conn.execute(insert(EVENTS), plain)
    keyed = [(i, row) for i, row in enumerate(rows) if row["ref"] is not None]
    if not keyed:
        report.added = len(plain)
        return report
    before = _stored(conn, [row for _, row in keyed])
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(EVENTS).on_conflict_do_nothing(index_elements=["customer_id", "ref"])
    conn.execute(statement, [row for _, row in keyed])
    after = _stored(conn, [row for _, row in keyed])
    report.added = len(plain)
    for i, row in keyed:
        key = (row["customer_id"], row["ref"])
        if not same(drafts[i], *after[key]):
            report.conflicts.append(i)
        elif key in before:
            report.unchanged += 1
        else:
            report.added += 1
    return report


def _row(draft: Draft, customer_id: int, now: datetime, source: str) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "name": draft.name,
        "occurred_at": draft.occurred_at,
        "payload": draft.payload,
        "ref": draft.ref,
        "source": source[:120],
        "created_at": now,
    }


def _stored(
    conn: Connection, rows: Sequence[dict[str, Any]]
) -> dict[tuple[int, str], tuple[str, datetime, Any]]:
    """(name, occurred_at, payload) of the stored events with these rows' (customer, ref)."""
    pair = tuple_(EVENTS.c.customer_id, EVENTS.c.ref)
    query = select(
        EVENTS.c.customer_id, EVENTS.c.ref, EVENTS.c.name, EVENTS.c.occurred_at, EVENTS.c.payload
    ).where(pair.in_([(row["customer_id"], row["ref"]) for row in rows]))
    return {(r.customer_id, r.ref): (r.name, r.occurred_at, r.payload) for r in conn.execute(query)}


def erase_customer(conn: Connection, customer_id: int) -> int:
    """Delete the customer's events: a payload may say anything about them, and what they
    did is no count anyone needs once they are forgotten."""
    return int(conn.execute(delete(EVENTS).where(EVENTS.c.customer_id == customer_id)).rowcount)
