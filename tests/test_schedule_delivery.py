"""Schedules all the way to a real SMTP server: what customers actually receive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from icalendar import Calendar
from sqlalchemy import Engine, select

from mailer import daemon
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.outbound.delivery import Delivery
from mailer.outbound.outbox import OUTBOX
from mailer.outbound.smtp import SmtpTarget
from mailer.scheduling import firing
from mailer.scheduling.schedules import (
    Audience,
    BirthdaySchedule,
    NewsletterSchedule,
    WebinarSchedule,
)
from mailer.store.models import OutboxStatus
from tests.conftest import FIRING
from tests.smtp_sink import Sink, listening

DECEMBER_1 = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)  # 09:00 in Sofia


@pytest.fixture
async def road(
    engine: Engine, cfg: Config, clock: ManualClock, people: None
) -> AsyncIterator[tuple[Delivery, Sink]]:
    """The shipped throttle: marketing at most once a day, 20 hours apart."""
    sink = Sink()
    async with listening(sink) as port:
        yield (
            daemon.build_delivery(cfg, engine, clock, SmtpTarget(host="127.0.0.1", port=port)),
            sink,
        )


async def test_a_webinar_invitation_wins_the_days_slot_over_the_newsletter_by_priority(
    engine: Engine, clock: ManualClock, road: tuple[Delivery, Sink]
) -> None:
    delivery, sink = road
    newsletter = NewsletterSchedule(
        template="newsletter",
        cron="0 9 1 * *",
        timezone="Europe/Sofia",
        audience=Audience(tags_any=["newsletter"]),
        priority=10,
        valid_for=timedelta(days=3),
        params={"headline": "December", "intro": "News."},
    )
    webinar = WebinarSchedule(
        template="webinar_invite",
        title="Spring roasting",
        starts_at=DECEMBER_1 + timedelta(days=14),
        duration=timedelta(hours=1),
        join_url="https://meet.example/spring",
        organizer="events@northwind-roasters.example",
        invite_at=DECEMBER_1,
        audience=Audience(locales=["bg"]),
        priority=15,
    )
    clock.set(DECEMBER_1)
    schedules = {"news": newsletter, "spring": webinar}
    firing.fire_due(engine, schedules, clock.now(), FIRING)

    await delivery.deliver_due()

    to_maria = [r for r in sink.received if r.rcpt_tos == ["maria@example.bg"]]
    (invitation,) = [r.message for r in to_maria]
    assert invitation["Subject"] == "Покана за уебинар: Spring roasting"
    (part,) = [p for p in invitation.walk() if p.get_content_type() == "text/calendar"]
    event = Calendar.from_ical(part.get_payload(decode=True)).walk("VEVENT")[0]
    assert str(event["UID"]) == "webinar-spring@northwind-roasters.example"
    assert str(event["ATTENDEE"]) == "mailto:maria@example.bg"
    with engine.connect() as conn:
        news = conn.execute(
            select(OUTBOX.c.status, OUTBOX.c.reason).where(
                OUTBOX.c.to_address == "maria@example.bg", OUTBOX.c.template == "newsletter"
            )
        ).one()
    assert news.status == OutboxStatus.DEFERRED and "marketing" in news.reason
    assert any(r.rcpt_tos == ["siti@example.id"] for r in sink.received), "no webinar for siti"


async def test_a_birthday_greeting_arrives_in_the_customers_language(
    engine: Engine, clock: ManualClock, road: tuple[Delivery, Sink]
) -> None:
    delivery, sink = road
    clock.set(datetime(2027, 2, 28, 7, 0, tzinfo=UTC))  # 09:00 in Sofia; 2027 has no 29th
    firing.fire_due(
        engine, {"birthdays": BirthdaySchedule(template="birthday")}, clock.now(), FIRING
    )

    await delivery.deliver_due()

    by_recipient = {r.rcpt_tos[0]: r.message for r in sink.received}
    assert set(by_recipient) >= {"maria@example.bg", "ivan@example.bg"}
    assert by_recipient["maria@example.bg"]["Subject"] == "Честит рожден ден, Мария! ☕"
    assert by_recipient["maria@example.bg"]["List-Unsubscribe"]
