"""Mail set off by what a customer did in the shop: an ``event`` schedule answers each
cart_abandoned an hour later unless order_placed came first, once per event, through the
throttle, fired with a moved clock on SQLite and PostgreSQL.

Customers are the shared schedule people (tests/conftest.py): maria (bg) agreed to
marketing, ivan did not.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select, update

from mailer.core.clock import ManualClock
from mailer.customers import events
from mailer.customers.profiles import CUSTOMERS
from mailer.outbound import throttle
from mailer.outbound.delivery import Delivery
from mailer.outbound.outbox import OUTBOX
from mailer.scheduling import dryrun, firing, triggers
from mailer.scheduling.schedules import EventSchedule, load_schedules
from mailer.store.models import OutboxStatus
from tests.conftest import FIRING
from tests.smtp_sink import Sink

FIRING_ZONE = ZoneInfo(FIRING.fallback_zone)
SEEN = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # when mailer first saw the schedule
CART = {
    "items": [{"title": "Ethiopia Yirgacheffe 250 g", "quantity": 2}],
    "cart_url": "https://shop.example/cart/7",
}
REMINDER = EventSchedule(
    template="cart_abandoned",
    event="cart_abandoned",
    delay=timedelta(hours=1),
    unless=["order_placed"],
)


def happen(engine: Engine, email: str, name: str, at: datetime, **payload: Any) -> None:
    """An event as the API stores it."""
    draft = events.Draft(email=email, name=name, occurred_at=at, payload=payload)
    with engine.begin() as conn:
        events.record(conn, [draft], at, "api:shop")


def fire(engine: Engine, at: datetime) -> list[firing.RunResult]:
    return firing.fire_due(engine, {"cart": REMINDER}, at, FIRING)


def written(engine: Engine, email: str | None = None) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = select(OUTBOX).order_by(OUTBOX.c.id)
        if email is not None:
            query = query.where(OUTBOX.c.to_address == email)
        return [dict(row) for row in conn.execute(query).mappings()]


@pytest.fixture
def seen(engine: Engine, people: None) -> Engine:
    firing.first_seen(engine, ["cart"], SEEN)
    return engine


# Decisions.


def test_an_event_is_due_after_its_delay_within_valid_for_and_never_before_first_seen() -> None:
    trigger = triggers.Trigger(
        event="cart_abandoned",
        unless=("order_placed",),
        delay=timedelta(hours=1),
        valid_for=timedelta(days=1),
        since=SEEN,
    )
    now = SEEN + timedelta(hours=3)
    assert triggers.window(trigger, now) == (SEEN, now - timedelta(hours=1))
    late = SEEN + timedelta(days=5)
    assert triggers.window(trigger, late) == (
        late - timedelta(days=1, hours=1),
        late - timedelta(hours=1),
    )
    at = SEEN + timedelta(minutes=5)
    later = [
        ("viewed_product", at + timedelta(minutes=1)),
        ("order_placed", at + timedelta(minutes=9)),
    ]
    assert triggers.cancelled_by(at, later, trigger.unless) == "order_placed"
    assert (
        triggers.cancelled_by(at, [("order_placed", at - timedelta(minutes=1))], trigger.unless)
        is None
    )


# Firing on each database.


def test_a_cart_reminder_is_written_after_the_delay_once_per_event(seen: Engine) -> None:
    at = SEEN + timedelta(minutes=5)
    happen(seen, "maria@example.bg", "cart_abandoned", at, **CART)
    fire(seen, at + timedelta(minutes=59))
    assert written(seen) == []  # not an hour yet
    (result,) = fire(seen, at + timedelta(hours=1))
    assert (result.queued, result.skipped) == (1, 0)
    for minutes in (61, 62, 90):  # later passes, and a restart, add nothing
        assert [r.queued for r in fire(seen, at + timedelta(minutes=minutes))] == [0]
    (message,) = written(seen)
    with seen.connect() as conn:
        event_id = conn.execute(select(events.EVENTS.c.id)).scalar_one()
    assert message["dedupe_key"] == f"cart:{message['customer_id']}:event-{event_id}"
    assert (message["status"], message["category"]) == (OutboxStatus.QUEUED, "marketing")
    assert message["context"]["event"]["payload"] == CART
    assert message["context"]["event"]["name"] == "cart_abandoned"
    # a second cart the next day is another event: another reminder
    happen(seen, "maria@example.bg", "cart_abandoned", at + timedelta(days=1), **CART)
    fire(seen, at + timedelta(days=1, hours=1))
    assert len(written(seen, "maria@example.bg")) == 2


def test_an_order_before_the_send_cancels_the_reminder(seen: Engine) -> None:
    """Before its time nothing is written; once written but still waiting for the road
    (the throttle deferred it), it is withdrawn with the reason."""
    at = SEEN + timedelta(minutes=5)
    happen(seen, "maria@example.bg", "cart_abandoned", at, **CART)
    happen(seen, "maria@example.bg", "order_placed", at + timedelta(minutes=30))
    happen(seen, "aroha@example.nz", "cart_abandoned", at)
    happen(seen, "aroha@example.nz", "viewed_product", at + timedelta(minutes=30))  # not a cancel
    fire(seen, at + timedelta(hours=2))
    assert written(seen, "maria@example.bg") == []
    (to_aroha,) = written(seen, "aroha@example.nz")
    assert to_aroha["status"] == OutboxStatus.QUEUED
    happen(seen, "aroha@example.nz", "order_placed", at + timedelta(hours=3))
    fire(seen, at + timedelta(hours=4))
    (to_aroha,) = written(seen, "aroha@example.nz")
    assert (to_aroha["status"], to_aroha["reason"]) == (
        OutboxStatus.SKIPPED,
        "order_placed arrived before it was sent",
    )


def test_who_may_not_receive_marketing_is_barred_with_the_reason(seen: Engine) -> None:
    at = SEEN + timedelta(minutes=5)
    with seen.begin() as conn:
        conn.execute(
            update(CUSTOMERS)
            .where(CUSTOMERS.c.email == "siti@example.id")
            .values(unsubscribed_at=SEEN)
        )
    for email in ("ivan@example.bg", "siti@example.id", "stranger@example.com"):
        happen(seen, email, "cart_abandoned", at)
    (result,) = fire(seen, at + timedelta(hours=1))
    assert (result.queued, result.skipped) == (0, 3)
    reasons = {row["to_address"]: (row["status"], row["reason"]) for row in written(seen)}
    assert reasons == {
        "ivan@example.bg": ("skipped", "no consent for marketing"),
        "siti@example.id": ("skipped", "unsubscribed"),
        "stranger@example.com": ("skipped", "no consent for marketing"),  # a lead the event made
    }


def test_events_before_the_schedule_existed_or_past_valid_for_do_not_fire(seen: Engine) -> None:
    happen(seen, "maria@example.bg", "cart_abandoned", SEEN - timedelta(hours=2))
    happen(seen, "aroha@example.nz", "cart_abandoned", SEEN + timedelta(minutes=1))
    happen(seen, "jose@example.ph", "cart_abandoned", SEEN + timedelta(minutes=2))
    fire(seen, SEEN + timedelta(hours=3))
    assert [row["to_address"] for row in written(seen)] == ["aroha@example.nz", "jose@example.ph"]
    happen(seen, "dana@example.com", "cart_abandoned", SEEN + timedelta(hours=4))
    fire(seen, SEEN + timedelta(days=3))  # the daemon was down: a day past its time, let go
    assert written(seen, "dana@example.com") == []


def test_passes_racing_in_two_threads_write_each_event_once(seen: Engine) -> None:
    at = SEEN + timedelta(minutes=5)
    for n in range(50):
        happen(seen, f"buyer{n}@example.com", "cart_abandoned", at)
    start = threading.Barrier(3)
    failures: list[BaseException] = []

    def pass_() -> None:
        start.wait()
        try:
            fire(seen, at + timedelta(hours=1))
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=pass_) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(written(seen)) == 50


def test_the_dry_run_names_each_event_and_what_cancelled_it(seen: Engine) -> None:
    at = SEEN + timedelta(minutes=5)
    happen(seen, "maria@example.bg", "cart_abandoned", at)
    happen(seen, "aroha@example.nz", "cart_abandoned", at)
    happen(seen, "aroha@example.nz", "order_placed", at + timedelta(minutes=10))
    rules = throttle.Rules(min_gap=timedelta(0), quiet_hours=None, caps={})
    now = at + timedelta(hours=1)

    def fates() -> dict[str, dryrun.Fate]:
        (plan,) = firing.due_plans(
            seen, "cart", REMINDER, now, FIRING, [], since=SEEN, dry_run=True
        )
        found = dryrun.forecast(seen, plan, rules, FIRING_ZONE)
        return {fate.email: fate for fate in found.sample}

    before = fates()
    assert (before["maria@example.bg"].action, before["aroha@example.nz"].action) == (
        "send",
        "cancelled",
    )
    assert before["aroha@example.nz"].reason.startswith(
        "order_placed came first; cart_abandoned 2026-11-24 12:05 UTC (event "
    )
    assert written(seen) == []
    fire(seen, now)
    assert fates()["maria@example.bg"].action == "already queued"


# What the customer receives.


async def test_the_reminder_reaches_the_customer_with_the_carts_items_and_stays_sent(
    seen: Engine, clock: ManualClock, delivering: tuple[Delivery, Sink]
) -> None:
    delivery, sink = delivering
    at = SEEN + timedelta(minutes=5)
    happen(seen, "maria@example.bg", "cart_abandoned", at, **CART)
    clock.set(at + timedelta(hours=1))
    fire(seen, clock.now())
    await delivery.deliver_due()
    fire(seen, clock.now() + timedelta(minutes=1))
    await delivery.deliver_due()
    (mail,) = [r for r in sink.received if r.rcpt_tos == ["maria@example.bg"]]
    html = mail.message.get_body(("html",))
    assert html is not None
    text = html.get_content()
    assert "Ethiopia Yirgacheffe 250 g" in text and "https://shop.example/cart/7" in text
    assert "кошница" in text  # in her language
    # she orders after the reminder went: what was sent stays sent, and nothing more goes
    happen(seen, "maria@example.bg", "order_placed", clock.now() + timedelta(minutes=5))
    clock.advance(timedelta(minutes=10))
    fire(seen, clock.now())
    await delivery.deliver_due()
    (message,) = written(seen, "maria@example.bg")
    assert message["status"] == OutboxStatus.SENT and len(sink.received) == 1


# Mistakes in a schedule file: one line each, with file and key.


def test_each_mistake_in_an_event_schedule_names_its_file_and_key(tmp_path: Path) -> None:
    files = {
        "cart.toml": 'kind = "event"\ntemplate = "cart_abandoned"\ndelay = "1 hour"\n',
        "nameless.toml": 'kind = "event"\ntemplate = "cart_abandoned"\ndelay = "1h"\n',
        "odd.toml": (
            'kind = "event"\ntemplate = "cart_abandoned"\nevent = "Cart Abandoned"\n'
            'delay = "-1h"\nunless = "order_placed"\ncategory = "transactional"\n'
        ),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    loaded, problems = load_schedules(tmp_path, {"cart_abandoned"}, ManualClock(SEEN))
    said = {p.where.removeprefix(f"{tmp_path}/"): p.message for p in problems}
    assert loaded == {}
    assert said == {
        "cart.toml: event": "is required",
        "cart.toml: delay": "'1 hour' is not a duration; write a number and a unit, e.g. \"90s\","
        ' "15m", "20h", "7d", "2w" or "1h30m"',
        "nameless.toml: event": "is required",
        "odd.toml: event": "'Cart Abandoned' is not an event name: lower case, digits and _ . : -,"
        " e.g. 'cart_abandoned'",
        "odd.toml: delay": "'-1h' is not a duration; write a number and a unit, e.g. \"90s\","
        ' "15m", "20h", "7d", "2w" or "1h30m"',
        "odd.toml: unless": 'is not a list; write e.g. ["coffee", "tea"]',
        "odd.toml: category": "'transactional': write 'marketing' (a cart reminder, an offer) or"
        " 'relationship' (a welcome)",
    }
    assert all("\n" not in p.message for p in problems)
