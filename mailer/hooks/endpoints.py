"""The URLs admins register for events; each has its own signing secret, shown once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from sqlalchemy import Table, insert, select, update
from sqlalchemy.engine import Connection, RowMapping

from mailer.core.errors import InvalidInput, NotFound, Problem
from mailer.hooks import addresses, deliveries, signing
from mailer.hooks.events import EventType
from mailer.store.models import WebhookEndpoint

ENDPOINTS: Table = WebhookEndpoint.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    id: int
    url: str
    events: tuple[EventType, ...]
    secret: str
    created_at: datetime
    created_by: str
    disabled_at: datetime | None


def _load(row: RowMapping) -> Endpoint:
    return Endpoint(
        id=row["id"],
        url=row["url"],
        events=tuple(EventType(e) for e in row["events"]),
        secret=row["secret"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        disabled_at=row["disabled_at"],
    )


def _refuse(where: str, message: str) -> NoReturn:
    raise InvalidInput([Problem(where, message)])


def parse_events(names: Iterable[str]) -> tuple[EventType, ...]:
    """The events named, each once, in a stable order; InvalidInput names an unknown one."""
    given = set(names)
    wrong = sorted(given - {e.value for e in EventType})
    if wrong:
        _refuse("--event", f"unknown event {wrong[0]!r}; one of {', '.join(EventType)}")
    if not given:
        _refuse("--event", f"name at least one event: {', '.join(EventType)}")
    return tuple(e for e in EventType if e.value in given)


def add(
    conn: Connection,
    url: str,
    events: Iterable[EventType],
    *,
    allow_private: bool,
    created_by: str,
    now: datetime,
) -> Endpoint:
    """Register a URL after checking where its host resolves to now."""
    addresses.resolve(addresses.parse(url), allow_private)
    values = {
        "url": url,
        "events": [str(e) for e in events],
        "secret": signing.new_secret(),
        "created_at": now,
        "created_by": created_by,
    }
    new_id = conn.execute(insert(ENDPOINTS).values(**values)).inserted_primary_key
    assert new_id is not None
    return get(conn, int(new_id[0]))


def get(conn: Connection, endpoint_id: int) -> Endpoint:
    row = conn.execute(select(ENDPOINTS).where(ENDPOINTS.c.id == endpoint_id)).mappings().first()
    if row is None:
        raise NotFound(f"no webhook {endpoint_id}; `mailer webhooks list` shows them")
    return _load(row)


def find(conn: Connection) -> list[Endpoint]:
    """Every endpoint, removed ones too, so old deliveries can be told where they went."""
    rows = conn.execute(select(ENDPOINTS).order_by(ENDPOINTS.c.id)).mappings()
    return [_load(r) for r in rows]


def remove(conn: Connection, endpoint_id: int, now: datetime) -> tuple[Endpoint, int]:
    """No more events go to it; what was waiting for it is failed, with why. Returns the
    endpoint and how many deliveries were dropped."""
    endpoint = get(conn, endpoint_id)
    if endpoint.disabled_at is None:
        conn.execute(update(ENDPOINTS).where(ENDPOINTS.c.id == endpoint_id).values(disabled_at=now))
    dropped = deliveries.drop(conn, endpoint_id, "the webhook was removed", now)
    return get(conn, endpoint_id), dropped
