"""Moments in words, for people: to the minute in a zone that is named, or as a distance
from now ("in 3 hours", "2 days ago"). Pure, so the wording is tested without a clock.

Staff pages (``mailer.web.times``) and mail that states a time to a customer (a reply's
quote of their message) say times the same way.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

MINUTE = "%Y-%m-%d %H:%M"  # also what a time field holds, read back in the same zone
# the largest unit that fits is said: 36 hours is "1 day", 59 minutes "59 minutes"
UNITS = (
    ("year", timedelta(days=365)),
    ("month", timedelta(days=30)),
    ("day", timedelta(days=1)),
    ("hour", timedelta(hours=1)),
    ("minute", timedelta(minutes=1)),
)


def absolute(at: datetime, zone: ZoneInfo) -> str:
    """To the minute with the zone's abbreviation, as in "2026-11-24 20:05 PST"."""
    return at.astimezone(zone).strftime(f"{MINUTE} %Z")


# how reasons stored with a message state a time: "deferred until 2026-12-02 08:00 UTC: ..."
_STORED_UTC = re.compile(r"\b(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2})(:\d{2})? UTC\b")


def restated(text: str, zone: ZoneInfo) -> str:
    """A stored reason with each time it states in UTC restated in ``zone``, as
    ``absolute`` says it; the rest of the text as it is."""

    def local(found: re.Match[str]) -> str:
        at = datetime.fromisoformat(f"{found[1]}T{found[2]}{found[3] or ''}+00:00")
        return absolute(at, zone)

    return _STORED_UTC.sub(local, text)


def named(at: datetime, zone: ZoneInfo) -> str:
    """To the minute with the zone's name as well, as in "2026-11-24 20:05 PST
    (Asia/Manila)": abbreviations are ambiguous (PST is Manila's and California's)."""
    return f"{absolute(at, zone)} ({zone.key})"


def relative(at: datetime, now: datetime) -> str:
    """How far ``at`` is from ``now`` in the largest whole unit: "in 3 hours", "2 days
    ago"; under a minute either way is "now"."""
    gap = at - now
    for unit, length in UNITS:
        count = abs(gap) // length
        if count:
            words = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {words}" if gap > timedelta(0) else f"{words} ago"
    return "now"
