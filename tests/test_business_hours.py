"""Business hours and the reply time an acknowledgement promises, over fixed instants."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailer.core.config import BusinessHoursSettings
from mailer.inbound.business_hours import BusinessHours, reply_expected_by

SOFIA = ZoneInfo("Europe/Sofia")
MANILA = ZoneInfo("Asia/Manila")
WEEKDAYS = frozenset(range(5))
EVERY_DAY = frozenset(range(7))
FOUR_HOURS = timedelta(hours=4)

BG_DESK = BusinessHours(zone=SOFIA, days=WEEKDAYS, open=time(9, 0), close=time(17, 0), country="BG")


def sofia(month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=SOFIA)


def promise(received: datetime, within: timedelta = FOUR_HOURS) -> datetime:
    return reply_expected_by(received, BG_DESK, within)


# --- reply_expected_by: what the acknowledgement promises ---------------------------------


def test_message_received_during_open_hours_is_answered_the_same_day() -> None:
    assert promise(sofia(1, 19, 10, 0)) == sofia(1, 19, 14, 0)


def test_promise_is_in_utc() -> None:
    due = promise(sofia(1, 19, 10, 0))
    assert due.tzinfo is UTC
    assert due == datetime(2026, 1, 19, 12, 0, tzinfo=UTC)


def test_friday_afternoon_message_is_answered_monday_morning() -> None:
    assert promise(sofia(1, 16, 16, 30)) == sofia(1, 19, 12, 30)


def test_friday_message_before_a_holiday_monday_is_answered_tuesday() -> None:
    # 2026-05-25 is the observed Day of Slavonic Alphabet in Bulgaria.
    assert promise(sofia(5, 22, 16, 30)) == sofia(5, 26, 12, 30)


def test_orthodox_easter_friday_and_monday_are_skipped() -> None:
    # Orthodox Easter 2026: Good Friday 10 April, Easter Monday 13 April.
    assert promise(sofia(4, 9, 16, 30)) == sofia(4, 14, 12, 30)


def test_promise_across_new_year_uses_the_next_years_holidays() -> None:
    # Thursday 31 December 2026; Friday 1 January 2027 is a holiday, then a weekend.
    due = promise(sofia(12, 31, 16, 30))
    assert due == datetime(2027, 1, 4, 12, 30, tzinfo=SOFIA)


def test_message_received_on_a_holiday_counts_from_the_next_working_opening() -> None:
    # Christmas Day 2026 is a Friday; its observed day off is Monday 28 December.
    assert promise(sofia(12, 25, 11, 0)) == sofia(12, 29, 13, 0)


def test_message_received_before_opening_counts_from_opening() -> None:
    assert promise(sofia(1, 19, 6, 45)) == sofia(1, 19, 13, 0)


def test_message_received_after_closing_counts_from_the_next_opening() -> None:
    assert promise(sofia(1, 19, 18, 0)) == sofia(1, 20, 13, 0)


def test_message_received_at_closing_time_counts_from_the_next_opening() -> None:
    assert promise(sofia(1, 19, 17, 0)) == sofia(1, 20, 13, 0)


def test_answer_due_exactly_at_closing_is_promised_for_closing() -> None:
    assert promise(sofia(1, 19, 13, 0)) == sofia(1, 19, 17, 0)


def test_promise_is_rounded_up_to_the_next_quarter_hour() -> None:
    assert promise(sofia(1, 19, 10, 7, 30)) == sofia(1, 19, 14, 15)
    assert promise(sofia(1, 19, 10, 15, 1)) == sofia(1, 19, 14, 30)


def test_promise_on_a_quarter_hour_is_not_rounded() -> None:
    assert promise(sofia(1, 19, 10, 45)) == sofia(1, 19, 14, 45)


def test_zone_far_from_utc_uses_its_own_days_and_holidays() -> None:
    # 15:00 Thursday in Manila is 07:00 UTC; Friday 12 June is Independence Day there.
    desk = BusinessHours(
        zone=MANILA, days=WEEKDAYS, open=time(9, 0), close=time(17, 0), country="PH"
    )
    received = datetime(2026, 6, 11, 7, 0, tzinfo=UTC)
    due = reply_expected_by(received, desk, FOUR_HOURS)
    assert due == datetime(2026, 6, 15, 11, 0, tzinfo=MANILA)
    assert due == datetime(2026, 6, 15, 3, 0, tzinfo=UTC)


def test_without_a_country_holidays_are_working_days() -> None:
    desk = BusinessHours(zone=SOFIA, days=WEEKDAYS, open=time(9, 0), close=time(17, 0))
    assert reply_expected_by(sofia(12, 25, 11, 0), desk, FOUR_HOURS) == sofia(12, 25, 15, 0)


# --- Daylight saving time: the wall clock decides ----------------------------------------


def test_working_day_keeps_its_eight_hours_when_dst_changes_outside_them() -> None:
    desk = BusinessHours(zone=SOFIA, days=EVERY_DAY, open=time(9, 0), close=time(17, 0))
    for day in (sofia(3, 29, 9, 0), sofia(10, 25, 9, 0)):
        assert desk.add_working_time(day, timedelta(hours=8)) == day.replace(hour=17)


def test_spring_forward_inside_opening_hours_shortens_the_day() -> None:
    # Sofia skips 03:00-04:00 on Sunday 29 March 2026: 01:00-09:00 is seven hours.
    desk = BusinessHours(zone=SOFIA, days=EVERY_DAY, open=time(1, 0), close=time(9, 0))
    opening = sofia(3, 29, 1, 0)
    assert desk.add_working_time(opening, timedelta(hours=7)) == sofia(3, 29, 9, 0)
    assert desk.add_working_time(opening, timedelta(hours=8)) == sofia(3, 30, 2, 0)


def test_fall_back_inside_opening_hours_lengthens_the_day() -> None:
    # Sofia repeats 03:00-04:00 on Sunday 25 October 2026: 01:00-09:00 is nine hours.
    desk = BusinessHours(zone=SOFIA, days=EVERY_DAY, open=time(1, 0), close=time(9, 0))
    opening = sofia(10, 25, 1, 0)
    assert desk.add_working_time(opening, timedelta(hours=9)) == sofia(10, 25, 9, 0)
    assert desk.add_working_time(opening, timedelta(hours=10)) == sofia(10, 26, 2, 0)


def test_promise_across_a_dst_change_keeps_local_opening_hours() -> None:
    # Friday 16:30 EET; Monday's 09:00 is EEST, one hour less after UTC.
    assert promise(sofia(3, 27, 16, 30)) == datetime(2026, 3, 30, 9, 30, tzinfo=UTC)


# --- is_open and next_open ------------------------------------------------------------


def test_desk_is_open_from_opening_until_just_before_closing() -> None:
    assert BG_DESK.is_open(sofia(1, 19, 9, 0))
    assert BG_DESK.is_open(sofia(1, 19, 16, 59, 59))
    assert not BG_DESK.is_open(sofia(1, 19, 17, 0))
    assert not BG_DESK.is_open(sofia(1, 19, 8, 59, 59))


def test_desk_is_closed_at_weekends_and_on_holidays() -> None:
    assert not BG_DESK.is_open(sofia(1, 17, 11, 0))
    assert not BG_DESK.is_open(sofia(3, 3, 11, 0))


def test_next_open_is_the_instant_itself_when_open() -> None:
    assert BG_DESK.next_open(sofia(1, 19, 11, 0)) == datetime(2026, 1, 19, 9, 0, tzinfo=UTC)


def test_next_open_after_a_weekend_is_monday_opening_in_utc() -> None:
    opening = BG_DESK.next_open(sofia(1, 17, 11, 0))
    assert opening == sofia(1, 19, 9, 0)
    assert opening.tzinfo is UTC


# --- Configuration and misuse ------------------------------------------------------------


def test_from_settings_maps_day_names_to_weekday_numbers() -> None:
    settings = BusinessHoursSettings.model_validate(
        {"timezone": "Europe/Sofia", "days": ["mon", "sun"], "open": "08:30", "holidays": "BG"}
    )
    desk = BusinessHours.from_settings(settings)
    assert desk == BusinessHours(
        zone=SOFIA, days=frozenset({0, 6}), open=time(8, 30), close=time(17, 0), country="BG"
    )


def test_no_working_days_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one working day"):
        BusinessHours(zone=SOFIA, days=frozenset(), open=time(9, 0), close=time(17, 0))
    with pytest.raises(ValueError, match="at least one working day"):
        BusinessHours.from_settings(BusinessHoursSettings(days=[]))


def test_invalid_days_hours_and_country_are_refused() -> None:
    with pytest.raises(ValueError, match="0 \\(Monday\\) to 6"):
        BusinessHours(zone=SOFIA, days=frozenset({7}), open=time(9, 0), close=time(17, 0))
    with pytest.raises(ValueError, match="earlier than closing"):
        BusinessHours(zone=SOFIA, days=WEEKDAYS, open=time(17, 0), close=time(9, 0))
    with pytest.raises(ValueError, match="'XX'"):
        BusinessHours(zone=SOFIA, days=WEEKDAYS, open=time(9, 0), close=time(17, 0), country="XX")


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        promise(datetime(2026, 1, 19, 10, 0))


def test_negative_answer_time_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        promise(sofia(1, 19, 10, 0), timedelta(hours=-1))


def test_working_time_beyond_the_search_horizon_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit in 400 days"):
        BG_DESK.add_working_time(sofia(1, 19, 10, 0), timedelta(days=200))
