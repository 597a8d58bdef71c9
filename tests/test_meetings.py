"""Meetings: a follow-up whose invitation reaches the customer's calendar, is updated when
moved and withdrawn when cancelled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar
from sqlalchemy import Engine, select

from mailer import daemon
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.core.errors import MailerError, NotFound
from mailer.customers import followups
from mailer.customers.followups import MeetingPlan, NewFollowUp
from mailer.outbound.outbox import OUTBOX
from mailer.outbound.smtp import SmtpTarget
from mailer.relationship import meetings
from mailer.relationship.meetings import Sender
from mailer.staff import users
from mailer.store.models import Role
from tests.conftest import PASSWORD
from tests.smtp_sink import Sink, listening

SENDER = Sender("support@northwind.example", "Northwind")
SOFIA = ZoneInfo("Europe/Sofia")
STARTS = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)  # 10:00 in Sofia


def _row(**changes: Any) -> dict[str, Any]:
    row = {"id": 7, "due_at": STARTS, "duration_minutes": 45, "place": "Room 2", "sequence": 0}
    return {**row, **changes}


def _context(method: meetings.Method = "REQUEST", **changes: Any) -> dict[str, Any]:
    return meetings.context(
        _row(**changes), SENDER, organizer="Sam Ivanova", attendees=["Rio"], method=method
    )


def test_a_meetings_event_keeps_its_uid_and_names_the_organizer_on_the_support_address() -> None:
    calendar = _context()["calendar"]
    assert calendar["uid"] == "meeting-7@northwind.example"
    assert (calendar["sequence"], calendar["method"]) == (0, "REQUEST")
    assert (calendar["organizer"], calendar["organizer_name"]) == (
        "support@northwind.example",
        "Sam Ivanova",
    )
    assert calendar["ends_at"] - calendar["starts_at"] == timedelta(minutes=45)
    assert calendar["title"] == "Northwind: Sam Ivanova"
    assert _context()["meeting"]["changed"] is False


def test_a_moved_meeting_is_a_later_version_and_a_cancelled_one_says_cancel() -> None:
    moved = _context(sequence=1, place="https://meet.example/x")
    assert moved["calendar"]["uid"] == "meeting-7@northwind.example"
    assert moved["calendar"]["sequence"] == 1
    assert (moved["meeting"]["changed"], moved["meeting"]["online"]) == (True, True)
    cancelled = _context("CANCEL", sequence=2)
    assert (cancelled["calendar"]["method"], cancelled["calendar"]["sequence"]) == ("CANCEL", 2)
    assert cancelled["meeting"]["cancelled"] and not cancelled["meeting"]["changed"]
    assert meetings.dedupe_key(7, 1) != meetings.dedupe_key(7, 2)


@pytest.fixture
def staff_in_sofia(engine: Engine, clock: ManualClock, people: None) -> None:
    with engine.begin() as conn:
        users.add(conn, "sam", Role.SUPPORT, PASSWORD, clock.now(), timezone="Europe/Sofia")
        users.change(conn, "sam", display_name="Sam Ivanova")
        users.add(conn, "rio", Role.SUPPORT, PASSWORD, clock.now(), timezone="Asia/Manila")


def _schedule(
    engine: Engine, clock: ManualClock, at: str, sender: Sender = SENDER, **plan: Any
) -> int:
    with engine.begin() as conn:
        new = NewFollowUp(
            customer_id=followups.customer_id(conn, "maria@example.bg"),
            due_at=followups.due_for(conn, at, "sam", clock.now(), SOFIA),
            note="talk about the grinder",
            created_by="sam",
            assignee="sam",
            meeting=MeetingPlan(**{"duration": timedelta(minutes=30), "place": "Room 2", **plan}),
        )
        return meetings.schedule(conn, new, sender, clock.now())


def _event(message: EmailMessage) -> tuple[str, Any]:
    [invite] = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    assert isinstance(invite, EmailMessage)
    calendar = Calendar.from_ical(invite.get_content())
    [event] = calendar.walk("VEVENT")
    assert invite.get_param("method") == calendar["METHOD"]
    return str(calendar["METHOD"]), event


async def test_invitation_update_and_cancellation_reach_the_customers_calendar(
    engine: Engine, cfg: Config, clock: ManualClock, staff_in_sofia: None
) -> None:
    sender = Sender.from_config(cfg)
    meeting_id = _schedule(engine, clock, "2026-11-26 10:00", sender, attendees=("rio",))
    with engine.begin() as conn:
        meetings.move(
            conn,
            meeting_id,
            datetime(2026, 11, 27, 9, 0, tzinfo=UTC),
            MeetingPlan(duration=timedelta(hours=1), place="https://meet.example/maria"),
            sender=sender,
            now=clock.now(),
        )
        meetings.cancel(conn, meeting_id, "sam", sender, clock.now())
    sink = Sink()
    async with listening(sink) as port:
        delivery = daemon.build_delivery(
            cfg, engine, clock, SmtpTarget(host="127.0.0.1", port=port)
        )
        await delivery.deliver_due()
    messages = [r.message for r in sink.received]
    assert [m["To"].addresses[0].addr_spec for m in messages] == ["maria@example.bg"] * 3
    first, moved, cancelled = sorted(messages, key=lambda m: _event(m)[1]["SEQUENCE"])
    assert "Sam Ivanova" in str(first["From"]) and "<support@northwind-roasters.example>" in str(
        first["From"]
    )
    method, event = _event(first)
    assert (method, event["SEQUENCE"], str(event["UID"])) == (
        "REQUEST",
        0,
        f"meeting-{meeting_id}@northwind-roasters.example",
    )
    assert event.decoded("DTSTART") == datetime(2026, 11, 26, 8, 0, tzinfo=UTC)  # 10:00 Sofia
    assert event.decoded("DTEND") - event.decoded("DTSTART") == timedelta(minutes=30)
    assert str(event["LOCATION"]) == "Room 2" and "URL" not in event
    assert event["ORGANIZER"].params["CN"] == "Sam Ivanova"
    assert str(event["ATTENDEE"]) == "mailto:maria@example.bg"
    method, event = _event(moved)
    assert (method, event["SEQUENCE"]) == ("REQUEST", 1)
    assert event.decoded("DTSTART") == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert str(event["URL"]) == "https://meet.example/maria"
    assert str(moved["Subject"]).startswith("Промяна: срещата ни")
    method, event = _event(cancelled)
    assert (method, event["SEQUENCE"], event["STATUS"]) == ("CANCEL", 2, "CANCELLED")
    assert str(cancelled["Subject"]).startswith("Отменена")


def test_a_meeting_done_sends_nothing_and_cannot_be_snoozed(
    engine: Engine, clock: ManualClock, staff_in_sofia: None
) -> None:
    meeting_id = _schedule(engine, clock, "2d")
    with engine.begin() as conn:
        with pytest.raises(MailerError, match="is a meeting: move it instead"):
            followups.snooze(conn, meeting_id, timedelta(days=1), clock.now())
        followups.done(conn, meeting_id, "sam", clock.now())
        keys = conn.execute(select(OUTBOX.c.dedupe_key)).scalars().all()
        assert keys == [meetings.dedupe_key(meeting_id, 0)]
        with pytest.raises(NotFound, match=f"no open meeting {meeting_id}"):
            meetings.cancel(conn, meeting_id, "sam", SENDER, clock.now())


def test_a_meeting_in_the_past_or_with_strangers_or_without_a_place_is_refused(
    engine: Engine, clock: ManualClock, staff_in_sofia: None
) -> None:
    with pytest.raises(MailerError, match="a meeting cannot start in the past"):
        _schedule(engine, clock, "2026-11-24 13:00")  # 11:00 UTC, an hour ago
    with pytest.raises(NotFound, match="no staff user named 'zed'"):
        _schedule(engine, clock, "1d", attendees=("zed",))
    with pytest.raises(MailerError, match="needs a place or a link"):
        _schedule(engine, clock, "1d", place=" ")
    with pytest.raises(MailerError, match="duration: '1 hour' is not a duration"):
        meetings.plan("1 hour", "Room 2")
    with engine.connect() as conn:
        assert conn.execute(select(OUTBOX.c.id)).first() is None
