"""Several daemons on one database: roles, one leader for the inbox and the schedules, and
what a dead process was sending taken back at once. The decisions without I/O; the leader
against a real PostgreSQL; recovery through the daemon itself on both backends."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, make_url, select, text

from mailer import daemon
from mailer.core import config
from mailer.core.clock import ManualClock
from mailer.core.errors import ConfigError
from mailer.outbound import outbox
from mailer.outbound.smtp import SmtpTarget
from mailer.store import db, leader, workers
from mailer.store.leader import Leader
from tests.configs import shipped_config
from tests.pg import PostgresServer
from tests.running import eventually
from tests.smtp_sink import Sink
from tests.test_delivery import TRANSACTIONAL, message
from tests.test_delivery import people as people

NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_the_roles_named_are_run_and_a_misspelt_one_is_named() -> None:
    assert config.roles("web, delivery") == {"delivery", "web"}
    with pytest.raises(ValueError, match="'deliver' is not a role; roles are delivery, inbox"):
        config.roles("deliver,web")
    with pytest.raises(ValueError, match="no role given"):
        config.roles(" , ")


def test_daemon_roles_in_config_are_checked_like_any_key(tmp_path: Path) -> None:
    assert shipped_config(tmp_path, {}).settings.daemon.roles == list(config.ROLES)
    with pytest.raises(ConfigError) as caught:
        shipped_config(tmp_path, {"MAILER_DAEMON__ROLES": '["web", "inbx"]'})
    assert "[daemon] roles.1" in str(caught.value)


def test_a_process_is_taken_for_dead_after_three_missed_heartbeats() -> None:
    seen = [
        workers.Seen("beating", NOON - timedelta(seconds=5)),
        workers.Seen("late", NOON - timedelta(seconds=15)),
        workers.Seen("gone", NOON - timedelta(seconds=16)),
    ]
    assert workers.dead(seen, NOON) == ["gone"]


def test_after_the_database_was_away_every_process_gets_a_lifetime_to_beat_again() -> None:
    """No process could beat while the database was away: none is taken for dead until
    each had the whole lifetime after its return, however long ago its last beat was."""
    back = NOON - timedelta(seconds=10)
    seen = [
        workers.Seen("beat before the outage", NOON - timedelta(minutes=2)),
        workers.Seen("beat since", NOON - timedelta(seconds=2)),
    ]
    assert workers.dead(seen, NOON, back_at=back) == []
    assert workers.dead(seen, back + workers.LIFETIME, back_at=back) == []
    later = back + workers.LIFETIME + timedelta(seconds=1)
    assert workers.dead(seen, later, back_at=back) == ["beat before the outage"]
    assert workers.dead(seen, NOON, back_at=NOON - timedelta(hours=1)) == [
        "beat before the outage"
    ], "a return long ago changes nothing"


def test_each_leadership_has_its_own_lock_the_same_in_every_process() -> None:
    keys = {leader.lock_key(name) for name in ("schedules", "inbox INBOX", "inbox Support")}
    assert len(keys) == 3 and all(-(2**63) <= key < 2**63 for key in keys)
    assert leader.lock_key("schedules") == leader.lock_key("schedules")
    assert leader.lock_key("schedules") == -4367236863301448781  # stable across versions


Work = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def recorded(name: str, events: list[str]) -> Work:
    async def work(stop: asyncio.Event) -> None:
        events.append(f"{name} leads")
        try:
            await stop.wait()
        finally:
            events.append(f"{name} stops")

    return work


def holder(server: PostgresServer, database: str) -> int:
    """The server process that holds the database's advisory lock."""
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = %s",
            (database,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def standing_by(server: PostgresServer, count: int) -> Callable[[], bool]:
    def connected() -> bool:
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                ("mailer leader: schedules",),
            ).fetchone()
        return row is not None and row[0] == count

    return connected


async def test_a_leader_cut_off_from_the_database_stops_before_another_can_lead(
    postgres: PostgresServer,
) -> None:
    """The lock's server process is frozen (SIGSTOP), as a lost network would leave it: the
    leader's look at its connection goes unanswered and it stops its work while the lock
    is still held, so the other process leads only after the first has stopped."""
    postgres.admin("DROP DATABASE IF EXISTS leaders", "CREATE DATABASE leaders")
    url = make_url(db.normalise_url(postgres.url("leaders")))
    events: list[str] = []
    stop = asyncio.Event()
    # a check answered late on a busy machine would step down early: the timeout is ample
    timing: dict[str, Any] = {"check": 0.05, "check_timeout": 1.5}
    # the first, once stepped down, stands by for longer than the test lasts
    first = asyncio.create_task(
        Leader(url=url, name="schedules", retry=60, **timing).run(recorded("first", events), stop)
    )
    await eventually(lambda: events == ["first leads"], "the first process leads")
    second = asyncio.create_task(
        Leader(url=url, name="schedules", retry=0.05, **timing).run(
            recorded("second", events), stop
        )
    )
    await eventually(standing_by(postgres, 2), "the second process stands by")
    frozen = holder(postgres, "leaders")
    os.kill(frozen, signal.SIGSTOP)
    try:
        await eventually(lambda: events[-1:] == ["first stops"], "the first steps down")
        assert "second leads" not in events, "the lock is still held: nobody else leads yet"
    finally:
        os.kill(frozen, signal.SIGCONT)  # its session ends, and the lock with it
    await eventually(lambda: events[-1:] == ["second leads"], "the second takes over")
    stop.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert events == ["first leads", "first stops", "second leads", "second stops"]


async def test_what_a_dead_process_was_sending_goes_out_at_once_when_a_daemon_starts(
    engine: Engine,
    people: dict[str, int],
    clock: ManualClock,
    sink: tuple[Sink, int],
    tmp_path: Path,
) -> None:
    """Not after its 5-minute lease: on SQLite the starting daemon is the only process, so
    all in flight was left by a dead one; on PostgreSQL, that of processes whose heartbeat
    stopped, while a live process keeps what it is sending."""
    now = clock.now()
    cfg = shipped_config(
        tmp_path, {"MAILER_SANDBOX__ENABLED": "false", "MAILER_SMTP__PORT": str(sink[1])}
    )
    target = SmtpTarget(host="127.0.0.1", port=sink[1], pool_size=1)
    policy = daemon.build_delivery(cfg, engine, clock, target).policy
    for worker, who in (("gone", "maria"), ("alive", "siti")):
        outbox.enqueue(engine, [message(people, who, f"k-{who}", **TRANSACTIONAL)], now)
        seen = now - (timedelta(minutes=1) if worker == "gone" else timedelta(seconds=1))
        if engine.dialect.name == "postgresql":
            workers.register(engine, worker, seen)
        outbox.claim(engine, now, 1, dataclasses.replace(policy, worker=worker))
    await lifetime_since_start(engine)
    stop = asyncio.Event()
    serving = asyncio.create_task(
        daemon.serve(
            cfg, engine, stop, sandbox_on=False, clock=clock, roles=frozenset({"delivery"})
        )
    )
    try:
        await eventually(lambda: len(sink[0].received) >= 1, "the dead process's message goes")
        if engine.dialect.name == "sqlite":
            await eventually(lambda: len(sink[0].received) == 2, "and, alone, the other")
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)
    expected = {
        "k-maria": "sent",
        "k-siti": "sent" if engine.dialect.name == "sqlite" else "sending",
    }
    assert statuses(engine) == expected
    assert len(sink[0].received) == len([s for s in expected.values() if s == "sent"])


def statuses(engine: Engine) -> dict[str, str]:
    columns = outbox.OUTBOX.c
    with engine.connect() as conn:
        return {
            key: status for key, status in conn.execute(select(columns.dedupe_key, columns.status))
        }


async def lifetime_since_start(engine: Engine) -> None:
    """No process is taken for dead until every one had the heartbeat lifetime after the
    database (re)started; another test may have just restarted the test server: wait for
    that to pass, bounded (at once when it did not)."""
    if engine.dialect.name != "postgresql":
        return
    up = text("SELECT extract(epoch FROM now() - pg_postmaster_start_time())")
    for _ in range(400):
        with engine.connect() as conn:
            if float(conn.execute(up).scalar_one()) > workers.LIFETIME.total_seconds():
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the test server was restarted 20 s ago and more, yet seems new")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite: one process
async def test_a_process_that_stops_beating_is_taken_over_by_a_running_one(
    engine: Engine,
    people: dict[str, int],
    clock: ManualClock,
    sink: tuple[Sink, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL: a running daemon notices, at its next heartbeat, that another process
    stopped beating, and sends what that one held without waiting out the lease."""
    monkeypatch.setattr(workers, "HEARTBEAT", 0.05)
    now = clock.now()
    cfg = shipped_config(
        tmp_path, {"MAILER_SANDBOX__ENABLED": "false", "MAILER_SMTP__PORT": str(sink[1])}
    )
    target = SmtpTarget(host="127.0.0.1", port=sink[1], pool_size=1)
    policy = daemon.build_delivery(cfg, engine, clock, target).policy
    outbox.enqueue(engine, [message(people, "maria", "k-maria", **TRANSACTIONAL)], now)
    workers.register(engine, "other", now)
    outbox.claim(engine, now, 1, dataclasses.replace(policy, worker="other"))
    await lifetime_since_start(engine)
    stop = asyncio.Event()
    serving = asyncio.create_task(
        daemon.serve(
            cfg, engine, stop, sandbox_on=False, clock=clock, roles=frozenset({"delivery"})
        )
    )
    try:
        await eventually(lambda: len(workers.seen(engine)) == 2, "this daemon beats too")
        assert statuses(engine) == {"k-maria": "sending"}, "the other is alive: it keeps it"
        clock.advance(workers.LIFETIME + timedelta(seconds=1))
        await eventually(lambda: len(sink[0].received) == 1, "the other's message goes")
        assert [w.id for w in workers.seen(engine) if w.id == "other"] == []
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)
    assert statuses(engine) == {"k-maria": "sent"}
