"""``[smtp] rate_per_second`` holds for all delivery processes on one database together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine

from mailer import daemon
from mailer.core.categories import Category
from mailer.core.clock import ManualClock, SystemClock
from mailer.core.config import Config
from mailer.outbound import outbox, rates
from mailer.outbound.outbox import NewMessage
from mailer.outbound.smtp import SmtpTarget
from mailer.store import db
from tests.smtp_sink import Sink, listening

RATE = 20.0


@dataclass
class TimedSink(Sink):
    """Notes when each message arrived."""

    arrivals: list[float] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.arrivals.append(time.monotonic())
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
async def timed() -> AsyncIterator[tuple[TimedSink, int]]:
    sink = TimedSink()
    async with listening(sink) as port:
        yield sink, port


@pytest.fixture
def second_engine(engine: Engine) -> Iterator[Engine]:
    """Another process's own connection pool to the same database."""
    other = db.connect(engine.url.render_as_string(hide_password=False))
    yield other
    other.dispose()


def test_slots_are_taken_in_blocks_and_never_twice(engine: Engine, second_engine: Engine) -> None:
    now = datetime(2026, 11, 24, 12, tzinfo=UTC).timestamp()
    assert rates.take(engine, "smtp", 5, RATE, now) == now
    assert rates.take(second_engine, "smtp", 5, RATE, now) == pytest.approx(now + 0.25)
    assert rates.take(engine, "smtp", 5, RATE, now + 0.1) == pytest.approx(now + 0.5)
    # a quiet spell earns no burst: the next block starts now, not in the past
    assert rates.take(second_engine, "smtp", 5, RATE, now + 60) == now + 60
    assert rates.take(engine, "other server", 1, RATE, now) == now


async def test_an_unused_block_is_dropped_not_sent_as_a_burst_later(
    engine: Engine, clock: ManualClock
) -> None:
    pacer = rates.SharedRate(engine=engine, name="smtp", rate=RATE, clock=clock)
    await pacer.wait()  # takes a block of five slots, uses the first
    clock.advance(timedelta(minutes=5))
    await pacer.wait()
    assert pacer._left == pacer.block - 1, "a fresh block, the stale one dropped"
    assert pacer._next == pytest.approx(clock.now().timestamp() + 1 / RATE)


async def test_two_delivery_workers_together_send_no_faster_than_the_rate(
    cfg: Config, engine: Engine, second_engine: Engine, timed: tuple[TimedSink, int]
) -> None:
    sink, port = timed
    clock = SystemClock()  # the rate is about real seconds: about two of them here
    target = SmtpTarget(host="127.0.0.1", port=port, pool_size=4, rate_per_second=RATE)
    workers = [daemon.build_delivery(cfg, e, clock, target) for e in (engine, second_engine)]
    for worker in workers:
        worker.batch_size = 8  # so both workers get a share of the backlog
    backlog = [
        NewMessage(
            dedupe_key=f"receipt:{n}",
            to_address=f"buyer{n}@example.com",
            category=Category.TRANSACTIONAL,
            template="newsletter",
            context={"params": {"headline": "Receipt", "intro": "Thank you."}},
        )
        for n in range(31)
    ]
    outbox.enqueue(engine, backlog, clock.now())
    handled = await asyncio.gather(*(w.deliver_due() for w in workers))
    assert sum(handled) == 31 and min(handled) > 0, handled
    arrivals = sink.arrivals
    assert len(arrivals) == 31
    # the first arrival also waited for its connection to open, the later ones did not
    assert arrivals[-1] - arrivals[0] >= 30 / RATE - 0.15
    # one more than the rate may share a second with the first connection's setup
    closest = min(later - first for first, later in zip(arrivals, arrivals[21:], strict=False))
    assert closest >= 1.0 - 0.1, "never 22 messages inside one second"
