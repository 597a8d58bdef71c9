"""How many wrong passwords a client may try, counted in the database so that every
process serving the web app (the daemon, ``mailer web`` on other hosts) shares one count.

A name is never locked for everyone: what one client gets wrong locks that client out,
so nobody can lock a colleague out by guessing at their name. An attempt counts from the
moment it starts (its row is committed before the password is checked), and is forgiven
only when it succeeds, so requests sent in parallel, to one process or to several, cannot
all slip in before the first failure is recorded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, Table, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection

from mailer.store.models import SignInAttempt

ATTEMPTS: Table = SignInAttempt.__table__  # type: ignore[attr-defined]
NAME_MAX = 100
CLIENT_MAX = 64


@dataclass(frozen=True, kw_only=True)
class LoginGuard:
    """At most ``attempts`` failed sign-ins for one name from one client, and ``per_client``
    from one client whatever the names, in ``window``."""

    engine: Engine
    attempts: int = 5
    per_client: int = 20
    window: timedelta = timedelta(minutes=15)

    def attempt(self, name: str, client: str, now: datetime) -> bool:
        """Start an attempt: False (and nothing recorded) when a limit is reached."""
        client, key = client[:CLIENT_MAX], _key(name)
        since = now - self.window
        with self.engine.begin() as conn:
            _one_at_a_time(conn, client)
            conn.execute(
                delete(ATTEMPTS).where(ATTEMPTS.c.client == client, ATTEMPTS.c.at <= since)
            )
            recent = select(func.count()).where(ATTEMPTS.c.client == client, ATTEMPTS.c.at > since)
            whole = conn.execute(recent).scalar_one()
            pair = conn.execute(recent.where(ATTEMPTS.c.name == key)).scalar_one()
            if whole >= self.per_client or pair >= self.attempts:
                return False
            conn.execute(insert(ATTEMPTS).values(client=client, name=key, at=now))
        return True

    def succeeded(self, name: str, client: str) -> None:
        """Forgive the name's failures from this client, and this attempt in the client's
        count, so that an office behind one address is not locked out by signing in."""
        pair = (ATTEMPTS.c.client == client[:CLIENT_MAX], ATTEMPTS.c.name == _key(name))
        with self.engine.begin() as conn:
            _one_at_a_time(conn, client[:CLIENT_MAX])
            newest = select(func.max(ATTEMPTS.c.id)).where(*pair).scalar_subquery()
            conn.execute(delete(ATTEMPTS).where(ATTEMPTS.c.id == newest))
            conn.execute(update(ATTEMPTS).where(*pair).values(name=None))


def _key(name: str) -> str:
    return name.casefold()[:NAME_MAX]


def _one_at_a_time(conn: Connection, client: str) -> None:
    """On PostgreSQL, one client's attempts are counted one at a time (a lock held until
    commit), else two processes could both see room for one more; SQLite has one writer."""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(client.encode()).digest()[:8], "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
