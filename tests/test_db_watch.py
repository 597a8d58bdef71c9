"""The cheap look an idle delivery worker takes at whether anything may have been queued:
SQLite's data version, PostgreSQL's NOTIFY from the outbox's trigger."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import Engine, text

from mailer.core.categories import Category
from mailer.outbound import outbox
from mailer.outbound.outbox import NewMessage
from mailer.store import db


def _listening(engine: Engine) -> int:
    """Connections of any process that LISTEN on this PostgreSQL database now."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _queue_nothing_new(engine: Engine) -> None:
    """A commit that writes a row but queues no message."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS scratch (x INTEGER)"))
        conn.execute(text("INSERT INTO scratch (x) VALUES (1)"))


def test_a_watch_sees_a_message_another_connection_queued_once(engine: Engine) -> None:
    """A message queued by another connection (another process's) is seen at the next look,
    and only then; a commit that queues nothing is seen on SQLite (any commit counts)
    and not on PostgreSQL (only the outbox's NOTIFY does)."""
    watch = outbox.watch(engine)
    assert watch is not None
    try:
        assert watch.changed(), "the first look (it starts listening) counts as a change"
        assert not watch.changed()
        receipt = NewMessage(
            dedupe_key="watch:1",
            to_address="ana@example.com",
            category=Category.TRANSACTIONAL,
            template="receipt",
        )
        outbox.enqueue(engine, [receipt], datetime.now(UTC))
        assert _seen(watch), "the queued message is noticed"
        assert not watch.changed()
        _queue_nothing_new(engine)
        assert watch.changed() is (engine.dialect.name == "sqlite")
    finally:
        watch.close()


def test_a_watch_closed_while_it_connects_leaves_no_connection_open(engine: Engine) -> None:
    watch = db.watch(engine, outbox.QUEUED_CHANNEL)
    assert watch is not None
    watch.close()
    assert watch.changed(), "a look after close still tells the caller to look"
    if engine.dialect.name == "postgresql":
        assert _listening(engine) == 0


def _seen(watch: db.Watch) -> bool:
    """Whether the watch sees a change within 5 s: PostgreSQL sends a NOTIFY to listeners
    after the commit returns, so on a busy machine it can arrive a moment later (the
    worker looks again 50 ms later); SQLite's data version has changed by then."""
    deadline = time.monotonic() + 5
    while not watch.changed():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
