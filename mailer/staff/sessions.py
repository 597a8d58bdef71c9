"""Signed-in browsers, kept server side: the cookie carries only a random id, and this
table its SHA-256, so a stolen database gives no usable cookie, and ending a session here
(signing out, disabling the user, a new password) ends it in every process at once."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.engine import Connection

from mailer.store.models import WebSession

SESSIONS: Table = WebSession.__table__  # type: ignore[attr-defined]
IDLE = timedelta(hours=12)  # a session unused this long ends
SEEN_EVERY = timedelta(minutes=1)  # how often a busy session's last use is written down


def new_id() -> str:
    """A random session id, also what an anonymous visitor's CSRF token is derived from."""
    return secrets.token_urlsafe(32)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def start(conn: Connection, user_id: int, now: datetime) -> str:
    """A new session for the user; returns its id, for the cookie only. Sessions that ran
    out are cleared here, so the table holds about one row per browser signed in."""
    conn.execute(delete(SESSIONS).where(SESSIONS.c.expires_at <= now))
    session_id = new_id()
    conn.execute(
        insert(SESSIONS).values(
            id_hash=_hash(session_id),
            user_id=user_id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + IDLE,
        )
    )
    return session_id


def user_of(conn: Connection, session_id: str, now: datetime) -> int | None:
    """The user a live session belongs to; its idle time starts again, written at most once
    a minute so that a busy page costs no write per request."""
    found = conn.execute(
        select(SESSIONS.c.user_id, SESSIONS.c.last_seen_at).where(
            SESSIONS.c.id_hash == _hash(session_id), SESSIONS.c.expires_at > now
        )
    ).first()
    if found is None:
        return None
    if now - found.last_seen_at >= SEEN_EVERY:
        conn.execute(
            update(SESSIONS)
            .where(SESSIONS.c.id_hash == _hash(session_id))
            .values(last_seen_at=now, expires_at=now + IDLE)
        )
    return int(found.user_id)


def end(conn: Connection, session_id: str) -> None:
    """Signing out: this browser's session, and any copy of its cookie, stop working."""
    conn.execute(delete(SESSIONS).where(SESSIONS.c.id_hash == _hash(session_id)))


def end_all(conn: Connection, user_id: int) -> int:
    """Every session of the user, in every browser and process; returns how many."""
    return int(conn.execute(delete(SESSIONS).where(SESSIONS.c.user_id == user_id)).rowcount)
