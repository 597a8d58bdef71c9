"""Fencing: a worker records a result only while the row still holds its claim's lease
token, so a worker that stalled past its lease can neither undo nor repeat what the worker
that took the message over did."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine, select

from mailer import daemon
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.outbound import outbox
from mailer.outbound.delivery import Delivery
from mailer.outbound.outbox import NewMessage, Outcome, Result
from mailer.outbound.smtp import SmtpTarget
from mailer.store import db
from tests.conftest import add_customers
from tests.smtp_sink import Sink, listening

MARIA = "maria@example.com"


@dataclass
class SlowSink(Sink):
    """Holds every DATA until the test lets it go: a server slower than the lease."""

    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    go_on: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.arrived.set()
        await self.go_on.wait()
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def other_engine(engine: Engine) -> Iterator[Engine]:
    """A second process's own connections to the same database."""
    second = db.connect(engine.url.render_as_string(hide_password=False))
    yield second
    second.dispose()


@pytest.fixture
def queued(engine: Engine, tmp_path: Path, clock: ManualClock) -> int:
    add_customers(engine, tmp_path, f"email,name\n{MARIA},Мария\n", clock.now())
    message = NewMessage(
        dedupe_key="receipt:1",
        to_address=MARIA,
        category=Category.TRANSACTIONAL,
        template="newsletter",
        context={"params": {"headline": "Зимни новини", "intro": "Нов бленд."}},
    )
    outbox.enqueue(engine, [message], clock.now())
    with engine.connect() as conn:
        return int(outbox.find(conn)[0]["id"])


@pytest.fixture
async def slow_port() -> AsyncIterator[tuple[SlowSink, int]]:
    sink = SlowSink()
    async with listening(sink) as port:
        yield sink, port


def worker(cfg: Config, engine: Engine, clock: ManualClock, port: int) -> Delivery:
    target = SmtpTarget(host="127.0.0.1", port=port, pool_size=1)
    return daemon.build_delivery(cfg, engine, clock, target)


def row(engine: Engine, row_id: int) -> dict[str, object]:
    with engine.connect() as conn:
        found = outbox.get(conn, row_id)
    assert found is not None
    return found


async def test_a_late_result_after_the_lease_was_taken_over_changes_nothing_and_sends_nothing(
    cfg: Config,
    engine: Engine,
    other_engine: Engine,
    clock: ManualClock,
    queued: int,
    sink: tuple[Sink, int],
    slow_port: tuple[SlowSink, int],
) -> None:
    slow, slow_at = slow_port
    a = worker(cfg, engine, clock, slow_at)
    b = worker(cfg, other_engine, clock, sink[1])
    a_running = asyncio.ensure_future(a.deliver_due())
    await asyncio.wait_for(slow.arrived.wait(), 10)  # A's message is with the slow server
    clock.advance(a.policy.lease + timedelta(seconds=1))  # and A stalls past its lease
    assert await b.deliver_due() == 1  # B takes the message over and sends it
    sent_by_b = row(engine, queued)
    assert sent_by_b["status"] == "sent" and len(sink[0].received) == 1
    slow.go_on.set()  # A's server answers at last; A records its result
    await asyncio.wait_for(a_running, 10)
    after = row(engine, queued)
    assert {k: after[k] for k in ("status", "message_id", "sent_at", "attempts")} == {
        k: sent_by_b[k] for k in ("status", "message_id", "sent_at", "attempts")
    }
    logged = [(a["outcome"], a["smtp_reply"]) for a in after["attempts_log"]]  # type: ignore[union-attr]
    assert logged[0][0] == "sent"
    assert logged[1][0] == "late" and logged[1][1].startswith("late result after lease lost: sent")
    clock.advance(timedelta(hours=1))
    assert await b.deliver_due() == 0 and len(sink[0].received) == 1


@pytest.mark.parametrize("late", [Result.RETRY, Result.FAILED, Result.RELEASED])
def test_a_late_retry_or_failure_never_queues_again_or_fails_what_the_new_holder_has(
    engine: Engine, other_engine: Engine, clock: ManualClock, queued: int, cfg: Config, late: Result
) -> None:
    policy = daemon.build_delivery(cfg, engine, clock, SmtpTarget(host="x", port=1)).policy
    (mine,) = outbox.claim(engine, clock.now(), 10, policy)
    clock.advance(policy.lease + timedelta(seconds=1))
    outbox.release_expired_leases(other_engine, clock.now())
    (theirs,) = outbox.claim(other_engine, clock.now(), 10, policy)
    assert theirs.lease > mine.lease
    said = Outcome(outbox_id=queued, result=late, at=clock.now(), reason="421 busy")
    assert outbox.record(engine, [said], outbox.leases([mine])) == [queued]
    assert row(engine, queued)["status"] == "sending", "still the new holder's"
    done = Outcome(outbox_id=queued, result=Result.SENT, at=clock.now(), smtp_reply="250 ok")
    assert outbox.record(other_engine, [done], outbox.leases([theirs])) == []
    assert row(engine, queued)["status"] == "sent"


def test_a_result_that_comes_after_the_lease_ran_out_but_before_anyone_claimed_counts(
    engine: Engine, clock: ManualClock, queued: int, cfg: Config
) -> None:
    """The message went out: recording it as sent is what keeps it from going out twice."""
    policy = daemon.build_delivery(cfg, engine, clock, SmtpTarget(host="x", port=1)).policy
    (mine,) = outbox.claim(engine, clock.now(), 10, policy)
    clock.advance(policy.lease + timedelta(seconds=1))
    assert outbox.release_expired_leases(engine, clock.now()) == 1
    done = Outcome(outbox_id=queued, result=Result.SENT, at=clock.now(), smtp_reply="250 ok")
    assert outbox.record(engine, [done], outbox.leases([mine])) == []
    assert row(engine, queued)["status"] == "sent"
    assert outbox.claim(engine, clock.now(), 10, policy) == []


def test_a_lease_extended_while_in_flight_is_not_taken_over(
    engine: Engine, other_engine: Engine, clock: ManualClock, queued: int, cfg: Config
) -> None:
    policy = daemon.build_delivery(cfg, engine, clock, SmtpTarget(host="x", port=1)).policy
    (mine,) = outbox.claim(engine, clock.now(), 10, policy)
    clock.advance(policy.lease / 3)
    assert outbox.extend(engine, outbox.leases([mine]), clock.now() + policy.lease) == 1
    clock.advance(policy.lease)  # past the first lease, inside the extended one
    assert outbox.release_expired_leases(other_engine, clock.now()) == 0
    assert outbox.claim(other_engine, clock.now(), 10, policy) == []
    with engine.connect() as conn:
        token = conn.execute(select(outbox.OUTBOX.c.lease_token)).scalar_one()
    assert token == mine.lease
