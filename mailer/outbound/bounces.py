"""Bounces and complaints kept per message, and the rule that suppresses an address whose
mail keeps failing softly. The only writer of ``bounce_reports``.

A hard bounce (no such user) suppresses at once; that is the caller's. A soft one (mailbox
full, a temporary 4.x.x failure) may pass, so it only counts: an address is suppressed when
its last ``limit`` messages within ``window`` all bounced softly. A message in between that
did not bounce breaks the run, which is how "a later successful delivery resets the count"
reads when bounces arrive late and out of order: the run is judged in the order the
messages were sent, each time a report arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Table, delete, exists, insert, select
from sqlalchemy.engine import Connection

from mailer.store.models import BounceReport, OutboxMessage, OutboxStatus

REPORTS: Table = BounceReport.__table__  # type: ignore[attr-defined]
OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]
DIAGNOSTIC_CHARS = 1000


class Kind(StrEnum):
    HARD = "hard"
    SOFT = "soft"
    COMPLAINT = "complaint"


@dataclass(frozen=True, slots=True)
class SoftRule:
    limit: int
    window: timedelta


@dataclass(frozen=True, slots=True)
class Sent:
    """One message that went to the address, and whether a soft bounce came back for it."""

    at: datetime
    soft_bounced: bool


def soft_run(history: Sequence[Sent]) -> int:
    """How many of the latest messages, newest first, bounced softly without a break."""
    run = 0
    for sent in sorted(history, key=lambda s: s.at, reverse=True):
        if not sent.soft_bounced:
            break
        run += 1
    return run


def record(
    conn: Connection,
    *,
    outbox_id: int | None,
    address: str,
    kind: Kind,
    status: str = "",
    diagnostic: str = "",
    now: datetime,
) -> None:
    conn.execute(
        insert(REPORTS).values(
            outbox_id=outbox_id,
            address=address,
            kind=kind,
            status=status[:20],
            diagnostic=" ".join(diagnostic.split())[:DIAGNOSTIC_CHARS],
            reported_at=now,
        )
    )


def soft_history(conn: Connection, address: str, since: datetime) -> list[Sent]:
    """The messages sent to ``address`` since ``since``, each marked if it bounced softly."""
    bounced = exists().where(REPORTS.c.outbox_id == OUTBOX.c.id, REPORTS.c.kind == Kind.SOFT)
    rows = conn.execute(
        select(OUTBOX.c.sent_at, bounced.label("soft")).where(
            OUTBOX.c.to_address == address,
            OUTBOX.c.status.in_((OutboxStatus.SENT, OutboxStatus.BOUNCED)),
            OUTBOX.c.sent_at >= since,
        )
    )
    return [Sent(row.sent_at, bool(row.soft)) for row in rows]


def erase_address(conn: Connection, address: str) -> int:
    """An erased customer's reports go with them: they hold the address."""
    return int(conn.execute(delete(REPORTS).where(REPORTS.c.address == address)).rowcount)
