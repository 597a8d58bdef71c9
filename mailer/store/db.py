"""Database connections: one place that knows SQLite from PostgreSQL.

mailer uses the synchronous driver everywhere; the daemon runs database work in worker
threads, which on SQLite is cheaper than aiosqlite's per-statement cost.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Engine,
    Table,
    cast,
    create_engine,
    event,
    extract,
    false,
    func,
    update,
)
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, InternalError, OperationalError
from sqlalchemy.types import TypeDecorator

from mailer.core.errors import DatabaseUnavailable

SQLITE_BUSY_TIMEOUT_MS = 10_000
# what a statement raises when the database is away (restarted, failed over, cut off) or
# cannot take writes yet (a failover that landed on a standby still read only: an
# InternalError), as opposed to a mistake in the statement: the work waits instead of failing
UNREACHABLE = (OperationalError, InterfaceError, InternalError)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database returns.

    SQLite hands back naive values and PostgreSQL aware ones; comparing the two breaks, so
    naive values are refused on the way in and made aware on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored; use UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


QUARTER_HOUR = 900  # seconds


def quarter_hour(column: Any, dialect: str) -> ColumnElement[int]:
    """Which quarter hour since 1970 a stored time falls in. Every zone's offset from UTC is
    a whole number of quarter hours, so counts grouped by it fold exactly into the days of
    any zone, DST included, without the database knowing zones (SQLite does not)."""
    return epoch_seconds(column, dialect) // QUARTER_HOUR


def epoch_seconds(column: Any, dialect: str) -> ColumnElement[int]:
    """The whole seconds since 1970 of a stored time."""
    if dialect == "postgresql":
        return cast(func.floor(extract("epoch", column)), BigInteger)
    return cast(func.strftime("%s", column), BigInteger)


def domain_of(column: Any, dialect: str) -> ColumnElement[str]:
    """The part of a stored address after its @, lower-cased, for counts per domain."""
    if dialect == "postgresql":
        return func.lower(func.split_part(column, "@", 2))
    return func.lower(func.substr(column, func.instr(column, "@") + 1))


def lock_for_writing(conn: Connection, table: Table) -> None:
    """On SQLite, take the database's write lock now, by a write that changes nothing, so
    that what the transaction reads next is what it writes over: SQLite has no
    ``SELECT ... FOR UPDATE``, and a transaction that starts with a read takes the lock
    only at its first write, after another may have written over what it read."""
    if conn.dialect.name == "sqlite":
        key = next(iter(table.primary_key.columns))
        conn.execute(update(table).where(false()).values({key: key}))


_WRITERS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_WRITERS_LOCK = threading.Lock()
_WRITING = threading.local()  # the engine this thread is writing through, if any
# how ``writing`` waits for another process's write on SQLite: tries this far apart (the
# pause grows to the last), until the busy timeout has passed since the call
WRITE_LOCK_PAUSES = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01)


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """``engine.begin()`` for a short transaction that writes, as a server's worker threads
    run many at once (each API call counts its key).

    SQLite takes one writer at a time, and a connection that finds the file locked waits
    on SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25 ... up to 100 ms between
    tries: a write that found another process's 50 ms transaction in the way woke after
    78 ms, and threads of one process queued there woke long after the writer ahead had
    committed. On SQLite the threads of this process take turns on a lock of the process,
    handed on the moment a transaction ends, and the one whose turn it is takes SQLite's
    write lock at once (``BEGIN IMMEDIATE``), trying again every 0.2-10 ms while another
    process writes. The busy timeout bounds the whole wait, turn included, so a write
    held up behind a long one elsewhere fails after it as any write would ("database is
    locked"), not after the waits of every thread ahead of it. Not re-entrant: a thread
    writing through the engine already would wait for itself. PostgreSQL locks rows, not
    the database: there it is ``engine.begin()``.
    """
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    if getattr(_WRITING, "engine", None) is engine:
        raise RuntimeError("db.writing inside db.writing: the inner write would wait for the outer")
    with _WRITERS_LOCK:
        turn = _WRITERS.setdefault(engine, threading.Lock())
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    if not turn.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
        locked = sqlite3.OperationalError("database is locked (by this process's other writes)")
        raise OperationalError("BEGIN IMMEDIATE", None, locked)
    _WRITING.engine = engine
    try:
        with engine.begin() as conn:
            _take_write_lock(conn, deadline)
            yield conn
    finally:
        _WRITING.engine = None
        turn.release()


def _take_write_lock(conn: Connection, deadline: float) -> None:
    """Begin the SQLite transaction holding the database's write lock, polling for it
    while another process holds it, until ``deadline``; then once more through SQLAlchemy,
    so that "database is locked", or any other error of the driver, is raised wrapped as
    on any write. The connection's own busy timeout is put back."""
    raw = conn.connection.driver_connection
    assert raw is not None
    (timeout,) = raw.execute("PRAGMA busy_timeout").fetchone()
    raw.execute("PRAGMA busy_timeout=0")
    try:
        pauses = iter(WRITE_LOCK_PAUSES)
        pause = next(pauses)
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() + pause > deadline:
                    break
            time.sleep(pause)
            pause = next(pauses, pause)
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(timeout)}")


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def connect(url: str, **kwargs: Any) -> Engine:
    """An engine for the URL; SQLite gets WAL and a busy timeout so CLI and daemon can share it."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **kwargs)
    if parsed.database and parsed.database != ":memory:":
        _make_folder(Path(parsed.database).parent)
    engine = create_engine(url, **kwargs)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _make_folder(folder: Path) -> None:
    """The SQLite file's folder, made if missing; DatabaseUnavailable if it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise DatabaseUnavailable(
            f"cannot create the folder {folder} for the SQLite file: {exc.filename} is a file"
        ) from None
    except OSError as exc:
        raise DatabaseUnavailable(
            f"cannot create the folder {folder} for the SQLite file: {exc.strerror}"
        ) from None


def describe(url: str) -> str:
    """The URL as it may be shown: the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def reason(exc: DBAPIError) -> str:
    """The driver's own first line ("Connection refused", "file is not a database")."""
    lines = str(exc.orig).strip().splitlines()
    return lines[0] if lines else type(exc.orig).__name__


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
