"""When schedules are due, as plain data: no database, no clock but the one passed in."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from mailer.scheduling import occurrences
from mailer.scheduling.occurrences import EVERYONE, WebinarState
from mailer.scheduling.schedules import BirthdaySchedule, NewsletterSchedule, WebinarSchedule

ZONES = ["Pacific/Auckland", "America/Los_Angeles"]
STARTS = datetime(2027, 5, 20, 13, tzinfo=UTC)


def webinar(**changes: object) -> WebinarSchedule:
    values: dict[str, object] = {
        "title": "Spring roasting",
        "starts_at": STARTS,
        "duration": timedelta(hours=1),
        "join_url": "https://meet.example/spring",
        "organizer": "events@example.com",
        "invite_at": STARTS - timedelta(days=14),
        "reminder_template": "webinar_reminder",
        "reminders": [timedelta(days=1), timedelta(hours=1)],
        "valid_for": timedelta(minutes=30),
    }
    return WebinarSchedule.model_validate(values | changes)


@pytest.mark.parametrize(
    ("day", "feb29", "expected"),
    [
        (date(2027, 2, 28), "feb28", [(2, 28), (2, 29)]),
        (date(2027, 3, 1), "feb28", [(3, 1)]),
        (date(2027, 3, 1), "mar1", [(3, 1), (2, 29)]),
        (date(2028, 2, 28), "feb28", [(2, 28)]),
        (date(2028, 2, 29), "mar1", [(2, 29)]),
    ],
)
def test_birthdays_on_a_day(day: date, feb29: str, expected: list[tuple[int, int]]) -> None:
    assert occurrences.birthdays_on(day, feb29) == expected


def test_the_next_fire_is_the_earliest_zone() -> None:
    monthly = NewsletterSchedule(template="newsletter", cron="0 9 1 * *")
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    assert occurrences.next_fire(monthly, ZONES, now) == datetime(2026, 11, 30, 20, tzinfo=UTC)
    assert occurrences.next_fire(monthly.model_copy(update={"enabled": False}), ZONES, now) is None


def test_a_fixed_zone_newsletter_has_one_trigger_and_a_webinar_none_per_zone() -> None:
    fixed = NewsletterSchedule(template="newsletter", cron="0 9 1 * *", timezone="Asia/Manila")
    assert occurrences.zones_for(fixed, ZONES) == ["Asia/Manila"]
    assert occurrences.zones_for(BirthdaySchedule(template="birthday"), ZONES) == sorted(ZONES)
    assert occurrences.zones_for(webinar(), ZONES) == [EVERYONE]


def test_webinar_steps_are_named_and_stop_at_the_start() -> None:
    before = STARTS - timedelta(hours=1)
    (reminder,) = occurrences.webinar_steps(webinar(), WebinarState(), before)
    assert reminder.key == "reminder-1h" and reminder.valid_until == before + timedelta(minutes=30)
    assert occurrences.webinar_steps(webinar(), WebinarState(2), STARTS) == []
    keys = [o.key for o in occurrences.webinar_steps(webinar(), WebinarState(2), before)]
    assert keys == ["reminder-1h@2", "update-2"]
    cancelled = occurrences.webinar_steps(webinar(cancelled=True), WebinarState(3), before)
    assert [o.key for o in cancelled] == ["cancel"]


def test_an_every_minute_crontab_over_a_long_window_is_bounded() -> None:
    busy = NewsletterSchedule(
        template="newsletter", cron="* * * * *", timezone="UTC", valid_for=timedelta(days=30)
    )
    found = occurrences.due(busy, [], datetime(2026, 12, 1, tzinfo=UTC))
    assert len(found) == occurrences.MAX_PER_WINDOW
