"""When a schedule is due, as plain data: which occurrences fall in a window, per time zone.

An occurrence is one firing of a schedule for one zone's customers, named by a key that is
the same however often it is computed: the local wall time for a newsletter
("2026-12-01T09:00"), the local date for birthdays and the purchase kinds ("2027-02-28"),
the step for a webinar ("invite", "reminder-1d", "update-2", "cancel"), the UTC date for an
event schedule, whose one run a day takes whatever events fell due in each pass. Firing records each
key once, so a double fire, a restart or a repeated DST hour sends nothing twice, and
catch-up after downtime is simply every occurrence still inside its ``valid_for`` window.

Wall times follow cron practice across DST: a time skipped by the clock change fires an hour
later in wall terms (at the same instant as the hour after it), a repeated time fires once.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from mailer.core.durations import format_duration
from mailer.scheduling.schedules import (
    Daily,
    EventSchedule,
    NewsletterSchedule,
    Schedule,
    WebinarSchedule,
)

EVERYONE = ""  # the zone of an occurrence that is for all customers at one instant
MAX_PER_WINDOW = 10_000  # bound on a crontab that fires every minute over a long valid_for


@dataclass(frozen=True, slots=True, kw_only=True)
class Occurrence:
    key: str
    zone: str  # IANA name of the customers' zone, or EVERYONE
    at: datetime  # UTC: when it is due; messages are due then too
    valid_until: datetime  # UTC: after this, nothing of it is sent


@dataclass(frozen=True, slots=True)
class WebinarState:
    """What was sent before about a webinar: the calendar SEQUENCE of the current details."""

    sequence: int = 0


def trigger(schedule: NewsletterSchedule | Daily | EventSchedule, zone: str) -> CronTrigger:
    """The APScheduler trigger for one zone (a newsletter in a fixed zone has only that one);
    an event schedule looks for due events every minute."""
    where = ZoneInfo(zone) if zone else UTC
    if isinstance(schedule, EventSchedule):
        return CronTrigger(minute="*", timezone=UTC)
    if isinstance(schedule, NewsletterSchedule):
        return CronTrigger.from_crontab(schedule.cron, timezone=where)
    return CronTrigger(hour=schedule.send_at.hour, minute=schedule.send_at.minute, timezone=where)


def zones_for(schedule: Schedule, customer_zones: Iterable[str]) -> list[str]:
    """The zones a schedule fires in: each customer zone in use, one fixed zone, or none."""
    if isinstance(schedule, WebinarSchedule | EventSchedule):
        return [EVERYONE]
    if isinstance(schedule, NewsletterSchedule) and schedule.timezone != "customer":
        assert isinstance(schedule.timezone, ZoneInfo)
        return [schedule.timezone.key]
    return sorted(set(customer_zones))


def due(
    schedule: Schedule,
    customer_zones: Iterable[str],
    now: datetime,
    webinar: WebinarState = WebinarState(),
) -> list[Occurrence]:
    """Every occurrence whose time has come and whose ``valid_for`` has not run out."""
    if not schedule.enabled:
        return []
    if isinstance(schedule, WebinarSchedule):
        return webinar_steps(schedule, webinar, now)
    if isinstance(schedule, EventSchedule):  # messages are due now, valid_for from now
        day = now.astimezone(UTC).date().isoformat()
        return [Occurrence(key=day, zone=EVERYONE, at=now, valid_until=now + schedule.valid_for)]
    found: list[Occurrence] = []
    for zone in zones_for(schedule, customer_zones):
        fires = _fire_times(trigger(schedule, zone), now - schedule.valid_for, now)
        for at in _once_per_wall_time(fires):
            key = _key(schedule, at)
            at = at.astimezone(UTC)
            found.append(Occurrence(key=key, zone=zone, at=at, valid_until=at + schedule.valid_for))
    return found


def next_fire(schedule: Schedule, customer_zones: Iterable[str], now: datetime) -> datetime | None:
    """The next instant anything of this schedule fires, in UTC; None when nothing will."""
    if not schedule.enabled:
        return None
    if isinstance(schedule, WebinarSchedule):
        steps = [at for at in _webinar_times(schedule).values() if at > now]
        return min(steps, default=None)
    times = [
        trigger(schedule, zone).get_next_fire_time(None, now + timedelta(microseconds=1))
        for zone in zones_for(schedule, customer_zones)
    ]
    return min((t.astimezone(UTC) for t in times if t is not None), default=None)


def upcoming(
    schedule: Schedule, customer_zones: Iterable[str], now: datetime, count: int = 5
) -> list[tuple[str, datetime]]:
    """The next ``count`` occurrences as (key, first instant any zone reaches it), paused or
    not: 1 December's 09:00 is one line however many zones it reaches."""
    if isinstance(schedule, WebinarSchedule):
        steps = sorted((at, key) for key, at in _webinar_times(schedule).items() if at > now)
        return [(key, at) for at, key in steps[:count]]
    first: dict[str, datetime] = {}
    for zone in zones_for(schedule, customer_zones):
        cron, previous, moment = trigger(schedule, zone), None, now + timedelta(microseconds=1)
        for _ in range(count):
            fire = cron.get_next_fire_time(previous, moment)
            if fire is None:
                break
            key, at = _key(schedule, fire), fire.astimezone(UTC)
            first[key] = min(first.get(key, at), at)
            previous, moment = fire, fire + timedelta(microseconds=1)
    return sorted(first.items(), key=lambda item: item[1])[:count]


def birthdays_on(day: date, feb29: str) -> list[tuple[int, int]]:
    """The (month, day) birthdays greeted on ``day``: 29 February falls on 28 February or
    1 March (as the schedule says) in years that lack it."""
    found = [(day.month, day.day)]
    stands_in = (2, 28) if feb29 == "feb28" else (3, 1)
    if not calendar.isleap(day.year) and (day.month, day.day) == stands_in:
        found.append((2, 29))
    return found


def webinar_steps(
    schedule: WebinarSchedule, state: WebinarState, now: datetime
) -> list[Occurrence]:
    """The invitation, reminders, an update when the details changed, or the cancellation.

    Nothing is due once the webinar has started. Updates and the cancellation are due at
    once: they go to whoever was invited, and to nobody if the invitation has not gone yet.
    Reminders are named with the SEQUENCE they announce ("reminder-1d@2"), so a webinar
    moved after a reminder went out gets its reminder again for the new time.
    """
    starts = schedule.starts_at.astimezone(UTC)
    if now >= starts:
        return []
    if schedule.cancelled:
        return [Occurrence(key="cancel", zone=EVERYONE, at=now, valid_until=starts)]
    found = [
        Occurrence(
            key=_versioned(key, state),
            zone=EVERYONE,
            at=at,
            valid_until=min(at + schedule.valid_for, starts),
        )
        for key, at in _webinar_times(schedule).items()
        if now - schedule.valid_for < at <= now
    ]
    if state.sequence > 0:
        found.append(
            Occurrence(key=f"update-{state.sequence}", zone=EVERYONE, at=now, valid_until=starts)
        )
    return found


def _versioned(key: str, state: WebinarState) -> str:
    return f"{key}@{state.sequence}" if key.startswith("reminder-") and state.sequence else key


def _webinar_times(schedule: WebinarSchedule) -> dict[str, datetime]:
    starts = schedule.starts_at.astimezone(UTC)
    times = {"invite": schedule.invite_at.astimezone(UTC)}
    times.update(
        {f"reminder-{format_duration(early)}": starts - early for early in schedule.reminders}
    )
    return times


def _fire_times(cron: CronTrigger, after: datetime, until: datetime) -> Iterator[datetime]:
    """Fire times in (after, until], local to the trigger's zone; bounded in count."""
    previous = None
    moment = after + timedelta(microseconds=1)
    for _ in range(MAX_PER_WINDOW):
        fire = cron.get_next_fire_time(previous, moment)
        if fire is None or fire > until:
            return
        yield fire
        previous, moment = fire, fire + timedelta(microseconds=1)


def _once_per_wall_time(fires: Iterable[datetime]) -> Iterator[datetime]:
    """A wall time repeated by a DST fall-back fires at its first instant only."""
    seen: set[datetime] = set()
    for fire in fires:
        wall = fire.replace(tzinfo=None, fold=0)
        if wall not in seen:
            seen.add(wall)
            yield fire


def _key(schedule: NewsletterSchedule | Daily | EventSchedule, fire: datetime) -> str:
    if isinstance(schedule, NewsletterSchedule):
        return fire.strftime("%Y-%m-%dT%H:%M")
    return fire.date().isoformat()
