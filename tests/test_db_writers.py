"""Short write transactions from many requests of one server process at once (each API
call counts its key): the writes waiting at once are committed together, on SQLite on
the event loop without SQLite's busy handler, on PostgreSQL in a worker thread, a group
that one write made fail run again write by write."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from mailer.store import db

TASKS = 8
WRITES = 25
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _counter(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_counter (n INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO bench_counter (n) VALUES (0)"))


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT n FROM bench_counter")).scalar_one())


def _bump_once(conn: Connection) -> int:
    n = int(conn.execute(text("SELECT n FROM bench_counter")).scalar_one()) + 1
    conn.execute(text("UPDATE bench_counter SET n = :n"), {"n": n})
    return n


BUMP = "UPDATE bench_counter SET n = n + 1 RETURNING n"


async def _bump(engine: Engine) -> None:
    for _ in range(WRITES):
        await db.write_together(engine, _bump_once)


def _queue(engine: Engine) -> db._Queue:
    """This loop's queue of writes through ``engine``, as ``write_together`` finds it."""
    queues = db._QUEUES.setdefault(asyncio.get_running_loop(), weakref.WeakKeyDictionary())
    return queues.setdefault(engine, db._Queue())


def _taken(engine: Engine) -> Callable[[], bool]:
    """Whether every write queued so far was taken by the leader (which may wait for the lock)."""
    return lambda: _queue(engine).leader is not None and not _queue(engine).waiting


async def _until(condition: Callable[[], bool]) -> None:
    """Yield to the event loop until ``condition`` holds (at most 10 s): the writes under
    test make progress on this loop meanwhile."""
    deadline = time.monotonic() + 10
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    assert condition()


@on_sqlite
async def test_sqlite_writes_of_one_process_go_one_transaction_at_a_time_without_the_busy_handler(
    engine: Engine,
) -> None:
    """With SQLite's busy handler turned off, a writer that found the file locked would
    fail at once ("database is locked"), and a read before the write would lose updates:
    the writes of many requests at once each count."""
    _counter(engine)
    engine.dispose()

    def no_waiting(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    event.listen(engine, "connect", no_waiting)
    await asyncio.gather(*(_bump(engine) for _ in range(TASKS)))
    assert _count(engine) == TASKS * WRITES


def _other_process(engine: Engine) -> sqlite3.Connection:
    """A connection of its own, as another process's, holding SQLite's write lock."""
    other = sqlite3.connect(make_url(str(engine.url)).database or "", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def _holding(engine: Engine, table: str) -> Any:
    """A connection of its own, as another process's, that holds up every write to
    ``table`` until it rolls back: SQLite's write lock, or PostgreSQL's lock on the table."""
    if engine.dialect.name == "sqlite":
        return _other_process(engine)
    other = _psycopg(engine)
    other.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return other


def _psycopg(engine: Engine) -> psycopg.Connection[Any]:
    """A driver connection of its own to the engine's PostgreSQL database."""
    return psycopg.connect(
        engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    )


def _release(other: Any) -> None:
    other.rollback()
    other.close()


@on_sqlite
async def test_a_write_waits_for_another_process_to_commit_while_the_loop_serves_others(
    engine: Engine,
) -> None:
    """Another process's write transaction holds SQLite's lock: the write starts only once
    that one has committed, and then goes through. Meanwhile the event loop goes on (this
    test runs on it: a write that blocked the loop while waiting would never see the
    other process commit)."""
    _counter(engine)
    other = _other_process(engine)
    other.execute("UPDATE bench_counter SET n = 10")
    entered = threading.Event()

    def bump(conn: Connection) -> None:
        entered.set()
        conn.execute(text("UPDATE bench_counter SET n = n + 1"))

    run = asyncio.ensure_future(db.write_together(engine, bump))
    await _until(_taken(engine))  # by the leader, which waits for the lock
    await asyncio.sleep(0.05)  # a real other process's lock: tries of the leader fail
    assert not entered.is_set() and not run.done()
    other.execute("COMMIT")
    await run
    other.close()
    assert _count(engine) == 11


@on_sqlite
def test_a_write_transaction_polls_for_the_lock_without_the_busy_handler(engine: Engine) -> None:
    """Delivery's claims and results take SQLite's lock as the API's writes do, by trying
    again every few milliseconds instead of sleeping on SQLite's busy handler (here turned
    off: a write that found the lock taken would fail at once): the transaction starts
    only once the other process has committed, then writes."""
    _counter(engine)
    engine.dispose()
    event.listen(engine, "connect", lambda dbapi, _record: dbapi.execute("PRAGMA busy_timeout=0"))
    other = _other_process(engine)
    other.execute("UPDATE bench_counter SET n = 10")
    entered = threading.Event()

    def bump() -> None:
        with db.begin_writing(engine) as conn:
            entered.set()
            _bump_once(conn)

    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(bump)
        assert not entered.wait(0.2)
        other.execute("COMMIT")
        run.result()
    other.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM bench_counter")).scalar_one() == 11


async def test_writes_commit_what_they_wrote_and_undo_what_raised(engine: Engine) -> None:
    """On either database: committed at the end, rolled back on an error (on PostgreSQL
    ``engine.begin()`` in a worker thread)."""
    _counter(engine)
    assert await db.write_together(engine, _bump_once) == 1

    def undone(conn: Connection) -> None:
        _bump_once(conn)
        raise RuntimeError("undo")

    with pytest.raises(RuntimeError, match="undo"):
        await db.write_together(engine, undone)
    assert _count(engine) == 1


@on_sqlite
async def test_writes_held_up_by_another_process_each_fail_after_the_busy_timeout(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write waits for another process's write that does not end, and three more queue
    behind it: each fails with "database is locked" once the busy timeout (0.5 s) has
    passed since it was asked, not once the write ahead of it has given up (1 s)."""
    _counter(engine)
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 500)
    engine.dispose()  # new connections with the shorter timeout
    other = _other_process(engine)
    started = time.monotonic()
    try:
        runs = [asyncio.ensure_future(db.write_together(engine, _bump_once))]
        await _until(_taken(engine))  # the leader waits for the lock with the first
        runs += [asyncio.ensure_future(db.write_together(engine, _bump_once)) for _ in range(3)]
        errors = await asyncio.gather(*runs, return_exceptions=True)
        waited = time.monotonic() - started
    finally:
        other.close()
    assert all(isinstance(e, OperationalError) and "locked" in str(e) for e in errors), errors
    assert waited < 0.9
    assert await db.write_together(engine, _bump_once) == 1  # and the next write goes through


@on_sqlite
async def test_writes_interrupted_by_the_loop_closing_fail_and_the_next_goes_through(
    engine: Engine,
) -> None:
    """The loop closes (the server stops) while a write waits for another process's lock
    and another waits behind it: both fail instead of hanging, nothing of theirs is
    stored, and the connection's busy timeout is put back for the next write."""
    _counter(engine)
    other = _other_process(engine)
    runs = [asyncio.ensure_future(db.write_together(engine, _bump_once))]
    await _until(_taken(engine))
    runs.append(asyncio.ensure_future(db.write_together(engine, _bump_once)))
    await _until(lambda: len(_queue(engine).waiting) == 1)
    leader = _queue(engine).leader
    assert leader is not None
    leader.cancel()
    errors = await asyncio.gather(*runs, return_exceptions=True)
    other.execute("ROLLBACK")
    other.close()
    assert [str(e) for e in errors] == ["the write's transaction was interrupted"] * 2

    def busy_timeout(conn: Connection) -> int:
        return int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one())

    assert await db.write_together(engine, busy_timeout) == db.SQLITE_BUSY_TIMEOUT_MS
    assert _count(engine) == 0


@on_sqlite
async def test_a_write_leaves_the_connections_own_busy_timeout(engine: Engine) -> None:
    def patient(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=1234")

    engine.dispose()
    event.listen(engine, "connect", patient)
    _counter(engine)

    def bump_and_ask(conn: Connection) -> int:
        _bump_once(conn)
        return int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one())

    assert await db.write_together(engine, bump_and_ask) == 1234
    assert _count(engine) == 1


async def test_writes_waiting_at_once_are_committed_together(engine: Engine) -> None:
    """Eight writes arrive while another process holds them up: once it lets go, they are
    committed in one or two transactions instead of eight, each caller with its own
    result."""
    _counter(engine)
    other = _holding(engine, "bench_counter")
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    writes = [asyncio.ensure_future(db.write_together(engine, _bump_once)) for _ in range(8)]
    await _until(_taken(engine))
    _release(other)
    assert sorted(await asyncio.gather(*writes)) == list(range(1, 9))
    assert len(commits) <= 2
    assert _count(engine) == 8


async def test_a_write_that_raises_fails_alone_and_the_others_are_stored(engine: Engine) -> None:
    """Eight writes committed together, one of which raises: its caller gets its error
    with its own change undone, and every other write is stored once, with its result
    (on SQLite the write's savepoint is undone; on PostgreSQL the group runs again write
    by write)."""
    _counter(engine)
    other = _holding(engine, "bench_counter")

    def bump_or_fail(fail: bool) -> Callable[[Connection], int]:
        def work(conn: Connection) -> int:  # one statement: on PostgreSQL the writes of a
            # group that failed run again side by side
            n = int(conn.execute(text(BUMP)).scalar_one())
            if fail:
                raise ValueError(f"write {n} refused")
            return n

        return work

    writes = [
        asyncio.ensure_future(db.write_together(engine, bump_or_fail(i == 3))) for i in range(8)
    ]
    await _until(_taken(engine))
    _release(other)
    results = await asyncio.gather(*writes, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], ValueError), results
    assert sorted(r for r in results if isinstance(r, int)) == list(range(1, 8))
    assert _count(engine) == 7


async def _behind_one(
    engine: Engine, first: Callable[[Connection], Any], then: list[Callable[[Connection], Any]]
) -> list[Any]:
    """``first`` alone in a transaction that waits for another process's lock on
    bench_rows, ``then`` queued behind it (the next transaction, in order); once the lock
    is given back, each one's result or error."""
    other = _holding(engine, "bench_rows")
    runs = [asyncio.ensure_future(db.write_together(engine, first))]
    await _until(_taken(engine))  # the leader took it and waits for the lock
    runs += [asyncio.ensure_future(db.write_together(engine, work)) for work in then]
    await _until(lambda: len(_queue(engine).waiting) == len(then))
    _release(other)
    return await asyncio.gather(*runs, return_exceptions=True)


def _insert(value: int) -> Callable[[Connection], int]:
    def work(conn: Connection) -> int:
        conn.execute(text("INSERT INTO bench_rows (x) VALUES (:x)"), {"x": value})
        return value

    return work


def _disk_full(conn: Connection) -> None:
    """A write that SQLite refuses for want of space: it rolls back the whole transaction,
    not the statement (a real SQLITE_FULL, from a page limit instead of a full disk)."""
    conn.exec_driver_sql("PRAGMA max_page_count=20")
    try:
        conn.execute(text("INSERT INTO bench_rows (x) VALUES (zeroblob(400000))"))
    finally:
        conn.exec_driver_sql("PRAGMA max_page_count=1073741823")


def _insert_then_repeat(value: int, repeated: int) -> Callable[[Connection], int]:
    """A write whose second statement breaks the table's unique rule: SQLite refuses that
    statement alone, and the write must be undone as a whole."""

    def work(conn: Connection) -> int:
        _insert(value)(conn)
        return _insert(repeated)(conn)

    return work


async def test_a_write_the_database_refuses_is_undone_alone(engine: Engine) -> None:
    """A send whose statement the database refuses (a unique rule) fails alone: what it
    wrote before is undone, the writes before and after it in the same transaction are
    stored, and the connection goes on as if nothing happened."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_rows (x INTEGER UNIQUE)"))
    works = [_insert(1), _insert_then_repeat(5, 1), _insert(2), _insert(3)]
    results = await _behind_one(engine, _insert(0), works)
    assert [type(r).__name__ for r in results] == ["int", "int", "IntegrityError", "int", "int"]
    assert await db.write_together(engine, _insert(4)) == 4
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT x FROM bench_rows ORDER BY x")).scalars().all()
    assert stored == [0, 1, 2, 3, 4]


@on_sqlite
async def test_a_write_that_loses_the_whole_transaction_fails_every_write_of_it(
    engine: Engine,
) -> None:
    """A send answered 202 must be stored: when one write of a transaction makes SQLite roll
    all of it back (a full disk), every write of it fails, and none is reported done."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_rows (x)"))
    results = await _behind_one(engine, _insert(0), [_insert(1), _disk_full, _insert(3)])
    assert results[0] == 0
    assert all("full" in str(r) for r in results[1:]), results
    with engine.connect() as conn:
        assert conn.execute(text("SELECT x FROM bench_rows")).scalars().all() == [0]


async def test_a_caller_that_goes_away_while_its_write_waits_leaves_the_others_working(
    engine: Engine,
) -> None:
    """A client that hangs up cancels its request while the write waits for the lock: the
    writes queued with it are still committed and answered, and later writes go through."""
    _counter(engine)
    other = _holding(engine, "bench_counter")
    runs = [asyncio.ensure_future(db.write_together(engine, _bump_once)) for _ in range(3)]
    await _until(_taken(engine))
    runs[1].cancel()
    _release(other)
    results = await asyncio.gather(*runs, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert [results[0], results[2]] == [1, 3]  # its write was under way: stored too
    assert await db.write_together(engine, _bump_once) == 4


on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _pairs(engine: Engine) -> None:
    """Two counter rows, 1 and 2, for writes that lock rows one by one."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_pairs (id INTEGER PRIMARY KEY, n INTEGER)"))
        conn.execute(text("INSERT INTO bench_pairs VALUES (1, 0), (2, 0)"))


def _bump_pair(conn: Connection, row: int) -> int:
    update = "UPDATE bench_pairs SET n = n + 1 WHERE id = :id RETURNING n"
    return int(conn.execute(text(update), {"id": row}).scalar_one())


@on_postgresql
async def test_a_commit_postgresql_refuses_fails_every_write_of_it_and_runs_none_again(
    engine: Engine,
) -> None:
    """A rule checked only at COMMIT (a deferred unique rule) refuses the group's commit:
    every write of it fails, none is reported done or run again alone (whether a commit
    that failed stored anything is not known), and the next write goes through."""
    with engine.begin() as conn:
        deferred = "UNIQUE DEFERRABLE INITIALLY DEFERRED"  # checked at COMMIT
        conn.execute(text(f"CREATE TABLE bench_rows (x INTEGER {deferred})"))
    results = await _behind_one(engine, _insert(0), [_insert(1), _insert(1), _insert(3)])
    assert results[0] == 0
    assert all("duplicate key" in str(r) for r in results[1:]), results
    assert await db.write_together(engine, _insert(4)) == 4
    with engine.connect() as conn:
        assert conn.execute(text("SELECT x FROM bench_rows ORDER BY x")).scalars().all() == [0, 4]


@on_postgresql
@pytest.mark.parametrize("ordered", [True, False], ids=["by-key", "as-they-came"])
async def test_two_processes_groups_that_cross_on_two_rows_each_store_every_write_once(
    engine: Engine, ordered: bool
) -> None:
    """Two server processes' groups each bump two rows (two API keys' counts, say) that
    arrived in opposite orders. Sorted by their key, as the API's writes are, the groups
    take the rows in one order: the second waits for the first, and each commits once. As
    they came, they cross and would deadlock: the group that waits past the lock timeout
    is rolled back and its writes run again alone. Either way every write is stored once."""
    _pairs(engine)
    other = db.connect(engine.url.render_as_string(hide_password=False))  # its own pool
    engines = {"first": engine, "second": other}
    commits = {name: 0 for name in engines}
    for name, each in engines.items():
        event.listen(
            each, "commit", lambda conn, name=name: commits.__setitem__(name, commits[name] + 1)
        )
    started = {name: threading.Event() for name in engines}

    waited: set[str] = set()

    def bump(row: int, process: str, first: bool) -> Callable[[Connection], int]:
        """``first``: the write that holds its row until the other group is under way (on
        its group's first run); sorted, both groups start with row 1, and the one that waits
        for it tells the other it is under way before it waits."""

        def work(conn: Connection) -> int:
            if ordered:
                started[process].set()
            n = _bump_pair(conn, row)
            if first and process not in waited:
                waited.add(process)
                started[process].set()
                peer = "second" if process == "first" else "first"
                started[peer].wait(5)
            return n

        return work

    def queued(process: str, row: int, first: bool) -> asyncio.Future[int]:
        work = bump(row, process, first)
        order = str(row) if ordered else ""
        return asyncio.ensure_future(db.write_together(engines[process], work, order=order))

    # queued before either leader runs: each process's two writes are one group
    runs = [
        queued("first", 1, True),
        queued("second", 2, not ordered),
        queued("first", 2, False),
        queued("second", 1, ordered),
    ]
    results = await asyncio.gather(*runs, return_exceptions=True)
    other.dispose()
    assert all(isinstance(r, int) for r in results), results
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT id, n FROM bench_pairs ORDER BY id")).all()
    assert [tuple(row) for row in stored] == [(1, 2), (2, 2)]
    if ordered:
        assert commits == {"first": 1, "second": 1}
    else:  # one group or both gave up on the other's row, and ran their writes alone
        assert sum(commits.values()) > 2


@on_postgresql
async def test_a_write_held_up_by_a_long_lock_holds_up_no_other_write(engine: Engine) -> None:
    """An import holds a customer's row for seconds: a write that needs it waits for it,
    alone, while the writes queued with and after it, for other rows, are committed and
    answered meanwhile (the group gives up on the row after its lock timeout)."""
    _pairs(engine)
    importer = _psycopg(engine)
    importer.execute("SELECT n FROM bench_pairs WHERE id = 1 FOR UPDATE")

    def bump(row: int) -> Callable[[Connection], int]:
        return lambda conn: _bump_pair(conn, row)

    held = asyncio.ensure_future(db.write_together(engine, bump(1)))
    with_it = asyncio.ensure_future(db.write_together(engine, bump(2)))
    assert await asyncio.wait_for(with_it, 5) == 1
    after = [await asyncio.wait_for(db.write_together(engine, bump(2)), 5) for _ in range(3)]
    assert after == [2, 3, 4] and not held.done()
    _release(importer)
    assert await asyncio.wait_for(held, 5) == 1
