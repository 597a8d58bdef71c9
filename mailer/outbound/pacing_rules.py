"""How fast each receiving domain may get mail: the rules, over plain data and a given time.

A domain, or a group of domains that one provider receives (``[pacing.groups.NAME]``), has
a normal rate per minute (0: as fast as the relays go). When it answers "try later" in a
way that means "you are sending too fast" (a 421, or any 4xx with enhanced status 4.7.x),
its rate is cut: halved (an unlimited one drops to ``deferred_per_minute``), at most once a
minute, never below ``floor_per_minute``, and held there for ``slow_for`` after the last
such reply. Then each quiet minute gives back a tenth of its normal rate until it is there.
A full mailbox (452) or greylisting is about one address, not our pace: neither slows.

Budgets are counted per key in windows of one minute: at most the current rate may be
taken in a window; what is left over waits for the next one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailer.core.config import PacingSettings

MINUTE = timedelta(minutes=1)
_ENHANCED = re.compile(r"^\d{3}[ -]?(\d)\.(\d{1,3})\.(\d{1,3})\b")
_GREYLISTING = re.compile(r"gr[ae]y-?list", re.IGNORECASE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """``[pacing]``: the normal rate of a domain (or of its group), and how it slows down."""

    per_minute: int = 0  # each domain not in a group; 0: unlimited
    deferred_per_minute: int = 60  # where an unlimited domain drops to when it defers
    floor_per_minute: int = 1
    slow_for: timedelta = timedelta(minutes=10)
    groups: Mapping[str, int] = field(default_factory=dict)  # group name -> its per_minute
    group_of: Mapping[str, str] = field(default_factory=dict)  # domain -> group name

    @classmethod
    def from_settings(cls, settings: PacingSettings) -> Rules:
        return cls(
            per_minute=settings.per_minute,
            deferred_per_minute=settings.deferred_per_minute,
            floor_per_minute=settings.floor_per_minute,
            slow_for=settings.slow_for,
            groups={name: group.per_minute for name, group in settings.groups.items()},
            group_of={d: name for name, group in settings.groups.items() for d in group.domains},
        )

    def key(self, domain: str) -> str:
        """What a domain is paced as: its group's name, or itself. Domains have a dot and
        group names none, so the two never meet."""
        domain = domain.lower()
        return self.group_of.get(domain, domain)

    def normal(self, key: str) -> int:
        """The key's rate when nothing slowed it; 0: unlimited."""
        return self.groups.get(key, self.per_minute)

    def limited(self, key: str) -> bool:
        """Whether the key has a budget even when nothing slowed it."""
        return self.normal(key) > 0

    def domains(self, key: str) -> list[str]:
        """The domains a key stands for."""
        if key not in self.groups:
            return [key]
        return sorted(d for d, group in self.group_of.items() if group == key)


def label(key: str) -> str:
    """How people read a key: "group google" or "gmail.com"."""
    return key if "." in key else f"group {key}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Pace:
    """One key's stored state: its rate if not normal, how long it is held there, and what
    it took in the current minute."""

    rate: int | None = None  # per minute; None: the normal rate
    slowed_until: datetime | None = None
    changed_at: datetime | None = None  # when the rate was last cut
    reason: str | None = None
    window_start: datetime | None = None
    used: int = 0


def slows_down(code: int | None, reply: str) -> bool:
    """A reply that says we send too fast: 421 (service not available, closing), or any 4xx
    with enhanced status 4.7.x (RFC 3463: security or policy, where providers put rate
    limits); but never 452 (too many recipients, or no room) or greylisting, which are
    about one message, not about the pace."""
    if code is None or not 400 <= code < 500 or code == 452:
        return False
    if _GREYLISTING.search(reply):
        return False
    if code == 421:
        return True
    enhanced = _ENHANCED.match(reply)
    return enhanced is not None and enhanced[1] == "4" and enhanced[2] == "7"


def rate_now(pace: Pace, rules: Rules, key: str, now: datetime) -> int | None:
    """The key's rate per minute at ``now``; None: unlimited. Past its hold it climbs back a
    tenth of its normal rate a minute (of ``deferred_per_minute`` for an unlimited key,
    which is unlimited again once past that); once there, it is its normal rate again."""
    if pace.rate is None:
        return rules.normal(key) or None
    top = rules.normal(key) or rules.deferred_per_minute
    if pace.slowed_until is None or now < pace.slowed_until:
        return pace.rate
    quiet = (now - pace.slowed_until) // MINUTE
    climbed = pace.rate + quiet * max(1, math.ceil(top / 10))
    if not rules.normal(key):  # unlimited again once past the rate it first dropped to
        return None if climbed > top else climbed
    return min(climbed, top)


def recovered(pace: Pace, rules: Rules, key: str, now: datetime) -> bool:
    """Whether a slowed key is back at its normal rate (so its row can say so)."""
    if pace.rate is None:
        return False
    current = rate_now(pace, rules, key, now)
    return current is None or current >= rules.normal(key) > 0


def slowed(pace: Pace, rules: Rules, key: str, now: datetime, reply: str) -> Pace:
    """The pace after a reply that ``slows_down``: cut (halved, at most once a minute, not
    below the floor) and held for ``slow_for`` from now."""
    current = rate_now(pace, rules, key, now)
    recent = pace.changed_at is not None and now - pace.changed_at < MINUTE
    if recent and current is not None:
        return replace(pace, rate=current, slowed_until=now + rules.slow_for, reason=reply)
    cut = rules.deferred_per_minute if current is None else current // 2
    return replace(
        pace,
        rate=max(rules.floor_per_minute, cut),
        slowed_until=now + rules.slow_for,
        changed_at=now,
        reason=reply,
    )


def window(pace: Pace, now: datetime) -> tuple[datetime, int]:
    """The current minute's start and what was taken in it (a new minute starts at ``now``)."""
    if pace.window_start is None or now >= pace.window_start + MINUTE:
        return now, 0
    return pace.window_start, pace.used


def take(pace: Pace, rules: Rules, key: str, now: datetime, wanted: int) -> tuple[int, Pace]:
    """How many of ``wanted`` messages may go now, and the pace with them counted."""
    rate = rate_now(pace, rules, key, now)
    if rate is None:
        return wanted, pace
    start, used = window(pace, now)
    granted = max(0, min(wanted, rate - used))
    return granted, replace(pace, window_start=start, used=used + granted)


def given_back(pace: Pace, counted_in: datetime, unsent: int) -> Pace:
    """The pace with ``unsent`` of the messages taken in the minute that started at
    ``counted_in`` taken off again, if no later minute has started since (one never
    counted them)."""
    if pace.window_start != counted_in:
        return pace
    return replace(pace, used=max(0, pace.used - unsent))


def paced_until(pace: Pace, rules: Rules, key: str, now: datetime) -> datetime | None:
    """When the key may take more mail if its budget for this minute is spent; None if it
    may take some now."""
    rate = rate_now(pace, rules, key, now)
    if rate is None:
        return None
    start, used = window(pace, now)
    return start + MINUTE if used >= rate else None
