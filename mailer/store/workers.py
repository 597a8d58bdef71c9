"""Which `mailer run` processes are alive on a PostgreSQL database (the table ``workers``).

Each process writes its row at start and renews ``seen_at`` every HEARTBEAT seconds; the
messages it claims carry its id. A row not renewed for LIFETIME belongs to a process that
is gone (killed, its machine stopped or cut off): what it held is taken back at once by
any other process instead of when the 5-minute lease runs out. On SQLite there is one
process (see ``alone``), so a start takes back everything in flight and needs no rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.engine import URL

from mailer.core.errors import DatabaseUnavailable
from mailer.store.models import WORKERS

HEARTBEAT = 5.0  # seconds between two renewals of a process's row
LIFETIME = timedelta(seconds=15)  # three heartbeats missed: the process is gone


@dataclass(frozen=True, slots=True)
class Seen:
    """A process's id and when it last said it was alive."""

    id: str
    seen_at: datetime


def dead(
    workers: Iterable[Seen],
    now: datetime,
    lifetime: timedelta = LIFETIME,
    *,
    back_at: datetime | None = None,
) -> list[str]:
    """The processes that have not renewed their rows for longer than ``lifetime``. When
    the database was away (restarted, or out of this process's reach) until ``back_at``,
    no process could beat meanwhile: each gets ``lifetime`` from then on before it is
    taken for dead, however old its row."""
    return sorted(
        worker.id
        for worker in workers
        if now - max(worker.seen_at, back_at or worker.seen_at) > lifetime
    )


def gone(engine: Engine, now: datetime, back_at: datetime | None = None) -> list[str]:
    """The processes taken for dead now (see ``dead``): ``back_at`` is when this process
    found the database again, and a restarted PostgreSQL counts from its own start (how
    long it has been up, by its own clock, so that the two clocks need not agree)."""
    with engine.connect() as conn:
        since_start = func.now() - func.pg_postmaster_start_time()
        up = timedelta(
            seconds=float(conn.execute(select(func.extract("epoch", since_start))).scalar_one())
        )
        rows = conn.execute(select(WORKERS.c.id, WORKERS.c.seen_at))
        seen = [Seen(row.id, row.seen_at) for row in rows]
    started = now - up
    return dead(seen, now, back_at=started if back_at is None else max(started, back_at))


def new_id() -> str:
    """An id people can read in the outbox (host and pid) and that no restart reuses."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


def register(engine: Engine, worker_id: str, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(WORKERS).values(
                id=worker_id,
                host=socket.gethostname()[:255],
                pid=os.getpid(),
                started_at=now,
                seen_at=now,
            )
        )


def renew(engine: Engine, worker_id: str, now: datetime) -> bool:
    """Say this process is alive; False when its row was gone (it was taken for dead, so
    what it held may be with another process now): the row is written again."""
    with engine.begin() as conn:
        found = conn.execute(
            update(WORKERS).where(WORKERS.c.id == worker_id).values(seen_at=now)
        ).rowcount
    if not found:
        register(engine, worker_id, now)
    return bool(found)


def seen(engine: Engine) -> list[Seen]:
    with engine.connect() as conn:
        rows = conn.execute(select(WORKERS.c.id, WORKERS.c.seen_at))
        return [Seen(row.id, row.seen_at) for row in rows]


def forget(engine: Engine, worker_ids: Collection[str]) -> None:
    """Remove the rows of processes that are gone (or, at a clean stop, this one's)."""
    if worker_ids:
        with engine.begin() as conn:
            conn.execute(delete(WORKERS).where(WORKERS.c.id.in_(worker_ids)))


@contextlib.contextmanager
def alone(url: URL) -> Iterator[None]:
    """On SQLite, make sure this is the only `mailer run` on the database file for as long
    as the block runs: an exclusive lock on a file beside it, freed by the kernel however
    the process ends. A second one stops with one line; other commands are not affected.
    PostgreSQL takes any number of processes."""
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or not Path(database).parent.is_dir():
        yield  # PostgreSQL; or no SQLite file yet, which the start refuses for its own reason
        return
    path = f"{database}.run-lock"
    with open(path, "a+", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise DatabaseUnavailable(
                f"another `mailer run` (pid {holder}) is using {database}; on SQLite only "
                "one may run: stop it first, or use PostgreSQL to run several"
            ) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield
