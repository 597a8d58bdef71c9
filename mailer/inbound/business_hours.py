"""When is the support desk open, and by when will a human answer?

The acknowledgement promises a reply time, so it must follow the calendar people actually
work by: opening hours are local wall-clock times in the business's zone (a DST change
shortens or lengthens a working day only if it falls inside the opening hours), some
weekdays are off, and so are the country's public holidays. Everything here is a pure
function of that configuration and the instants passed in; every answer is aware, in UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import holidays

from mailer.core.fieldtypes import NO_WORKING_DAY, holiday_country

if TYPE_CHECKING:
    from mailer.core.config import BusinessHoursSettings

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Every search for working time stops after this many calendar days: far beyond any real
# run of days off, and a bound on every loop whatever the configuration says.
MAX_SEARCH_DAYS = 400
_QUARTER = timedelta(minutes=15)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=64)
def _holiday_dates(country: str, year: int) -> frozenset[date]:
    """A country's public holidays in one year, built once: the holidays package is slow."""
    return frozenset(holidays.country_holidays(country, years=year))


@dataclass(frozen=True, slots=True, kw_only=True)
class BusinessHours:
    """The desk's opening hours, working weekdays (Monday = 0) and public holidays."""

    zone: ZoneInfo
    days: frozenset[int]
    open: time
    close: time
    country: str = ""

    def __post_init__(self) -> None:
        """Refuse at start-up what would otherwise loop forever or promise nonsense."""
        if not self.days:
            raise ValueError(NO_WORKING_DAY)
        if not self.days <= frozenset(range(7)):
            raise ValueError(f"working days are 0 (Monday) to 6 (Sunday), got {sorted(self.days)}")
        if self.open >= self.close:
            raise ValueError(f"opening time {self.open} must be earlier than closing {self.close}")
        holiday_country(self.country)

    @classmethod
    def from_settings(cls, settings: BusinessHoursSettings) -> BusinessHours:
        days = frozenset(WEEKDAYS.index(day) for day in settings.days)
        return cls(
            zone=settings.timezone,
            days=days,
            open=settings.open,
            close=settings.close,
            country=settings.holidays,
        )

    def is_open(self, when: datetime) -> bool:
        return self.next_open(when) == _utc(when, "when")

    def next_open(self, when: datetime) -> datetime:
        """`when` itself (in UTC) if the desk is open then, else its next opening."""
        moment = _utc(when, "when")
        for opens, _ in self._windows(moment):
            return max(opens, moment)
        raise ValueError(f"no working day within {MAX_SEARCH_DAYS} days of {moment}")

    def add_working_time(self, start: datetime, amount: timedelta) -> datetime:
        """The instant (in UTC) when `amount` of open time has passed since `start`.

        Only time inside opening windows counts, so time asked for after closing, at a
        weekend or on a holiday is served from the next working day's opening.
        """
        if amount < timedelta(0):
            raise ValueError(f"working time cannot be negative, got {amount}")
        moment = _utc(start, "start")
        remaining = amount
        for opens, closes in self._windows(moment):
            begin = max(opens, moment)
            if begin + remaining <= closes:
                return begin + remaining
            remaining -= closes - begin
        raise ValueError(f"{amount} of working time does not fit in {MAX_SEARCH_DAYS} days")

    def _windows(self, since: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Opening windows (UTC, in order) that end after `since`, for MAX_SEARCH_DAYS days."""
        first = since.astimezone(self.zone).date()
        for offset in range(MAX_SEARCH_DAYS):
            day = first + timedelta(days=offset)
            if not self._is_working_day(day):
                continue
            opens, closes = self._instant(day, self.open), self._instant(day, self.close)
            if since < closes and opens < closes:
                yield opens, closes

    def _is_working_day(self, day: date) -> bool:
        if day.weekday() not in self.days:
            return False
        return not self.country or day not in _holiday_dates(self.country, day.year)

    def _instant(self, day: date, clock: time) -> datetime:
        """A local wall time as a UTC instant, converted by zoneinfo so DST is honoured.

        A wall time skipped by a DST change is read with the offset before the change
        (PEP 495, fold=0), i.e. moved later by the gap; a repeated one is its first occurrence.
        """
        return datetime.combine(day, clock, tzinfo=self.zone).astimezone(UTC)


def reply_expected_by(
    received: datetime, hours: BusinessHours, answer_within: timedelta
) -> datetime:
    """What the acknowledgement promises: `answer_within` of working time after `received`,
    rounded up to the quarter hour (in UTC), since "by 12:30" reads as a promise and
    "by 12:27:41" as a machine.

    Quarter hours of UTC are quarter hours of local time in every zone now in use, whose
    offsets are all whole multiples of 15 minutes.
    """
    due = hours.add_working_time(received, answer_within)
    overshoot = (due - _EPOCH) % _QUARTER
    return due + (_QUARTER - overshoot) if overshoot else due


def _utc(value: datetime, what: str) -> datetime:
    """Naive datetimes are refused: guessing their zone would make every promise wrong."""
    if value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {value!r}")
    return value.astimezone(UTC)
