"""API keys: made and revoked by admins, shown once, stored as a SHA-256 hash.

A key is 32 random bytes (256 bits), so a plain SHA-256 of it is as safe to keep as a slow
password hash would be: nobody can guess their way back to a key that was never chosen by a
person, and a lookup costs one indexed SELECT instead of argon2's tens of milliseconds on
every request.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NoReturn

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.engine import Connection, RowMapping

from mailer.api import limits
from mailer.core.errors import InvalidInput, NotFound, Problem
from mailer.store.models import ApiKey as ApiKeyRow

KEYS: Table = ApiKeyRow.__table__  # type: ignore[attr-defined]
# built once: every API request runs these, and a statement built anew costs more than the
# query (SQLAlchemy memoises the cache key of a statement object it has seen)
_LIVE = select(KEYS).where(KEYS.c.key_hash == bindparam("key_hash"), KEYS.c.revoked_at.is_(None))
_USED = update(KEYS).where(KEYS.c.id == bindparam("_id")).values(last_used_at=bindparam("_at"))
MARK = "mlr_"  # tells a mailer key in a config file or a leak scanner's report
PREFIX_LENGTH = len(MARK) + 8  # what people see of a key: enough to tell keys apart
USED_EVERY = timedelta(minutes=1)  # last_used_at is rewritten at most this often
NAME_MAX = 100
RATE_MAX = 1_000_000  # requests a minute; far past any need, well inside the column


class Scope(StrEnum):
    CUSTOMERS_READ = "customers:read"
    CUSTOMERS_WRITE = "customers:write"
    ORDERS_WRITE = "orders:write"
    EVENTS_WRITE = "events:write"
    SEND = "send"
    INQUIRIES_READ = "inquiries:read"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """A stored key, without the key."""

    id: int
    name: str
    prefix: str
    scopes: tuple[Scope, ...]
    rate_per_minute: int | None
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _load(row: RowMapping) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=tuple(Scope(s) for s in row["scopes"]),
        rate_per_minute=row["rate_per_minute"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


def parse_scopes(names: Iterable[str]) -> tuple[Scope, ...]:
    """The scopes named, each once, in a stable order; InvalidInput names an unknown one."""
    given = set(names)
    wrong = sorted(given - {s.value for s in Scope})
    if wrong:
        allowed = ", ".join(Scope)
        _refuse("--scope", f"unknown scope {wrong[0]!r}; one of {allowed}")
    return tuple(s for s in Scope if s.value in given)


def _refuse(where: str, message: str) -> NoReturn:
    raise InvalidInput([Problem(where, message)])


def create(
    conn: Connection,
    name: str,
    scopes: Iterable[Scope],
    *,
    rate_per_minute: int | None,
    created_by: str,
    now: datetime,
) -> tuple[ApiKey, str]:
    """A new key and the key itself, which is never shown again."""
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        _refuse("NAME", f"a key's name must be 1 to {NAME_MAX} characters")
    if conn.execute(select(KEYS.c.id).where(KEYS.c.name == name)).first():
        _refuse("NAME", f"there is a key named {name!r} already (revoked keys keep their name)")
    if rate_per_minute is not None and rate_per_minute < 1:
        _refuse("--rate", "the rate must be at least 1 request a minute")
    if rate_per_minute is not None and rate_per_minute > RATE_MAX:
        _refuse("--rate", f"the rate may be at most {RATE_MAX:,} requests a minute")
    key = MARK + secrets.token_urlsafe(32)
    values = {
        "name": name,
        "prefix": key[:PREFIX_LENGTH],
        "key_hash": hash_key(key),
        "scopes": [s.value for s in scopes],
        "rate_per_minute": rate_per_minute,
        "created_at": now,
        "created_by": created_by,
    }
    conn.execute(insert(KEYS).values(values))
    return get(conn, name), key


def find(conn: Connection) -> list[ApiKey]:
    """Every key, revoked ones too, by name."""
    return [_load(r) for r in conn.execute(select(KEYS).order_by(KEYS.c.name)).mappings()]


def get(conn: Connection, name_or_id: str | int) -> ApiKey:
    """A key by its id (an int, as the web app's links name it), or by its name, or by its
    id when no key has that name (as a command line names it)."""
    if isinstance(name_or_id, int):
        where = KEYS.c.id == name_or_id
    else:
        where = KEYS.c.name == name_or_id
        if name_or_id.isdigit():
            where = where | (KEYS.c.id == int(name_or_id))
    rows = conn.execute(select(KEYS).where(where).order_by(KEYS.c.name != str(name_or_id)))
    row = rows.mappings().first()
    if row is None:
        raise NotFound(f"no API key {name_or_id!r}; `mailer api-keys list` shows them")
    return _load(row)


def revoke(conn: Connection, name_or_id: str | int, now: datetime) -> ApiKey:
    """Refuse the key from now on, in every process; revoking twice keeps the first time."""
    key = get(conn, name_or_id)
    if key.revoked_at is None:
        conn.execute(update(KEYS).where(KEYS.c.id == key.id).values(revoked_at=now))
        return get(conn, key.id)
    return key


def authenticate(conn: Connection, key: str, now: datetime) -> tuple[ApiKey, int] | None:
    """The live key this is, and this request's number in its rate window (``limits``);
    None for an unknown or revoked key, which is not counted. Its last use is recorded
    when the recorded one is older than USED_EVERY, so a busy key is not a write per
    request."""
    counted = limits.count_key(conn, _LIVE, {"key_hash": hash_key(key)}, now)
    if counted is None:
        return None
    row, number = counted
    found = _load(row)
    if stale(found.last_used_at, now):
        conn.execute(_USED, {"_id": found.id, "_at": now})
    return found, number


def stale(last_used_at: datetime | None, now: datetime) -> bool:
    return last_used_at is None or now - last_used_at >= USED_EVERY
