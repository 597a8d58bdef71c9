"""Requests per key per minute, and posts to the public web forms per client and per
address, counted in the database so that every process serving them (the daemon,
`mailer web` on another host) shares one count.

A fixed window: one row per counted thing per window, bumped by one UPSERT per request
that returns the new count. Its first request also clears that thing's older windows, so
the tables hold about one row per key, client or address in use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import BindParameter, Select, Table, and_, bindparam, delete, literal, select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from mailer.store.models import ApiRateWindow, FormRateWindow

WINDOWS: Table = ApiRateWindow.__table__  # type: ignore[attr-defined]
FORM_WINDOWS: Table = FormRateWindow.__table__  # type: ignore[attr-defined]
WINDOW = timedelta(minutes=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int  # whole seconds until the next window, when not allowed


def window_start(now: datetime, window: timedelta = WINDOW) -> datetime:
    """The start of the window ``now`` falls in; windows are aligned to the epoch."""
    return now - (now - _EPOCH) % window


def judge(count: int, limit: int, now: datetime, window: timedelta = WINDOW) -> Verdict:
    """May the ``count``-th request of this window pass; if not, when to come back."""
    if count <= limit:
        return Verdict(True, 0)
    left = window_start(now, window) + window - now
    return Verdict(False, max(1, math.ceil(left.total_seconds())))


def count(conn: Connection, key_id: int, now: datetime) -> int:
    """This request's number in the API key's current window."""
    return count_in(conn, WINDOWS, {"key_id": key_id}, now, WINDOW)


def count_key(
    conn: Connection, keyed: Select[Any], params: Mapping[str, Any], now: datetime
) -> tuple[RowMapping, int] | None:
    """The API key ``keyed`` selects (with ``params``), and this request's number in its
    current window; None when it selects no key, and then nothing is counted. On
    PostgreSQL the look-up and the count are one statement (the count a CTE beside the
    look-up): every API request makes them, and each round trip was a fifth of a send's."""
    if conn.dialect.name != "postgresql":
        row = conn.execute(keyed, params).mappings().first()
        return None if row is None else (row, count(conn, row["id"], now))
    start = window_start(now, WINDOW)
    found = conn.execute(_counted(keyed), {**params, "_window_start": start}).mappings().first()
    if found is None:
        return None
    number = int(found[_NUMBER])
    _clear_older(conn, WINDOWS, {"key_id": found["id"]}, start, number)
    return found, number


_NUMBER = "_requests"  # the count's column beside the key's in ``count_key``


@lru_cache(maxsize=4)
def _counted(keyed: Select[Any]) -> Select[Any]:
    """PostgreSQL: the key ``keyed`` selects with its request counted, built once."""
    key = keyed.cte("key")
    start = bindparam("_window_start", type_=WINDOWS.c.window_start.type)
    bump = (
        postgresql.insert(WINDOWS)
        .from_select(["key_id", "window_start", "requests"], select(key.c.id, start, literal(1)))
        .on_conflict_do_update(
            index_elements=["key_id", "window_start"], set_={"requests": WINDOWS.c.requests + 1}
        )
        .returning(WINDOWS.c.requests)
        .cte("bump")
    )
    return select(key, bump.c.requests.label(_NUMBER)).select_from(key.join(bump, true()))


def count_form_post(
    conn: Connection, scope: str, subject: str, now: datetime, window: timedelta
) -> int:
    """This post's number in the window of one client or address (``scope`` says which)."""
    return count_in(conn, FORM_WINDOWS, {"scope": scope, "subject": subject}, now, window)


def count_in(
    conn: Connection, table: Table, key: Mapping[str, object], now: datetime, window: timedelta
) -> int:
    """Bump the row of ``key`` in ``table`` for the current window and return its count."""
    bump, _ = _statements(conn.dialect.name, table, tuple(key))
    start = window_start(now, window)
    number = int(conn.execute(bump, _params(key, start)).scalar_one())
    _clear_older(conn, table, key, start, number)
    return number


def _params(key: Mapping[str, object], start: datetime) -> dict[str, object]:
    return {**{f"_{name}": value for name, value in key.items()}, "_window_start": start}


def _clear_older(
    conn: Connection, table: Table, key: Mapping[str, object], start: datetime, number: int
) -> None:
    """On the thing's first request of a window (``number`` 1), delete its older windows."""
    if number == 1:
        clear = _statements(conn.dialect.name, table, tuple(key))[1]
        conn.execute(clear, _params(key, start))


@lru_cache(maxsize=16)
def _statements(dialect_name: str, table: Table, names: tuple[str, ...]) -> tuple[Any, Any]:
    """The UPSERT that counts a request and the DELETE of older windows, built once: every
    API request runs them, and building a statement costs more than running it."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    # bound as _NAME: SQLAlchemy keeps a column's own name for the values it writes
    key: dict[str, BindParameter[Any]] = {name: bindparam(f"_{name}") for name in names}
    start: BindParameter[datetime] = bindparam("_window_start")
    stmt = dialect.insert(table).values(**key, window_start=start, requests=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[*names, "window_start"], set_={"requests": table.c.requests + 1}
    )
    same = and_(*(table.c[name] == value for name, value in key.items()))
    older = delete(table).where(same, table.c.window_start < start)
    return stmt.returning(table.c.requests), older
