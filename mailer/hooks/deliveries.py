"""The durable queue of webhooks: due rows are claimed with a lease, each POST is recorded,
a failure is tried again later with growing, jittered waits, and after the last attempt the
delivery is failed for an admin to see. A worker that dies leaves its claimed rows to come
back when the lease runs out, so an event is sent at least once (receivers dedupe on its
``webhook-id``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, bindparam, insert, select, update
from sqlalchemy.engine import Connection

from mailer.store.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookStatus,
)

DELIVERIES: Table = WebhookDelivery.__table__  # type: ignore[attr-defined]
ATTEMPTS: Table = WebhookAttempt.__table__  # type: ignore[attr-defined]
ENDPOINTS: Table = WebhookEndpoint.__table__  # type: ignore[attr-defined]
FIRST_WAIT = timedelta(minutes=1)
GROWTH = 3  # each wait three times the one before: 1 m, 3 m, 9 m ... 12 h
LONGEST_WAIT = timedelta(hours=12)
JITTER = 0.25  # up to a quarter longer, so receivers that were down are not hit all at once
ERROR_MAX = 500


def wait_after(attempts: int, jitter: float) -> timedelta:
    """How long to wait after the ``attempts``-th failed POST; ``jitter`` is in [0, 1).
    With the default 8 attempts the waits add up to about 18 hours, 23 at most."""
    base = min(FIRST_WAIT * int(GROWTH ** (attempts - 1)), LONGEST_WAIT)
    return base * (1 + JITTER * jitter)


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """A delivery this worker may POST now, with where and how to sign it."""

    id: int
    event_id: str
    event_type: str
    payload: dict[str, Any]
    attempts: int
    url: str
    secret: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What one POST came to: a status code, or an error before any answer."""

    delivery_id: int
    at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def claim(engine: Engine, now: datetime, limit: int, lease: timedelta) -> list[Claimed]:
    """Up to ``limit`` due deliveries of endpoints in use, leased to this worker; on
    PostgreSQL two workers skip each other's rows, SQLite has one writer at a time."""
    due = (
        select(DELIVERIES.c.id)
        .where(
            DELIVERIES.c.status == WebhookStatus.QUEUED,
            DELIVERIES.c.next_attempt_at <= now,
        )
        .order_by(DELIVERIES.c.next_attempt_at, DELIVERIES.c.id)
        .limit(limit)
    )
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        claimed = conn.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id.in_(due.scalar_subquery()))
            .values(status=WebhookStatus.SENDING, lease_until=now + lease)
            .returning(DELIVERIES.c.id)
        ).scalars()
        ids = list(claimed)
        if not ids:
            return []
        rows = conn.execute(
            select(DELIVERIES, ENDPOINTS.c.url, ENDPOINTS.c.secret)
            .join(ENDPOINTS, ENDPOINTS.c.id == DELIVERIES.c.endpoint_id)
            .where(DELIVERIES.c.id.in_(ids))
            .order_by(DELIVERIES.c.next_attempt_at, DELIVERIES.c.id)
        ).mappings()
        return [
            Claimed(
                id=r["id"],
                event_id=r["event_id"],
                event_type=r["event_type"],
                payload=r["payload"],
                attempts=r["attempts"],
                url=r["url"],
                secret=r["secret"],
            )
            for r in rows
        ]


def record(
    engine: Engine,
    claimed: Sequence[Claimed],
    outcomes: Sequence[Outcome],
    max_attempts: int,
    jitter: Callable[[], float],
) -> None:
    """Every attempt is a row; the delivery is delivered, queued again for later, or failed
    once it has had ``max_attempts``. A delivery whose endpoint was removed meanwhile stays
    failed."""
    attempts = {c.id: c.attempts + 1 for c in claimed}
    changes = [_change(o, attempts[o.delivery_id], max_attempts, jitter) for o in outcomes]
    if not changes:
        return
    with engine.begin() as conn:
        conn.execute(insert(ATTEMPTS), [_attempt(o) for o in outcomes])
        conn.execute(
            update(DELIVERIES)
            .where(
                DELIVERIES.c.id == bindparam("_id"),
                DELIVERIES.c.status == WebhookStatus.SENDING,
            )
            .values(
                status=bindparam("_status"),
                attempts=bindparam("_attempts"),
                next_attempt_at=bindparam("_next"),
                delivered_at=bindparam("_delivered_at"),
                last_status_code=bindparam("_code"),
                last_error=bindparam("_error"),
                lease_until=None,
            ),
            changes,
        )


def _change(
    outcome: Outcome, attempts: int, max_attempts: int, jitter: Callable[[], float]
) -> dict[str, Any]:
    if outcome.delivered:
        status, later = WebhookStatus.DELIVERED, outcome.at
    elif attempts >= max_attempts:
        status, later = WebhookStatus.FAILED, outcome.at
    else:
        status, later = WebhookStatus.QUEUED, outcome.at + wait_after(attempts, jitter())
    return {
        "_id": outcome.delivery_id,
        "_status": status,
        "_attempts": attempts,
        "_next": later,
        "_delivered_at": outcome.at if outcome.delivered else None,
        "_code": outcome.status_code,
        "_error": _error(outcome),
    }


def _error(outcome: Outcome) -> str | None:
    if outcome.error is not None:
        return outcome.error[:ERROR_MAX]
    if outcome.delivered:
        return None
    return f"the receiver answered {outcome.status_code}"


def _attempt(outcome: Outcome) -> dict[str, Any]:
    return {
        "delivery_id": outcome.delivery_id,
        "at": outcome.at,
        "status_code": outcome.status_code,
        "error": _error(outcome),
        "duration_ms": outcome.duration_ms,
    }


def release(engine: Engine, ids: Sequence[int]) -> None:
    """Deliveries a stopping worker could not finish go back to the queue untried."""
    if not ids:
        return
    with engine.begin() as conn:
        conn.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id.in_(ids), DELIVERIES.c.status == WebhookStatus.SENDING)
            .values(status=WebhookStatus.QUEUED, lease_until=None)
        )


def release_expired_leases(engine: Engine, now: datetime) -> int:
    """Deliveries whose worker vanished mid-POST are due again (and may arrive twice)."""
    with engine.begin() as conn:
        result = conn.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.status == WebhookStatus.SENDING, DELIVERIES.c.lease_until < now)
            .values(status=WebhookStatus.QUEUED, lease_until=None, next_attempt_at=now)
        )
    return int(result.rowcount)


def retry(conn: Connection, delivery_id: int, now: datetime) -> bool:
    """An admin's retry of a failed delivery: due now, for one more attempt (more if it was
    failed before its last); False if it is not failed, its webhook was removed or its
    customer erased (an empty payload)."""
    row = conn.execute(
        select(DELIVERIES.c.payload)
        .join(ENDPOINTS, ENDPOINTS.c.id == DELIVERIES.c.endpoint_id)
        .where(
            DELIVERIES.c.id == delivery_id,
            DELIVERIES.c.status == WebhookStatus.FAILED,
            ENDPOINTS.c.disabled_at.is_(None),
        )
    ).first()
    if row is None or not row.payload:
        return False
    conn.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == delivery_id)
        .values(status=WebhookStatus.QUEUED, next_attempt_at=now)
    )
    return True


def drop(conn: Connection, endpoint_id: int, reason: str, now: datetime) -> int:
    """Fail what still waits for an endpoint that is no longer in use."""
    waiting = (WebhookStatus.QUEUED, WebhookStatus.SENDING)
    result = conn.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.endpoint_id == endpoint_id, DELIVERIES.c.status.in_(waiting))
        .values(status=WebhookStatus.FAILED, last_error=reason, lease_until=None)
    )
    return int(result.rowcount)


def erase_customer(conn: Connection, customer_id: int) -> int:
    """Forget what the customer's events said: those still waiting are not sent, and every
    payload about them is emptied; the rows, their type, status and attempts stay."""
    theirs = DELIVERIES.c.customer_id == customer_id
    waiting = (WebhookStatus.QUEUED, WebhookStatus.SENDING)
    conn.execute(
        update(DELIVERIES)
        .where(theirs, DELIVERIES.c.status.in_(waiting))
        .values(status=WebhookStatus.FAILED, last_error="the customer was erased", lease_until=None)
    )
    return int(conn.execute(update(DELIVERIES).where(theirs).values(payload={})).rowcount)


def next_due(engine: Engine) -> datetime | None:
    """When the earliest queued delivery falls due, so an idle worker knows how long to rest."""
    with engine.connect() as conn:
        return conn.execute(
            select(DELIVERIES.c.next_attempt_at)
            .where(DELIVERIES.c.status == WebhookStatus.QUEUED)
            .order_by(DELIVERIES.c.next_attempt_at)
            .limit(1)
        ).scalar_one_or_none()


def find(conn: Connection, *, failed: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    """Newest first, each with its URL and every attempt, for an admin."""
    query = (
        select(DELIVERIES, ENDPOINTS.c.url)
        .join(ENDPOINTS, ENDPOINTS.c.id == DELIVERIES.c.endpoint_id)
        .order_by(DELIVERIES.c.id.desc())
        .limit(limit)
    )
    if failed:
        query = query.where(DELIVERIES.c.status == WebhookStatus.FAILED)
    rows = [dict(r) for r in conn.execute(query).mappings()]
    tried = conn.execute(
        select(ATTEMPTS)
        .where(ATTEMPTS.c.delivery_id.in_([r["id"] for r in rows]))
        .order_by(ATTEMPTS.c.id)
    ).mappings()
    by_delivery: dict[int, list[dict[str, Any]]] = {}
    for attempt in tried:
        by_delivery.setdefault(attempt["delivery_id"], []).append(dict(attempt))
    return [{**r, "attempts_log": by_delivery.get(r["id"], [])} for r in rows]
