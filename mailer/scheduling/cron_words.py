"""A crontab line in plain words, for the schedule form: "09:00 on the 1st of every month".

Only the shapes marketing writes are described: one time of day, and every day, some
weekdays, some days of the month, or some days of some months. Anything else (steps,
ranges of hours, both days and weekdays) comes back as the line itself, because a wrong
description is worse than none. A library such as cron-descriptor would cover more shapes,
but in its own wording, without "each customer's own time zone", and as a dependency for
a handful of sentences.
"""

from __future__ import annotations

import calendar

from mailer.core.fieldtypes import whole_number

_MONTHS = {name.lower(): n for n, name in enumerate(calendar.month_abbr) if name}
_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def describe(cron: str, timezone: str = "customer") -> str:
    """The time in words, with whose clock it is read on; the raw line when unusual."""
    zone = "in each customer's own time zone" if timezone == "customer" else f"{timezone} time"
    return f"{_when(cron) or cron}, {zone}"


def _when(cron: str) -> str | None:
    fields = cron.split()
    if len(fields) != 5:
        return None
    minute, hour, day, month, weekday = fields
    at_minute, at_hour = whole_number(minute, 59), whole_number(hour, 23)
    if at_minute is None or at_hour is None:
        return None
    clock = f"{at_hour:02d}:{at_minute:02d}"
    days, months, weekdays = _numbers(day, 31), _months(month), _weekdays(weekday)
    if day == "*" and month == "*" and weekday == "*":
        return f"{clock} every day"
    if day == "*" and month == "*" and weekdays:
        return f"{clock} {weekdays}"
    if days and weekday == "*" and month == "*":
        return f"{clock} on the {_listed([_ordinal(d) for d in days])} of every month"
    if days and weekday == "*" and months:
        return f"{clock} on the {_listed([_ordinal(d) for d in days])} of {_listed(months)}"
    return None


def _numbers(field: str, highest: int) -> list[int] | None:
    """A comma list of plain numbers from 1 to ``highest``, else None."""
    parts = field.split(",")
    numbers = [number for part in parts if (number := whole_number(part, highest))]  # not 0
    return sorted(set(numbers)) if len(numbers) == len(parts) else None


def _months(field: str) -> list[str] | None:
    """Month names for a comma list of numbers or three-letter names."""
    numbers = []
    for part in field.lower().split(","):
        number = _MONTHS.get(part) or whole_number(part) or 0
        if not 1 <= number <= 12:
            return None
        numbers.append(number)
    return [calendar.month_name[n] for n in sorted(set(numbers))]


def _weekdays(field: str) -> str | None:
    """ "every Monday and Thursday", or "Monday to Friday" for a range of names."""
    lowered = field.lower()
    if "-" in lowered and "," not in lowered:
        first, _, last = lowered.partition("-")
        if first in _WEEKDAYS and last in _WEEKDAYS and first != last:
            return f"{_day_name(first)} to {_day_name(last)}"
        return None
    parts = lowered.split(",")
    if not all(part in _WEEKDAYS for part in parts):
        return None
    ordered = sorted(set(parts), key=_WEEKDAYS.index)
    return "every " + _listed([_day_name(part) for part in ordered])


def _day_name(short: str) -> str:
    return calendar.day_name[_WEEKDAYS.index(short)]


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _listed(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
