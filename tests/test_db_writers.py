"""Short write transactions from many threads of one server process (each API call counts
its key): on SQLite the writes waiting at once are committed together, without SQLite's
busy handler; on PostgreSQL they run side by side."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from mailer.store import db

THREADS = 8
WRITES = 25
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _counter(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_counter (n INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO bench_counter (n) VALUES (0)"))


def _bump_once(conn: Connection) -> int:
    n = int(conn.execute(text("SELECT n FROM bench_counter")).scalar_one()) + 1
    conn.execute(text("UPDATE bench_counter SET n = :n"), {"n": n})
    return n


def _bump(engine: Engine) -> None:
    for _ in range(WRITES):
        db.write_together(engine, _bump_once)


def _bump_from_threads(engine: Engine) -> list[BaseException]:
    """Each thread's failure (none when every write went through)."""
    with ThreadPoolExecutor(THREADS) as pool:
        runs = [pool.submit(_bump, engine) for _ in range(THREADS)]
    return [error for run in runs if (error := run.exception()) is not None]


@on_sqlite
def test_sqlite_writers_of_one_process_write_one_at_a_time_without_the_busy_handler(
    engine: Engine,
) -> None:
    """With SQLite's busy handler turned off, a writer that found the file locked would
    fail at once ("database is locked"), and a read before the write would lose updates:
    each transaction runs alone, so every bump counts."""
    _counter(engine)
    engine.dispose()

    def no_waiting(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    event.listen(engine, "connect", no_waiting)
    assert _bump_from_threads(engine) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM bench_counter")).scalar_one() == THREADS * WRITES


def _other_process(engine: Engine) -> sqlite3.Connection:
    """A connection of its own, as another process's, holding SQLite's write lock."""
    other = sqlite3.connect(make_url(str(engine.url)).database or "", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


@on_sqlite
def test_a_write_waits_for_another_process_to_commit(engine: Engine) -> None:
    """Another process's write transaction holds SQLite's lock: the write starts only once
    that one has committed, and then goes through."""
    _counter(engine)
    other = _other_process(engine)
    other.execute("UPDATE bench_counter SET n = 10")
    entered = threading.Event()

    def bump(conn: Connection) -> None:
        entered.set()
        conn.execute(text("UPDATE bench_counter SET n = n + 1"))

    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(db.write_together, engine, bump)
        assert not entered.is_set()
        other.execute("COMMIT")
        run.result()
    other.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM bench_counter")).scalar_one() == 11


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


def test_writers_on_postgresql_commit_what_they_wrote(engine: Engine) -> None:
    """On PostgreSQL ``write_together`` is ``engine.begin()``: committed at the end, rolled
    back on an error."""
    _counter(engine)
    assert db.write_together(engine, _bump_once) == 1

    def undone(conn: Connection) -> None:
        _bump_once(conn)
        raise RuntimeError("undo")

    with pytest.raises(RuntimeError, match="undo"):
        db.write_together(engine, undone)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM bench_counter")).scalar_one() == 1


@on_sqlite
def test_writes_held_up_by_another_process_each_fail_after_the_busy_timeout(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four API writes wait behind a write elsewhere that does not end: each fails with
    "database is locked" once the busy timeout has passed since it was asked, not after
    the timeouts of the writes queued ahead of it in this process (4 x 0.5 s)."""
    _counter(engine)
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 500)
    engine.dispose()  # new connections with the shorter timeout
    other = _other_process(engine)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(4) as pool:
            runs = [pool.submit(_bump, engine) for _ in range(4)]
        errors = [run.exception() for run in runs]
    finally:
        other.close()
    assert all(isinstance(e, OperationalError) and "locked" in str(e) for e in errors), errors
    assert time.monotonic() - started < 1.5


@on_sqlite
def test_a_write_leaves_the_connections_own_busy_timeout_and_may_not_nest(engine: Engine) -> None:
    def patient(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=1234")

    engine.dispose()
    event.listen(engine, "connect", patient)
    _counter(engine)

    def nesting(conn: Connection) -> int:
        _bump_once(conn)
        with pytest.raises(RuntimeError, match="inside its own work"):
            db.write_together(engine, _bump_once)
        return int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one())

    assert db.write_together(engine, nesting) == 1234
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM bench_counter")).scalar_one() == 1


@on_sqlite
def test_writes_waiting_at_once_are_committed_together_and_a_failing_one_alone_is_undone(
    engine: Engine,
) -> None:
    """Eight writes arrive while another process holds the lock: once it commits, they are
    committed in one or two transactions instead of eight, each thread gets its own result,
    and the one that raised gets its error with its own change undone and nobody else's."""
    _counter(engine)
    other = _other_process(engine)
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))

    def bump_or_fail(fail: bool) -> Callable[[Connection], int]:
        def work(conn: Connection) -> int:
            n = _bump_once(conn)
            if fail:
                raise ValueError(f"write {n} refused")
            return n

        return work

    with ThreadPoolExecutor(8) as pool:
        runs = [pool.submit(db.write_together, engine, bump_or_fail(i == 3)) for i in range(8)]
        deadline = time.monotonic() + 10
        while len(db._GROUPS[engine].waiting) < 7 and time.monotonic() < deadline:
            time.sleep(0.01)  # until the leader waits for the lock and seven wait behind it
        other.execute("ROLLBACK")
        other.close()
        errors = [run.exception() for run in runs]
    failed = [e for e in errors if e is not None]
    assert len(failed) == 1 and isinstance(failed[0], ValueError), errors
    assert sorted(run.result() for run in runs if run.exception() is None) == list(range(1, 8))
    assert len(commits) <= 2
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM bench_counter")).scalar_one() == 7


def _queue_in_order(
    engine: Engine, pool: ThreadPoolExecutor, works: list[Callable[[Connection], Any]]
) -> list[Future[Any]]:
    """Each write submitted once the one before waits in this process's group, so that the
    first leads (waiting for the lock) and the rest form its next transaction, in order."""
    runs: list[Future[Any]] = []
    for work in works:
        runs.append(pool.submit(db.write_together, engine, work))
        deadline = time.monotonic() + 10
        while len(db._GROUPS[engine].waiting) < len(runs) - 1 and time.monotonic() < deadline:
            time.sleep(0.005)  # until this one waits behind the leader
    return runs


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


@on_sqlite
def test_a_write_the_database_refuses_is_undone_alone(engine: Engine) -> None:
    """A send whose statement the database refuses (a unique rule) fails alone: what it
    wrote before is undone, the writes before and after it in the same transaction are
    stored, and the connection goes on as if nothing happened."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_rows (x INTEGER UNIQUE)"))
    other = _other_process(engine)
    with ThreadPoolExecutor(5) as pool:
        works = [_insert(0), _insert(1), _insert_then_repeat(5, 1), _insert(2), _insert(3)]
        runs = _queue_in_order(engine, pool, works)
        other.execute("ROLLBACK")
        other.close()
        errors = [run.exception() for run in runs]
    assert [type(e).__name__ if e else None for e in errors] == [
        None,
        None,
        "IntegrityError",
        None,
        None,
    ]
    assert db.write_together(engine, _insert(4)) == 4
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT x FROM bench_rows ORDER BY x")).scalars().all()
    assert stored == [0, 1, 2, 3, 4]


@on_sqlite
def test_a_write_that_loses_the_whole_transaction_fails_every_write_of_it(engine: Engine) -> None:
    """A send answered 202 must be stored: when one write of a transaction makes SQLite roll
    all of it back (a full disk), every write of it fails, and none is reported done."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_rows (x)"))
    other = _other_process(engine)
    with ThreadPoolExecutor(4) as pool:
        runs = _queue_in_order(engine, pool, [_insert(0), _insert(1), _disk_full, _insert(3)])
        other.execute("ROLLBACK")
        other.close()
        done = [run.result() for run in runs if run.exception() is None]
    assert done == [0]
    assert all("full" in str(run.exception()) for run in runs[1:]), [r.exception() for r in runs]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT x FROM bench_rows")).scalars().all() == [0]


@on_sqlite
def test_writes_queued_behind_a_write_that_does_not_end_give_up_after_the_busy_timeout(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write of this process that never ends holds the others no longer than SQLite's
    busy timeout: they fail with "database is locked" and are never run afterwards."""
    _counter(engine)
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 500)
    release = threading.Event()

    def held(conn: Connection) -> int:
        release.wait(10)
        return _bump_once(conn)

    with ThreadPoolExecutor(3) as pool:
        started = time.monotonic()
        runs = _queue_in_order(engine, pool, [held, _bump_once, _bump_once])
        errors = [run.exception(timeout=10) for run in runs[1:]]
        waited = time.monotonic() - started
        release.set()
        assert runs[0].result() == 1
    assert all(isinstance(e, OperationalError) and "locked" in str(e) for e in errors), errors
    assert waited < 5
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM bench_counter")).scalar_one() == 1
