"""Database connections: one place that knows SQLite from PostgreSQL.

mailer uses the synchronous driver everywhere; the daemon runs database work in worker
threads, which on SQLite is cheaper than aiosqlite's per-statement cost. The API's short
writes are committed together (``write_together``): on SQLite on the event loop, on
PostgreSQL a group at a time in a worker thread. (psycopg's async driver, through
SQLAlchemy's ``run_sync``, answered fewer API sends a second than threads did.)
"""

from __future__ import annotations

import asyncio
import copy
import sqlite3
import threading
import time
import typing
import weakref
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import anyio.to_thread
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
from sqlalchemy.engine import URL, Connection, Dialect, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, InternalError, OperationalError
from sqlalchemy.types import TypeDecorator

from mailer.core.errors import DatabaseUnavailable

if TYPE_CHECKING:
    import psycopg

SQLITE_BUSY_TIMEOUT_MS = 10_000
T = TypeVar("T")
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


# how a write waits for another process's write on SQLite: tries this far apart (the
# pause grows to the last), until the busy timeout has passed since the oldest call
WRITE_LOCK_PAUSES = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01)
GROUP_LIMIT = 50  # writes in one transaction at most: the others' wait for the lock stays short
# PostgreSQL: how long a grouped write waits for a row another transaction holds (an
# import's batch of customers, a delivery claim) before its group gives up and each of its
# writes runs alone; every write of the process waits behind a group meanwhile
GROUP_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '100ms'"


@dataclass(eq=False, kw_only=True)
class _Write(Generic[T]):
    """One request's write, waiting on its event loop for the next transaction."""

    work: Callable[[Connection], T]
    asked: float
    done: asyncio.Future[None]
    order: str = ""  # PostgreSQL: a group runs its writes sorted by this
    outcome: Any = None  # what ``work`` returned, once done
    error: BaseException | None = None
    shared: bool = False  # the error is the whole transaction's, raised in every write's task


@dataclass(eq=False)
class _Queue:
    """The writes through one engine waiting on one event loop, and the task that commits
    them while any wait."""

    waiting: list[_Write[Any]] = field(default_factory=list)
    leader: asyncio.Task[None] | None = None
    # PostgreSQL: the writes of a group that failed, each in a transaction of its own
    alone: set[asyncio.Task[None]] = field(default_factory=set)


_QUEUES: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakKeyDictionary[Engine, _Queue]
] = weakref.WeakKeyDictionary()


async def write_together(engine: Engine, work: Callable[[Connection], T], order: str = "") -> T:
    """``work(conn)`` in a short write transaction, for a server answering many requests
    at once (each API call counts its key); its result, or what it raised. The writes
    waiting at once are committed together, up to GROUP_LIMIT in a transaction, one
    transaction at a time per event loop: a commit and its round trips are paid once for
    the group, not once a request.

    SQLite takes one writer at a time, so the group runs on the event loop's own thread:
    one task takes SQLite's write lock (``BEGIN IMMEDIATE``, tried again every 0.2-10 ms
    while another process writes, the loop serving requests meanwhile), runs each write in
    a savepoint of its own (one that raises is undone alone and its error goes back to its
    caller), and commits once; a failed commit fails each write of it. The busy timeout
    counts from the oldest write's call, so a write held up behind a long one elsewhere
    fails as any write would ("database is locked"). On the loop rather than in worker
    threads: a thread that holds SQLite's lock waits, after each statement, for the
    interpreter's lock behind the loop and the other requests' threads. At 200 API sends
    a second (bench/api.py) the worker threads' groups held SQLite's lock p50 1.3-2.6 ms,
    p99 12-58 ms; on the loop ~1 ms, p99 7-13 ms, and the loop is busy only for the
    transaction (about half a millisecond a send). So ``work`` must be short, and must not
    write through the engine itself.

    PostgreSQL locks rows, not the database: there the group runs in a worker thread
    (``_commit_group``), its statements' round trips off the loop, and ``work`` must be
    safe to run again after a rollback. The group runs its writes sorted by ``order``
    (the API passes the caller's key), so that two processes' groups take the rows they
    share, such as a key's count, in one order instead of deadlocking. At 200 API sends a
    second (bench/api.py, one web process) a transaction a request, each in a thread of
    its own, cost 3.4-3.8 ms of the process's CPU a send and accepted p99 was 0.46-0.72 s
    (on a busier machine it kept up with only 125-150 a second): each of a send's eight
    round trips (the pool's ping, BEGIN, five statements, COMMIT) woke a thread that then
    waited for the interpreter's lock behind the loop and the other threads. Grouped:
    3.1-3.5 ms, p99 42-48 ms.

    A write that carries megabytes (an API send's files) takes ``write_alone`` in a worker
    thread instead: its insert and commit would hold the group up for tens of
    milliseconds."""
    loop = asyncio.get_running_loop()
    queue = _QUEUES.setdefault(loop, weakref.WeakKeyDictionary()).setdefault(engine, _Queue())
    mine = _Write(work=work, asked=time.monotonic(), done=loop.create_future(), order=order)
    queue.waiting.append(mine)
    if queue.leader is None or queue.leader.done():  # done: cancelled before it began
        queue.leader = loop.create_task(_lead(engine, queue))
    await mine.done
    if mine.error is not None:
        raise _own(mine.error) if mine.shared else mine.error
    return typing.cast(T, mine.outcome)


def write_alone(engine: Engine, work: Callable[[Connection], T]) -> T:
    """``work(conn)`` in a write transaction of its own (``begin_writing``), in the
    calling thread."""
    with begin_writing(engine) as conn:
        return work(conn)


def _own(error: BaseException) -> BaseException:
    """A copy of a failure several writes share, so that each request's traceback is its
    own (raising one object in many tasks piles their frames onto it)."""
    try:
        copied = copy.copy(error)
    except Exception:  # an exception that cannot be copied is raised as it is
        return error
    copied.__cause__, copied.__context__ = error.__cause__, error.__context__
    return copied


async def _lead(engine: Engine, queue: _Queue) -> None:
    """Commit the waiting writes, a transaction at a time, until none wait; each write's
    caller woken once its transaction has ended, and the loop let go between transactions.
    Cancelled (the loop is closing), the writes of its transaction and those waiting fail."""
    loop = asyncio.get_running_loop()
    try:
        while queue.waiting:
            batch = queue.waiting[:GROUP_LIMIT]
            del queue.waiting[:GROUP_LIMIT]
            alone: list[_Write[Any]] = []
            try:
                alone = await _commit_together(engine, batch)
            finally:
                _wake([write for write in batch if write not in alone])
            for write in alone:  # side by side, and not in the way of the next group
                task = loop.create_task(_run_alone(engine, write))
                queue.alone.add(task)
                task.add_done_callback(queue.alone.discard)
            await asyncio.sleep(0)  # the loop serves others before the next transaction
    except BaseException:
        for write in queue.waiting:
            write.error = RuntimeError("the write's transaction was interrupted")
        _wake(queue.waiting)
        queue.waiting.clear()
        raise
    finally:
        queue.leader = None


def _wake(writes: list[_Write[Any]]) -> None:
    for write in writes:
        if not write.done.done():  # not when its caller was cancelled meanwhile
            write.done.set_result(None)


# each write's savepoint, named on the driver's connection: SQLAlchemy's ``begin_nested``
# builds its SAVEPOINT and RELEASE statements anew each time, 0.12 ms of the API send's 1.4
_SAVEPOINT = "mailer_write"


def _savepoint(raw: sqlite3.Connection, verb: str) -> None:
    """A savepoint statement; its failure raised as SQLAlchemy's, as any write's would be."""
    statement = f"{verb} {_SAVEPOINT}"
    try:
        raw.execute(statement)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc


async def _commit_together(engine: Engine, batch: list[_Write[Any]]) -> list[_Write[Any]]:
    """The group committed (each write's outcome or error set), or failed as a whole; the
    writes left to run alone (PostgreSQL, when one of the group raised)."""
    try:
        if engine.dialect.name == "sqlite":
            await _commit_on_loop(engine, batch)
            return []
        return await anyio.to_thread.run_sync(_commit_group, engine, batch)
    except Exception as exc:  # nothing was committed: every write of it failed
        for write in batch:
            write.error, write.shared = exc, True
        return []
    except BaseException:  # cancelled: the loop is closing (on PostgreSQL a group already
        # in its thread still ends there, committed or not; its callers are told it failed,
        # as a client that loses an answer is)
        for write in batch:
            write.error = RuntimeError("the write's transaction was interrupted")
        raise


async def _commit_on_loop(engine: Engine, batch: list[_Write[Any]]) -> None:
    """SQLite: the group in one transaction on the loop's thread, each write in a savepoint
    of its own (a function call here, not a round trip)."""
    deadline = min(write.asked for write in batch) + SQLITE_BUSY_TIMEOUT_MS / 1000
    # taken in a thread: when threads hold every pooled connection (reads, writes that
    # wait for another process), the pool makes its taker wait, and the loop must not
    with await anyio.to_thread.run_sync(engine.connect) as conn, conn.begin():
        with closing(_write_lock_tries(conn, deadline)) as tries:
            for pause in tries:
                await asyncio.sleep(pause)
        raw = conn.connection.driver_connection
        assert raw is not None
        for write in batch:
            _savepoint(raw, "SAVEPOINT")
            try:
                write.outcome = write.work(conn)
            except Exception as exc:
                if not raw.in_transaction:  # SQLite rolled back the whole transaction
                    raise  # (a full disk, an I/O error): every write of it failed
                _savepoint(raw, "ROLLBACK TO")  # its own writes are undone; the others
                write.error = exc  # go on
            _savepoint(raw, "RELEASE")


def _commit_group(engine: Engine, batch: list[_Write[Any]]) -> list[_Write[Any]]:
    """PostgreSQL, in a worker thread: the group in one transaction without savepoints
    (each is a round trip there, two a write), its writes sorted by their ``order``. When a
    write raises (rare: the API's writes return their refusals; a row held longer than
    GROUP_LOCK_TIMEOUT by an import or a claim; a lost connection), the group is rolled
    back and its writes are returned, to run again each in a transaction of its own, so
    that each caller gets its own outcome and one write that waits holds up no other. A
    commit that fails fails every write of it, none run again: whether PostgreSQL stored
    them is not known."""
    ordered = sorted(batch, key=lambda write: write.order)
    try:
        with begin_writing(engine) as conn:
            conn.exec_driver_sql(GROUP_LOCK_TIMEOUT)
            outcomes = []
            for write in ordered:
                try:
                    outcomes.append(write.work(conn))
                except Exception as exc:
                    raise _OneRaised from exc
    except _OneRaised:
        return batch
    for write, outcome in zip(ordered, outcomes, strict=True):
        write.outcome = outcome
    return []


async def _run_alone(engine: Engine, write: _Write[Any]) -> None:
    """PostgreSQL: a write of a group that failed, in a transaction and a thread of its own
    and without the group's lock timeout, its caller woken when it ends."""
    try:
        write.outcome = await anyio.to_thread.run_sync(write_alone, engine, write.work)
    except Exception as exc:
        write.error = exc
    except BaseException:  # cancelled: the loop is closing
        write.error = RuntimeError("the write's transaction was interrupted")
        raise
    finally:
        _wake([write])


class _OneRaised(Exception):
    """A write of a PostgreSQL group raised: the group is rolled back, its writes run alone."""


@contextmanager
def begin_writing(engine: Engine, asked: float | None = None) -> Iterator[Connection]:
    """``engine.begin()`` for a transaction that will write, holding SQLite's write lock
    from its start: taken by ``BEGIN IMMEDIATE``, tried again every 0.2-10 ms while
    another process writes, until the busy timeout has passed since ``asked`` (now when
    not given). SQLite's own busy handler sleeps 1, 2, 5 ... up to 100 ms between tries,
    and a process that waits on it loses the lock to one that polls (the API's writes):
    delivery's claims and results waited seconds behind API sends. On PostgreSQL it is
    ``engine.begin()``."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            start = time.monotonic() if asked is None else asked
            for pause in _write_lock_tries(conn, start + SQLITE_BUSY_TIMEOUT_MS / 1000):
                time.sleep(pause)
        yield conn


def _write_lock_tries(conn: Connection, deadline: float) -> Generator[float, None, None]:
    """Begin the SQLite transaction holding the database's write lock: while another
    process holds it, yield the pause before the next try (the caller sleeps, or serves
    others), until ``deadline``; then try once more through SQLAlchemy, so that "database
    is locked", or any other error of the driver, is raised wrapped as on any write. The
    connection's own busy timeout is put back."""
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
            yield pause
            pause = next(pauses, pause)
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(timeout)}")


class Watch(Protocol):
    """Whether something may have been written since the last look (see ``watch``)."""

    def changed(self) -> bool: ...

    def close(self) -> None: ...


class _Commits:
    """Whether any other connection has committed to a SQLite file since the last look:
    SQLite's ``PRAGMA data_version`` on a connection of its own, a few microseconds with no
    lock taken and no table read, so an idle worker can ask it often. A look that fails
    counts as a change (the caller looks at the data) and opens the connection again at
    the next look."""

    def __init__(self, database: str, uri: bool) -> None:
        self._database, self._uri = database, uri
        self._conn: sqlite3.Connection | None = None
        self._seen = 0

    def changed(self) -> bool:
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(
                    self._database, timeout=0, uri=self._uri, check_same_thread=False
                )
                self._seen = self._version(self._conn)
                return True
            version = self._version(self._conn)
        except sqlite3.Error:
            self.close()
            return True
        changed, self._seen = version != self._seen, version
        return changed

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _Notices:
    """Whether a NOTIFY on ``channel`` has come since the last look (PostgreSQL): a
    connection of its own LISTENs, and a look reads what has already arrived, without a
    round trip. A lost connection counts as a change (the caller looks at the data) and is
    made again at the next look. Looks run in a worker thread; ``close`` may come while
    one is making the connection, which is then closed at once instead of kept."""

    def __init__(self, url: URL, channel: str) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._channel = channel
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def changed(self) -> bool:
        import psycopg  # here: only a PostgreSQL worker needs the driver loaded for this

        try:
            if self._conn is None:
                conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
                with self._lock:
                    keep = not self._closed
                    if keep:
                        self._conn = conn
                if not keep:
                    conn.close()
                    return True
                listen = psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(self._channel))
                conn.execute(listen)  # a failure drops the connection below, as any other
                return True
            return len(list(self._conn.notifies(timeout=0))) > 0
        except psycopg.Error:
            self._drop()
            return True

    def _drop(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._drop()


def watch(engine: Engine, channel: str) -> Watch | None:
    """A cheap look at whether the database may have changed, for a worker that rests
    between looks at a table: on SQLite, any commit by another connection; on PostgreSQL,
    a NOTIFY on ``channel`` (sent by a trigger of the table). Each look blocks for
    microseconds, or for a connection when one is made; None for SQLite in memory."""
    if engine.dialect.name != "sqlite":
        return _Notices(engine.url, channel)
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    return _Commits(database, uri=engine.url.query.get("uri") in ("true", "1"))


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


def missing_file(url: str) -> str:
    """The path of the SQLite file the URL names when no file is there yet, else ""."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return ""
    if parsed.query.get("uri"):  # a file: URI names its path its own way: sqlite opens it
        return ""
    return "" if Path(parsed.database).exists() else parsed.database


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
