"""Requests per key per minute, counted in the database so that every process serving the
API (the daemon, `mailer web` on another host) shares one count.

A fixed window: one row per key per minute, bumped by one UPSERT per request that returns
the new count. Its first request also clears the key's older windows, so the table holds
about one row per key in use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Table, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from mailer.store.models import ApiRateWindow

WINDOWS: Table = ApiRateWindow.__table__  # type: ignore[attr-defined]
WINDOW = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int  # whole seconds until the next window, when not allowed


def window_start(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


def judge(count: int, limit: int, now: datetime) -> Verdict:
    """May the ``count``-th request of this window pass; if not, when to come back."""
    if count <= limit:
        return Verdict(True, 0)
    left = window_start(now) + WINDOW - now
    return Verdict(False, max(1, math.ceil(left.total_seconds())))


def count(conn: Connection, key_id: int, now: datetime) -> int:
    """This request's number in the key's current window."""
    start = window_start(now)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(WINDOWS).values(key_id=key_id, window_start=start, requests=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=["key_id", "window_start"],
        set_={"requests": WINDOWS.c.requests + 1},
    )
    number = int(conn.execute(stmt.returning(WINDOWS.c.requests)).scalar_one())
    if number == 1:
        old = (WINDOWS.c.key_id == key_id) & (WINDOWS.c.window_start < start)
        conn.execute(delete(WINDOWS).where(old))
    return number
