"""``followup.due`` as a receiving system sees it: once per follow-up and due time, signed,
told by the daemon's scheduling pass; never for one done before it was due, and not again
after a restart or from a second daemon."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine

from mailer.core.clock import ManualClock
from mailer.customers import followups
from mailer.daemon import build_scheduler
from mailer.hooks import deliveries
from mailer.hooks.events import EventType
from tests.command import Mailer
from tests.command import mailer as mailer
from tests.command import project as project
from tests.configs import shipped_config
from tests.running import EVENT_SECONDS, eventually
from tests.test_webhooks import maria as maria
from tests.test_webhooks import receiver as receiver
from tests.test_webhooks import register, verified, worker
from tests.webhook_receiver import Receiver


def plan(engine: Engine, clock: ManualClock, email: str, due_in: timedelta, note: str) -> int:
    """A follow-up as support adds one, assigned to sam."""
    with engine.begin() as conn:
        new = followups.NewFollowUp(
            customer_id=followups.customer_id(conn, email),
            due_at=clock.now() + due_in,
            note=note,
            created_by="ada",
            assignee="sam",
        )
        return followups.add(conn, new, clock.now())


def tell(engine: Engine, clock: ManualClock) -> int:
    with engine.begin() as conn:
        return followups.tell_due(conn, clock.now())


@asynccontextmanager
async def daemon(engine: Engine, clock: ManualClock, tmp_path: Path) -> AsyncIterator[None]:
    """The scheduling pass and the webhook worker, wired as `mailer run` wires them (with
    no schedule files: only follow-ups are due)."""
    (tmp_path / "no-schedules").mkdir(exist_ok=True)
    cfg = shipped_config(tmp_path, {"MAILER_PATHS__SCHEDULES": str(tmp_path / "no-schedules")})
    hooks = worker(engine, clock)
    scheduler = build_scheduler(cfg, engine, clock, lambda: None, hooks.wake)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(hooks.run(stop)),
        asyncio.create_task(scheduler.run(stop, asyncio.Event())),
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), EVENT_SECONDS)


def told(receiver: Receiver) -> list[dict[str, object]]:
    return [json.loads(r.body)["data"] for r in receiver.received]


async def test_a_due_followup_is_told_once_signed_and_not_again_after_a_restart(
    engine: Engine, clock: ManualClock, receiver: Receiver, maria: str, tmp_path: Path
) -> None:
    secret = register(engine, clock, receiver.url, EventType.FOLLOWUP_DUE)
    grinder = plan(engine, clock, maria, timedelta(hours=1), "Call about the grinder")
    called = plan(engine, clock, maria, timedelta(minutes=30), "Ask how the beans were")
    with engine.begin() as conn:
        followups.done(conn, called, "sam", clock.now())  # done before it was due
    due = clock.now() + timedelta(hours=1)
    clock.advance(timedelta(hours=2))
    async with daemon(engine, clock, tmp_path):
        await eventually(lambda: bool(receiver.received), "followup.due reaches the receiver")
    (got,) = receiver.received
    assert verified(secret, got.headers, got.body)
    event = json.loads(got.body)
    assert event["type"] == "followup.due"
    assert event["data"] == {
        "followup_id": grinder,
        "customer_id": event["data"]["customer_id"],
        "email": maria,
        "due_at": due.isoformat().replace("+00:00", "Z"),
        "note": "Call about the grinder",
        "assignee": "sam",
    }
    later = plan(engine, clock, maria, timedelta(minutes=5), "Send the invoice again")
    clock.advance(timedelta(minutes=10))
    async with daemon(engine, clock, tmp_path):  # restarted: only what is newly due is told
        await eventually(lambda: len(receiver.received) > 1, "the newly due one is told")
    assert [e["followup_id"] for e in told(receiver)] == [grinder, later]


async def test_a_followup_moved_to_a_later_time_is_told_again_when_that_comes(
    engine: Engine, clock: ManualClock, receiver: Receiver, maria: str
) -> None:
    register(engine, clock, receiver.url, EventType.FOLLOWUP_DUE)
    grinder = plan(engine, clock, maria, timedelta(hours=1), "Call about the grinder")
    assert tell(engine, clock) == 0  # not due yet
    clock.advance(timedelta(hours=1))
    assert tell(engine, clock) == 1
    assert tell(engine, clock) == 0
    with engine.begin() as conn:
        followups.snooze(conn, grinder, timedelta(days=1), clock.now())
    clock.advance(timedelta(hours=23, minutes=59))
    assert tell(engine, clock) == 0
    clock.advance(timedelta(minutes=1))
    assert tell(engine, clock) == 1
    assert await worker(engine, clock).deliver_due() == 2
    first, second = told(receiver)
    assert (first["followup_id"], second["followup_id"]) == (grinder, grinder)
    assert second["due_at"] != first["due_at"]


async def test_two_daemons_passing_at_once_tell_a_followup_once(
    engine: Engine, clock: ManualClock, receiver: Receiver, maria: str
) -> None:
    register(engine, clock, receiver.url, EventType.FOLLOWUP_DUE)
    plan(engine, clock, maria, timedelta(minutes=1), "Call about the grinder")
    clock.advance(timedelta(minutes=1))
    counts: list[int] = []
    with engine.connect() as first:
        with first.begin():
            counts.append(followups.tell_due(first, clock.now()))
            other = threading.Thread(target=lambda: counts.append(tell(engine, clock)))
            other.start()  # waits for the first pass's row lock, or its SQLite write lock
        other.join(EVENT_SECONDS)
    assert sorted(counts) == [0, 1]
    with engine.connect() as conn:
        assert len(deliveries.find(conn)) == 1


async def test_nothing_is_recorded_while_no_webhook_asks_for_due_followups(
    engine: Engine, clock: ManualClock, receiver: Receiver, maria: str
) -> None:
    register(engine, clock, receiver.url, EventType.CUSTOMER_UNSUBSCRIBED)
    plan(engine, clock, maria, timedelta(minutes=1), "Call about the grinder")
    clock.advance(timedelta(minutes=1))
    assert tell(engine, clock) == 1  # marked told all the same: a webhook added later
    register(engine, clock, receiver.url, EventType.FOLLOWUP_DUE)  # hears of what comes due
    assert tell(engine, clock) == 0  # from now on, not of the backlog
    with engine.connect() as conn:
        assert deliveries.find(conn) == []


def test_an_admin_asks_for_due_followups_with_the_command(
    mailer: Mailer, project: dict[str, str]
) -> None:
    mailer("db", "upgrade")
    project["MAILER_WEBHOOKS__ALLOW_PRIVATE"] = "true"
    mailer("webhooks", "add", "http://127.0.0.1:9/hooks", "--event", "followup.due")
    (listed,) = json.loads(mailer("webhooks", "list", "--json").stdout)
    assert listed["events"] == "followup.due"
