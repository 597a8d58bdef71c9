"""One leader at a time across the processes on one PostgreSQL database: the watcher of a
mailbox and the scheduler must each run in exactly one process.

The election is a session advisory lock (``pg_try_advisory_lock``) held on a connection of
its own, not a lease row. The lock belongs to the session, so PostgreSQL frees it as soon
as the session ends: at once when the process exits or is killed with -9 (the kernel closes
its socket), and when the machine stops or is cut off, as soon as TCP keepalives give up on
the peer (KEEPALIVE: 5 s idle, then 3 probes 2 s apart, so 11 s). A lease row would need
renewing, a fencing token checked by every write, and a whole lease of waiting after a crash.

The leader asks its lock connection ``SELECT 1`` every CHECK seconds; when that fails or
takes longer than CHECK_TIMEOUT, it cancels its work at once and drops the connection. Cut
off from the database, it has stopped within CHECK + CHECK_TIMEOUT = 5 s, before the server
frees the lock at 11 s. The others try every RETRY seconds: a killed leader is replaced
within RETRY, one cut off within 11 s + RETRY = 13 s. The lock connection must reach
PostgreSQL itself (or a pooler in session mode): a transaction pooler would drop the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL

log = logging.getLogger("mailer.store.leader")

RETRY = 2.0  # seconds between a standby's attempts to take the lock
CHECK = 2.0  # seconds between the leader's looks at its lock connection
CHECK_TIMEOUT = 3.0  # a look that takes longer means the database is out of reach
# libpq's keepalives for this side, PostgreSQL's (tcp_keepalives_*) for the server's side
KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
SERVER_KEEPALIVE = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"

Work = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def lock_key(name: str) -> int:
    """The advisory lock key for a leadership: the same in every process and every version
    (Python's ``hash`` changes per process), a signed 64-bit integer as PostgreSQL wants."""
    digest = hashlib.blake2b(f"mailer leader: {name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def conninfo(url: URL, name: str) -> str:
    """libpq's connection string for the database of ``url``, with the keepalives above."""
    params: dict[str, Any] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
        **{key: value for key, value in url.query.items() if isinstance(value, str)},
    }
    return make_conninfo(
        **{key: value for key, value in params.items() if value is not None},
        **KEEPALIVE,
        connect_timeout=int(CHECK_TIMEOUT) or 1,
        options=SERVER_KEEPALIVE,
        application_name=f"mailer leader: {name}"[:63],
    )


@dataclass(kw_only=True)
class Leader:
    """Runs a piece of work in whichever one process holds the lock named ``name``."""

    url: URL
    name: str
    retry: float = RETRY
    check: float = CHECK
    check_timeout: float = CHECK_TIMEOUT
    _conn: psycopg.AsyncConnection[Any] | None = None
    _leftovers: set[asyncio.Task[Any]] = field(default_factory=set)

    async def run(self, work: Work, stop: asyncio.Event) -> None:
        """Run ``work(stop)`` while this process leads, until ``stop``; stand by otherwise."""
        standing_by = False
        try:
            while not stop.is_set():
                if await self._take():
                    log.info("%s: this process leads", self.name)
                    standing_by = False
                    await self._lead(work, stop)  # then, having lost it, a rest like the others'
                elif not standing_by and self._conn is not None:
                    log.info("%s: another process leads; standing by", self.name)
                    standing_by = True
                await _sleep_or_stop(stop, self.retry)
        finally:
            self._drop()
            if self._leftovers:
                await asyncio.wait(self._leftovers, timeout=self.check_timeout)

    async def _take(self) -> bool:
        """Whether the lock is ours now; a connection that fails is dropped and made again
        at the next attempt."""
        try:
            conn = self._conn or await self._connect()
            query = "SELECT pg_try_advisory_lock(%s)"
            cursor = await self._answer(conn.execute(query, (lock_key(self.name),)))
            row = await cursor.fetchone() if cursor is not None else None
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("%s: cannot reach the database, trying again: %s", self.name, exc)
            self._drop()
            return False
        if row is None:
            self._drop()
            return False
        return bool(row[0])

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        connecting = psycopg.AsyncConnection.connect(conninfo(self.url, self.name), autocommit=True)
        conn: psycopg.AsyncConnection[Any] = await asyncio.wait_for(connecting, self.check_timeout)
        self._conn = conn
        return conn

    async def _lead(self, work: Work, stop: asyncio.Event) -> None:
        """Run the work; stop it at once when the lock connection fails, then give the lock
        up by dropping the connection."""
        task = asyncio.create_task(work(stop), name=f"{self.name} (leader)")
        while not task.done():
            await asyncio.wait({task}, timeout=self.check)
            if task.done() or await self._alive():
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.warning("%s: lost the database connection; stepped down", self.name)
            self._drop()
            return
        task.result()  # a crash of the work is not hidden

    async def _alive(self) -> bool:
        """Whether the lock connection answers within ``check_timeout``."""
        conn = self._conn
        if conn is None:
            return False
        try:
            return await self._answer(conn.execute("SELECT 1")) is not None
        except (psycopg.Error, OSError):
            return False

    async def _answer(self, query: Coroutine[Any, Any, psycopg.AsyncCursor[Any]]) -> Any:
        """The query's cursor, or None when it took longer than ``check_timeout``. The late
        query is left to finish on its own: psycopg's cancel may itself wait on the network."""
        task = asyncio.ensure_future(query)
        done, _ = await asyncio.wait({task}, timeout=self.check_timeout)
        if done:
            return task.result()
        task.cancel()
        self._keep(task)
        return None

    def _drop(self) -> None:
        """Close the lock connection (which frees the lock) without waiting on the network."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._keep(asyncio.ensure_future(conn.close()))

    def _keep(self, task: asyncio.Future[Any]) -> None:
        self._leftovers.add(task)  # type: ignore[arg-type]
        task.add_done_callback(_forget(self._leftovers))


def _forget(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a dead connection failing to close is expected

    return done


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
