"""Template filters that write dates, times, durations, money and numbers the reader's way.

A message is read in one language and one time zone, so the filters take neither as an
argument: `TemplateStore.render` puts a `Reader` into the template context under
`READER_KEY` and every filter reads it from there. Datetimes are converted to the reader's
zone before they are formatted, so "tomorrow 10:00" means 10:00 where the customer lives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError, dates, lists, numbers, units
from jinja2 import pass_context
from jinja2.runtime import Context

# Not a Python identifier, so no template variable and no caller's context key can clash.
READER_KEY = "mailer:reader"
DEFAULT_LOCALE = "en"

Number = int | float | Decimal


@dataclass(frozen=True, slots=True)
class Reader:
    """The language and time zone one message is written for."""

    locale: Locale
    zone: ZoneInfo


def reader(locale: str | None, zone: ZoneInfo) -> Reader:
    """A Reader for a locale such as "bg-BG" or "tl"; unknown or missing locales read as "en"."""
    return Reader(_locale(locale or DEFAULT_LOCALE), zone)


@lru_cache(maxsize=256)
def _locale(tag: str) -> Locale:
    """Parsed once per tag: parsing took a tenth of a message's rendering."""
    try:
        return Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse(DEFAULT_LOCALE)


def _reader_of(context: Context) -> Reader:
    found = context.get(READER_KEY)
    if not isinstance(found, Reader):
        raise RuntimeError("formatting filters need the reader that TemplateStore.render sets")
    return found


def _expect(value: object, kind: type | tuple[type, ...], what: str) -> None:
    """Say which filter wanted what: a string where a date belongs is a common template slip."""
    if not isinstance(value, kind):
        raise TypeError(f"{what}, not {type(value).__name__} {value!r}")


def _local(value: datetime, zone: ZoneInfo) -> datetime:
    """The same instant on the reader's clock; naive datetimes are taken as UTC, as stored."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(zone)


@pass_context
def format_date(context: Context, value: date | datetime, format: str = "medium") -> str:
    """A calendar date; for a datetime, the date it is in the reader's zone."""
    _expect(value, date, "the date filter needs a date or datetime")
    read = _reader_of(context)
    day = _local(value, read.zone).date() if isinstance(value, datetime) else value
    return dates.format_date(day, format, locale=read.locale)


@pass_context
def format_time(context: Context, value: time | datetime, format: str = "short") -> str:
    _expect(value, (time, datetime), "the time filter needs a time or datetime")
    read = _reader_of(context)
    moment = _local(value, read.zone) if isinstance(value, datetime) else value
    return dates.format_time(moment, format, locale=read.locale)


@pass_context
def format_datetime(context: Context, value: datetime, format: str = "medium") -> str:
    _expect(value, datetime, "the datetime filter needs a datetime")
    read = _reader_of(context)
    return dates.format_datetime(_local(value, read.zone), format, locale=read.locale)


@pass_context
def format_timezone(context: Context, value: datetime) -> str:
    """The reader's zone by its local name ("Eastern European Summer Time") at that instant."""
    _expect(value, datetime, "the timezone filter needs a datetime")
    read = _reader_of(context)
    return dates.get_timezone_name(_local(value, read.zone), locale=read.locale)


@pass_context
def format_duration(context: Context, value: timedelta) -> str:
    """Exact hours and minutes ("1 hour and 30 minutes"); babel alone would round to "2 hours"."""
    _expect(value, timedelta, "the duration filter needs a timedelta")
    locale = _reader_of(context).locale
    hours, minutes = divmod(round(value.total_seconds() / 60), 60)
    parts = [(hours, "duration-hour"), (minutes, "duration-minute")]
    words = [units.format_unit(n, unit, locale=locale) for n, unit in parts if n]
    return lists.format_list(
        words or [units.format_unit(0, "duration-minute", locale=locale)], locale=locale
    )


@pass_context
def format_money(context: Context, amount: Number | str, currency: str) -> str:
    return numbers.format_currency(amount, currency, locale=_reader_of(context).locale)


@pass_context
def format_number(context: Context, value: Number | str) -> str:
    return numbers.format_decimal(value, locale=_reader_of(context).locale)


FILTERS: dict[str, Callable[..., str]] = {
    "date": format_date,
    "time": format_time,
    "datetime": format_datetime,
    "timezone": format_timezone,
    "duration": format_duration,
    "money": format_money,
    "number": format_number,
}


def with_reader(context: Mapping[str, Any], locale: str | None, zone: ZoneInfo) -> dict[str, Any]:
    """A copy of a render context that the filters above can read the locale and zone from."""
    return {**context, READER_KEY: reader(locale, zone)}
