"""May this customer be contacted now, and if not, when?

The outbox asks for every claimed message, in priority order, handing in the customer's
recent contacts plus what it reserved earlier in the same batch. The answer is a pure
function of that data and the time, so it is tested exhaustively and replayed for dry runs.

* A *bar* (suppressed, unsubscribed, no consent, a cap of zero) skips a message for good:
  waiting would never help, and a deferred row would only come back to be refused again.
  The bars read from the customer's record are one table, ``ELIGIBILITY``: the schedules'
  ``INSERT ... SELECT`` and the outbox's enqueue check build their SQL from it, so a
  customer is refused for the same reason, in the same words, wherever the check runs.
* A *hold* (pause, min_gap, caps, quiet hours) knows the earliest instant at or after a given
  one that it allows. Applying every hold until none moves the time gives the earliest
  instant all of them allow, which chooses between send, defer and expire.
* Transactional mail passes everything but suppression: a customer who wrote to support
  gets the acknowledgement at 3 am, but nothing goes to an address that bounced.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from mailer.core.categories import Category
from mailer.core.durations import format_duration

if TYPE_CHECKING:
    from mailer.core.config import ThrottleSettings

# Each cap field: the rolling window it limits, and how people read it.
_WINDOWS: Mapping[str, tuple[timedelta, str]] = {
    "per_day": (timedelta(days=1), "day"),
    "per_week": (timedelta(weeks=1), "week"),
    "per_30d": (timedelta(days=30), "30 days"),
}


@dataclass(frozen=True, slots=True)
class Contact:
    """One non-transactional message sent, or reserved to be sent, to the customer."""

    at: datetime
    category: str

    def __post_init__(self) -> None:
        _utc(self.at, "Contact.at")


@dataclass(frozen=True, slots=True)
class Caps:
    """At most this many messages of one category in any rolling day, week and 30 days."""

    per_day: int | None = None
    per_week: int | None = None
    per_30d: int | None = None

    def __post_init__(self) -> None:
        if any(count < 0 for count in self.limits().values()):
            raise ValueError(f"caps cannot be negative: {self}")

    def limits(self) -> dict[str, int]:
        """The caps that are set, by field name: {"per_week": 2}."""
        named = {"per_day": self.per_day, "per_week": self.per_week, "per_30d": self.per_30d}
        return {name: count for name, count in named.items() if count is not None}


@dataclass(frozen=True, slots=True)
class Rules:
    """The business's throttle, as configured in [throttle]."""

    min_gap: timedelta
    quiet_hours: tuple[time, time] | None
    caps: Mapping[str, Caps]

    @classmethod
    def from_settings(cls, settings: ThrottleSettings) -> Rules:
        caps: dict[str, Caps] = {
            name: Caps(c.per_day, c.per_week, c.per_30d) for name, c in settings.caps.items()
        }
        return cls(settings.min_gap, settings.quiet_hours, caps)


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerState:
    """What the throttle needs to know about one customer; the caller picks the zone."""

    zone: ZoneInfo
    history: Sequence[Contact]
    suppressed_reason: str | None = None  # named as the columns ELIGIBILITY reads
    unsubscribed_at: datetime | None = None
    marketing_consent: bool = True
    relationship_consent: bool = True
    pause_until: datetime | None = None
    caps_override: Mapping[str, Caps] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pause_until is not None:
            _utc(self.pause_until, "pause_until")


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What to do with one message, and why, in words for people and a name for machines."""

    action: Literal["send", "defer", "expire", "skip"]
    at: datetime | None
    reason: str
    rule: str | None


SENT = Decision(action="send", at=None, reason="sent", rule=None)


@dataclass(frozen=True, slots=True)
class _Bar:
    rule: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Eligibility:
    """One reason a customer's record bars a category of mail for good.

    ``column`` names both the customers column and the ``CustomerState`` field it reads;
    the customer is barred when it is set (``bars_when="set"``) or false. The reason is
    ``wording``, followed by the value itself when ``quotes_value`` (a bounce's own words).
    """

    rule: str
    column: str
    bars_when: Literal["set", "false"]
    wording: str
    quotes_value: bool = False

    def bars(self, value: object) -> bool:
        return value is not None if self.bars_when == "set" else value is False

    def reason(self, value: object) -> str:
        return f"{self.wording}{value}" if self.quotes_value else self.wording


@functools.cache  # asked for every claimed message; a handful of categories exist
def eligibility(category: str) -> tuple[Eligibility, ...]:
    """The bars for one category, in the order they are reported: the first that holds wins.

    Transactional mail (an acknowledgement, a receipt) is barred by suppression alone; it
    needs no consent and is not marketing a customer could unsubscribe from.
    """
    suppressed = Eligibility(
        rule="suppressed",
        column="suppressed_reason",
        bars_when="set",
        wording="suppressed: ",
        quotes_value=True,
    )
    if category == Category.TRANSACTIONAL:
        return (suppressed,)
    return (
        suppressed,
        Eligibility(
            rule="unsubscribed", column="unsubscribed_at", bars_when="set", wording="unsubscribed"
        ),
        Eligibility(
            rule="consent",
            column=f"{category}_consent",
            bars_when="false",
            wording=f"no consent for {category}",
        ),
    )


@dataclass(frozen=True, slots=True)
class _Hold:
    rule: str
    reason: str
    earliest: Callable[[datetime], datetime]  # the first instant from the given one it allows


def decide(
    category: str,
    now: datetime,
    valid_until: datetime | None,
    customer: CustomerState,
    rules: Rules,
) -> Decision:
    """Send now, defer to the earliest instant every rule allows, expire, or skip for good.

    A message whose earliest instant is past ``valid_until`` expires, even one that could go
    at once: it was claimed too late to be worth sending (a reminder for a past webinar).
    """
    now = _utc(now, "now")
    deadline = None if valid_until is None else _utc(valid_until, "valid_until")
    bar = _bar(category, customer, rules)
    if bar is not None:
        return Decision(action="skip", at=None, reason=bar.reason, rule=bar.rule)
    holds = [] if category == Category.TRANSACTIONAL else _holds(category, customer, rules)
    at, fired = _settle(now, holds, 8 * (len(customer.history) + 2))
    if deadline is not None and at > deadline:
        return _expired(at, deadline, fired)
    if not fired:
        return SENT
    return Decision(
        action="defer", at=at, reason="; ".join(hold.reason for hold in fired), rule=fired[0].rule
    )


def next_allowed(
    category: str, now: datetime, customer: CustomerState, rules: Rules
) -> datetime | None:
    """When a message of this category could first go (``now`` if at once); None if never."""
    decision = decide(category, now, None, customer, rules)
    if decision.action == "skip":
        return None
    return decision.at or now.astimezone(UTC)


def _utc(value: datetime, what: str) -> datetime:
    """Naive datetimes are refused: guessing their zone is how mail arrives at 3 am."""
    if value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {value!r}")
    return value.astimezone(UTC)


def _stamp(moment: datetime) -> str:
    """An instant for a reason line; seconds only when there are any."""
    exact = moment.second or moment.microsecond
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if exact else f"{moment:%Y-%m-%d %H:%M} UTC"


def _expired(at: datetime, deadline: datetime, fired: Sequence[_Hold]) -> Decision:
    """Name what held the message back, or say it was already stale when it was claimed."""
    late = f"{_stamp(at)} is after valid_until {_stamp(deadline)}"
    if not fired:
        return Decision(action="expire", at=at, reason=f"now {late}", rule="valid_until")
    held = "; ".join(hold.reason for hold in fired)
    return Decision(action="expire", at=at, reason=f"{held}; earliest {late}", rule=fired[0].rule)


def _caps(category: str, customer: CustomerState, rules: Rules) -> Caps:
    """A per-customer override replaces the business's caps for that category entirely."""
    return customer.caps_override.get(category) or rules.caps.get(category) or Caps()


@functools.cache  # the reasons are built for every claimed message, whether a hold fires or not
def _cap_reason(category: str, name: str, count: int) -> str:
    return f"{category} cap {count} per {_WINDOWS[name][1]}"


def _bar(category: str, customer: CustomerState, rules: Rules) -> _Bar | None:
    """Why this message may never go to this customer, or None."""
    for rule in eligibility(category):
        value = getattr(customer, rule.column)
        if rule.bars(value):
            return _Bar(rule.rule, rule.reason(value))
    if category == Category.TRANSACTIONAL:
        return None
    zero = [name for name, count in _caps(category, customer, rules).limits().items() if not count]
    return _Bar(f"cap:{category}:{zero[0]}", _cap_reason(category, zero[0], 0)) if zero else None


def _holds(category: str, customer: CustomerState, rules: Rules) -> list[_Hold]:
    """The deferring rules that apply, in the order their names are reported."""
    holds = [] if customer.pause_until is None else [_pause(customer.pause_until)]
    if rules.min_gap > timedelta(0):
        throttled = _times(customer.history, lambda c: c.category != Category.TRANSACTIONAL)
        holds.append(_min_gap(throttled, rules.min_gap))
    same = _times(customer.history, lambda c: c.category == category)
    limits = _caps(category, customer, rules).limits()
    holds += [_cap(category, name, count, same) for name, count in limits.items()]
    if rules.quiet_hours is not None:
        holds.append(_quiet(rules.quiet_hours, customer.zone))
    return holds


def _times(history: Sequence[Contact], keep: Callable[[Contact], bool]) -> list[datetime]:
    return sorted(contact.at.astimezone(UTC) for contact in history if keep(contact))


def _settle(now: datetime, holds: Sequence[_Hold], rounds: int) -> tuple[datetime, list[_Hold]]:
    """The earliest instant from ``now`` on that every hold allows, and the holds that moved it.

    A hold only jumps over instants it forbids, so the first instant none of them moves is the
    earliest all allow. Each jump leaves behind an interval that a contact or the pause blocks
    for good, or ends quiet hours, so a few rounds per contact always suffice.
    """
    moment = now
    fired: dict[str, _Hold] = {}  # by rule name, in the order they first held
    for _ in range(rounds):
        blocking = [(hold, at) for hold in holds if (at := hold.earliest(moment)) > moment]
        if not blocking:
            return moment, list(fired.values())
        fired.update((hold.rule, hold) for hold, _ in blocking)
        moment = max(at for _, at in blocking)
    raise RuntimeError(f"throttle rules did not settle within {rounds} rounds")


def _pause(until: datetime) -> _Hold:
    until = until.astimezone(UTC)
    return _Hold("pause", f"paused until {_stamp(until)}", lambda moment: max(moment, until))


def _min_gap(times: Sequence[datetime], gap: timedelta) -> _Hold:
    """No two non-transactional messages closer than ``gap``, looking both ways: a contact
    reserved for later (or stamped by a worker whose clock runs ahead) holds back as well."""

    def earliest(moment: datetime) -> datetime:
        near = [sent + gap for sent in times if abs(moment - sent) < gap]
        return max(near, default=moment)

    return _Hold("min_gap", _gap_reason(gap), earliest)


@functools.cache
def _gap_reason(gap: timedelta) -> str:
    return f"min_gap {format_duration(gap)}"


def _cap(category: str, name: str, count: int, times: Sequence[datetime]) -> _Hold:
    """``count`` consecutive contacts that fit in one window block every instant that would
    share a window with all of them: after the newest leaves its window backwards, and before
    the oldest leaves it forwards. With only past contacts, that is "until the oldest of the
    last ``count`` is a full window old"."""
    window = _WINDOWS[name][0]

    def earliest(moment: datetime) -> datetime:
        groups = zip(times, times[count - 1 :], strict=False)
        ends = [old + window for old, new in groups if new - window < moment < old + window]
        return max(ends, default=moment)

    return _Hold(f"cap:{category}:{name}", _cap_reason(category, name, count), earliest)


def _quiet(hours: tuple[time, time], zone: ZoneInfo) -> _Hold:
    start, end = hours
    reason = _quiet_reason(start, end, zone.key)
    return _Hold("quiet_hours", reason, lambda moment: _quiet_end(moment, start, end, zone))


@functools.cache
def _quiet_reason(start: time, end: time, zone: str) -> str:
    return f"quiet hours {start:%H:%M}-{end:%H:%M} in {zone}"


def _is_quiet(wall: time, start: time, end: time) -> bool:
    """Whether a local time is in the range; a range may wrap midnight, and start == end is
    an empty range rather than a whole day of silence."""
    if start <= end:
        return start <= wall < end
    return wall >= start or wall < end


def _quiet_end(moment: datetime, start: time, end: time, zone: ZoneInfo) -> datetime:
    """``moment`` if the customer's clock is outside quiet hours then, else when it next
    reads ``end``."""
    local = moment.astimezone(zone)
    if not _is_quiet(local.time(), start, end):
        return moment
    ends_tomorrow = start > end and local.time() >= start
    day = local.date() + timedelta(days=1) if ends_tomorrow else local.date()
    return _reaching(datetime.combine(day, end), zone, moment)


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """What the local clock reads at an instant, as a naive datetime."""
    return moment.astimezone(zone).replace(tzinfo=None)


def _reaching(wall: datetime, zone: ZoneInfo, not_before: datetime) -> datetime:
    """The first instant from ``not_before`` on at which the local clock reads ``wall``.

    When clocks go back a wall time happens twice: take the first still ahead. When they go
    forward it never happens: take the moment the clock jumps past it.
    """
    readings = sorted(wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
    real = [at for at in readings if _wall(at, zone) == wall and at >= not_before]
    return real[0] if real else _jump(readings[0], readings[-1], wall, zone)


def _jump(before: datetime, after: datetime, wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant the clock skips over ``wall``: it reads less at ``before``, more at
    ``after``. zoneinfo does not expose its transitions, so bisect to the second, the
    resolution of the tz database."""
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(datetime.fromtimestamp(middle, UTC), zone) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)
