"""Short write transactions from many threads of one server process (each API call counts
its key): on SQLite they take turns in the process instead of polling on SQLite's busy
handler; on PostgreSQL they run side by side."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url

from mailer.store import db

THREADS = 8
WRITES = 25


def _counter(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_counter (n INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO bench_counter (n) VALUES (0)"))


def _bump(engine: Engine) -> None:
    for _ in range(WRITES):
        with db.writing(engine) as conn:
            n = conn.execute(text("SELECT n FROM bench_counter")).scalar_one()
            conn.execute(text("UPDATE bench_counter SET n = :n"), {"n": n + 1})


def _bump_from_threads(engine: Engine) -> list[BaseException]:
    """Each thread's failure (none when every write went through)."""
    with ThreadPoolExecutor(THREADS) as pool:
        runs = [pool.submit(_bump, engine) for _ in range(THREADS)]
    return [error for run in runs if (error := run.exception()) is not None]


def test_sqlite_writers_of_one_process_take_turns_without_the_busy_handler(
    engine: Engine,
) -> None:
    """With SQLite's busy handler turned off, a writer that found the file locked would
    fail at once ("database is locked"), and a read before the write would lose updates:
    each transaction runs alone, so every bump counts."""
    if engine.dialect.name != "sqlite":
        return
    _counter(engine)
    engine.dispose()

    def no_waiting(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    event.listen(engine, "connect", no_waiting)
    assert _bump_from_threads(engine) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM bench_counter")).scalar_one() == THREADS * WRITES


def test_a_write_waits_for_another_process_to_commit(engine: Engine) -> None:
    """Another process's write transaction holds SQLite's lock: the write starts only once
    that one has committed, and then goes through."""
    if engine.dialect.name != "sqlite":
        return
    _counter(engine)
    other = sqlite3.connect(make_url(str(engine.url)).database or "", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE bench_counter SET n = 10")
    entered = threading.Event()

    def bump() -> None:
        with db.writing(engine) as conn:
            entered.set()
            conn.execute(text("UPDATE bench_counter SET n = n + 1"))

    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(bump)
        assert not entered.is_set()
        other.execute("COMMIT")
        run.result()
    other.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM bench_counter")).scalar_one() == 11


def test_writers_on_postgresql_commit_what_they_wrote(engine: Engine) -> None:
    """On PostgreSQL ``writing`` is ``engine.begin()``: committed at the end, rolled back
    on an error."""
    _counter(engine)
    with db.writing(engine) as conn:
        conn.execute(text("UPDATE bench_counter SET n = 5"))
    try:
        with db.writing(engine) as conn:
            conn.execute(text("UPDATE bench_counter SET n = 7"))
            raise RuntimeError("undo")
    except RuntimeError:
        pass
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM bench_counter")).scalar_one() == 5
