"""Human durations as written in config and schedules: "90s", "20h", "7d", "1h30m", "2w"."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PART = re.compile(r"(\d+)\s*([smhdw])")
_WHOLE = re.compile(r"^\s*(?:\d+\s*[smhdw]\s*)+$")
LONGEST = timedelta(days=100 * 365)


def parse_duration(text: str) -> timedelta:
    """Parse a duration; raise ValueError that says what is accepted."""
    if not isinstance(text, str) or not _WHOLE.match(text.lower()):
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit, "
            'e.g. "90s", "15m", "20h", "7d", "2w" or "1h30m"'
        )
    parts: dict[str, int] = {}
    for number, unit in _PART.findall(text.lower()):
        key = _UNITS[unit]
        parts[key] = parts.get(key, 0) + int(number)
    too_long = ValueError(f"{text!r} is longer than {LONGEST.days // 365} years")
    try:
        length = timedelta(**parts)
    except OverflowError:
        raise too_long from None
    if length > LONGEST:  # meant for nothing here, and now + it must stay a date
        raise too_long
    return length


def format_duration(delta: timedelta) -> str:
    """The shortest exact form of a duration, the inverse of parse_duration."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
