"""PostgreSQL stopped and started again while delivery works: every message reaches a real
aiosmtpd server exactly once. Results that could not be written are kept and written first;
what was claimed and not tried goes back with its reason. The outbox leases run on a moved
clock; the waits for the real servers are bounded polls."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.pool import Pool

from mailer import daemon
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.outbound import outbox
from mailer.outbound.delivery import Delivery
from mailer.outbound.outbox import NewMessage
from mailer.outbound.smtp import SmtpTarget
from mailer.store import db, migrate
from tests.pg import PostgresServer
from tests.running import eventually
from tests.smtp_sink import Sink, listening
from tests.test_delivery import HeldSink

_databases = itertools.count()
COUNT = 10


def receipts(count: int, template: str = "newsletter") -> list[NewMessage]:
    return [
        NewMessage(
            dedupe_key=f"receipt:{n}",
            to_address=f"buyer{n}@example.com",
            category=Category.TRANSACTIONAL,
            template=template,
            context={"params": {"headline": "Receipt", "intro": "Thank you."}},
        )
        for n in range(count)
    ]


def rows(engine: Engine) -> dict[str, tuple[str, str | None, int]]:
    """(status, reason, attempts) by address."""
    c = outbox.OUTBOX.c
    with engine.connect() as conn:
        found = conn.execute(select(c.to_address, c.status, c.reason, c.attempts))
        return {address: (status, reason, attempts) for address, status, reason, attempts in found}


def received(sink: Sink) -> Counter[str]:
    return Counter(address for got in sink.received for address in got.rcpt_tos)


def build(scene: Scene, port: int, **target: Any) -> Delivery:
    relay = SmtpTarget(host="127.0.0.1", port=port, **target)
    delivery = daemon.build_delivery(scene.cfg, scene.engine, scene.clock, relay)
    delivery.batch_size = 4
    return delivery


@dataclass(kw_only=True)
class Scene:
    """A migrated PostgreSQL database, the shipped config and a moved clock."""

    cfg: Config
    engine: Engine
    clock: ManualClock
    postgres: PostgresServer
    retired: list[Pool] = field(default_factory=list)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A server of these tests' own: stopping it leaves the other tests' server alone (and
    its start time, from which the processes' heartbeats are judged)."""
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def scene(cfg: Config, clock: ManualClock, own_postgres: PostgresServer) -> Iterator[Scene]:
    name = f"restart_{next(_databases)}"
    own_postgres.admin(f"CREATE DATABASE {name}")
    engine = db.connect(own_postgres.url(name))
    migrate.upgrade(engine)
    scene = Scene(cfg=cfg, engine=engine, clock=clock, postgres=own_postgres)
    yield scene
    engine.dispose()
    for pool in scene.retired:
        pool.dispose()


@asynccontextmanager
async def away(postgres: PostgresServer) -> AsyncIterator[None]:
    """PostgreSQL stopped for the block, started again however it ends."""
    await asyncio.to_thread(postgres.halt)
    try:
        yield
    finally:
        await asyncio.to_thread(postgres.resume)


def logged(caplog: pytest.LogCaptureFixture, text: str) -> Callable[[], bool]:
    return lambda: text in caplog.text


@asynccontextmanager
async def under_way(scene: Scene, sink: HeldSink) -> AsyncIterator[asyncio.Event]:
    """A running delivery with COUNT messages queued, held while the server takes the
    first batch's content and the next batches are claimed: every message is in flight."""
    engine = scene.engine
    async with listening(sink) as port:
        delivery = build(scene, port)
        outbox.enqueue(engine, receipts(COUNT), scene.clock.now())
        stop = asyncio.Event()
        worker = asyncio.create_task(delivery.run(stop))
        try:
            await eventually(sink.waiting.is_set, "the first batch is being sent")
            sending = lambda: [r[0] for r in rows(scene.engine).values()].count("sending") == COUNT  # noqa: E731
            await eventually(sending, "the next batches are claimed meanwhile")
            yield stop
        finally:
            stop.set()
            sink.gate.set()
            await asyncio.wait_for(worker, 30)


async def test_results_sent_while_the_database_is_away_are_written_first_when_it_is_back(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    """The database stops with two batches in flight; their messages are accepted by the
    server meanwhile. By the time it is back every lease has run out: were the results not
    written before anything else, the rows would be queued again and sent twice."""
    sink = HeldSink()
    caplog.set_level(logging.INFO, "mailer.outbound.delivery")
    async with under_way(scene, sink):
        async with away(scene.postgres):
            sink.gate.set()
            await eventually(logged(caplog, "delivery waits for the database"), "kept")
            await eventually(lambda: len(sink.received) >= 4, "the first batch is accepted")
            scene.clock.advance(daemon.LEASE + timedelta(minutes=1))
        everything = lambda: set(received(sink)) == {f"buyer{n}@example.com" for n in range(COUNT)}  # noqa: E731
        await eventually(everything, "every message arrives")
        await eventually(
            lambda: {r[0] for r in rows(scene.engine).values()} == {"sent"}, "all sent"
        )
    assert max(received(sink).values()) == 1, received(sink)
    assert {r[2] for r in rows(scene.engine).values()} == {1}, "one attempt each"
    assert "delivery: the database answers again" in caplog.text


async def test_a_stop_while_the_database_is_away_says_what_could_not_be_written(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    sink = HeldSink()
    async with under_way(scene, sink) as stop, away(scene.postgres):
        sink.gate.set()
        await eventually(logged(caplog, "delivery waits for the database"), "kept")
        stop.set()
        await eventually(logged(caplog, "delivery stops with"), "the stop is logged")
    said = re.search(r"delivery stops with (\d+) results \((\d+) sent\) not written", caplog.text)
    assert said is not None, caplog.text
    kept, sent = int(said[1]), int(said[2])
    assert sent == len(sink.received) >= 4, "what the server took is what is said to be sent"
    # the next batches, claimed meanwhile (4 and 2 messages), may have been released for
    # want of the database (their releases then wait to be written too) or not yet have
    # been taken any further
    assert kept - sent in (0, 2, 4, 6)
    assert "the database is unreachable" in caplog.text


def claim_then(act: Callable[[], None]) -> Callable[..., list[outbox.Claimed]]:
    """``outbox.claim`` that does ``act`` (stops the database) once it has claimed."""
    claim = outbox.claim

    def claiming(*args: Any, **kwargs: Any) -> list[outbox.Claimed]:
        claimed = claim(*args, **kwargs)
        if claimed:
            act()
        return claimed

    return claiming


async def cut_after_claim(
    scene: Scene, delivery: Delivery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round in which the database stops as soon as three messages are claimed; then,
    the database back, a round that only writes what was kept (a stop claims nothing)."""
    monkeypatch.setattr(outbox, "claim", claim_then(scene.postgres.halt))
    try:
        assert await delivery.deliver_due() == 3
    finally:
        monkeypatch.undo()
        await asyncio.to_thread(scene.postgres.resume)
    delivery._stop.set()
    assert await delivery.deliver_due() == 0
    delivery._stop.clear()


async def test_a_batch_cut_off_before_rendering_goes_back_untried_with_its_reason(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendering reads the customers' orders for this template; the database stops between
    the claim and that read."""
    sink = Sink()
    async with listening(sink) as port:
        delivery = build(scene, port)
        outbox.enqueue(scene.engine, receipts(3, template="after_purchase"), scene.clock.now())
        await cut_after_claim(scene, delivery, monkeypatch)
        await delivery.relays.close()
    assert sink.received == []
    assert set(rows(scene.engine).values()) == {
        ("queued", "waiting: the database is unreachable", 0)
    }


async def test_the_shared_rate_failing_with_the_database_sends_nothing_and_releases_the_batch(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rate shared by every process is taken from the database before each block of
    sends; it stops after the batch was claimed and rendered."""
    sink = Sink()
    async with listening(sink) as port:
        delivery = build(scene, port, rate_per_second=5.0)
        outbox.enqueue(scene.engine, receipts(3), scene.clock.now())
        await cut_after_claim(scene, delivery, monkeypatch)
        assert set(rows(scene.engine).values()) == {
            ("queued", "waiting: the database is unreachable", 0)
        }
        assert await delivery.deliver_due() == 3
        await delivery.relays.close()
    assert sorted(received(sink).values()) == [1, 1, 1]


def read_only(scene: Scene, on: bool) -> None:
    """The database takes no writes, as a standby that a failover landed on: new sessions
    start read only (the engine's are dropped so that its next ones are new). A connection
    that delivery had checked out goes back to the dropped pool when it is done; that pool is
    kept and closed at the end, or its connections would be left to the garbage collector."""
    name = scene.engine.url.database
    setting = "SET default_transaction_read_only = on" if on else "RESET ALL"
    scene.postgres.admin(f"ALTER DATABASE {name} {setting}")
    scene.retired.append(scene.engine.pool)
    scene.engine.dispose()


async def test_results_are_kept_while_the_database_answers_but_takes_no_writes(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes fail with "cannot execute UPDATE in a read-only transaction", not a lost
    connection; the sends' results are kept all the same and written once writes work."""
    sink = HeldSink()
    caplog.set_level(logging.INFO, "mailer.outbound.delivery")
    async with listening(sink) as port:
        delivery = build(scene, port)
        outbox.enqueue(scene.engine, receipts(3), scene.clock.now())
        first = asyncio.create_task(delivery.deliver_due())
        try:
            await eventually(sink.waiting.is_set, "the batch is being sent")
            await asyncio.to_thread(read_only, scene, True)
            sink.gate.set()
            assert await asyncio.wait_for(first, 30) == 3
            assert "delivery waits for the database" in caplog.text
            assert "read-only transaction" in caplog.text
            assert {status for status, _, _ in rows(scene.engine).values()} == {"sending"}
        finally:
            sink.gate.set()
            await asyncio.to_thread(read_only, scene, False)
        delivery._stop.set()  # a round that only writes what was kept
        assert await delivery.deliver_due() == 0
    assert received(sink) == {f"buyer{n}@example.com": 1 for n in range(3)}
    assert {status for status, _, _ in rows(scene.engine).values()} == {"sent"}
    assert {attempts for _, _, attempts in rows(scene.engine).values()} == {1}


def waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        return bool(conn.exec_driver_sql(query).scalar())


async def test_a_stop_while_results_are_being_written_writes_each_once(scene: Scene) -> None:
    """The daemon's grace runs out, and delivery is cancelled, while a batch's results are
    being written (the write waits for a row another connection holds: a slow commit). The
    write goes on in its thread; delivery waits for it, so its last round does not write the
    same results again (a second attempt and a second webhook for each message)."""
    sink = HeldSink()
    engine = scene.engine
    async with listening(sink) as port:
        delivery = build(scene, port)
        outbox.enqueue(engine, receipts(4), scene.clock.now())
        worker = asyncio.create_task(delivery.run(asyncio.Event()))
        with engine.connect() as other:
            try:
                await eventually(sink.waiting.is_set, "the batch is being sent")
                c = outbox.OUTBOX.c
                first = select(c.id).where(c.to_address == "buyer0@example.com")
                other.execute(first.with_for_update())
                sink.gate.set()
                await eventually(lambda: len(sink.received) == 4, "the batch is accepted")
                await eventually(lambda: waiting_on_a_lock(engine), "its write waits")
                worker.cancel()
                await asyncio.sleep(0)  # the cancellation reaches the write's await
            finally:
                sink.gate.set()
                other.commit()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(worker, 30)
    assert {status for status, _, _ in rows(engine).values()} == {"sent"}
    assert {attempts for _, _, attempts in rows(engine).values()} == {1}
    with engine.connect() as conn:
        attempts = conn.execute(select(outbox.ATTEMPTS.c.outbox_id)).scalars().all()
    assert sorted(Counter(attempts).values()) == [1, 1, 1, 1]
