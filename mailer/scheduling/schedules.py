"""Schedule files (`schedules/*.toml`) loaded into checked, immutable objects.

Marketing edits these files by hand, so loading reports every problem in every file at once,
each with its file and key, and keeps a file out entirely if anything in it is wrong: a
half-understood schedule must never fire. Firing and fan-out live elsewhere.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from mailer.core.categories import Category
from mailer.core.clock import Clock
from mailer.core.durations import format_duration, parse_duration
from mailer.core.errors import Problem
from mailer.core.fieldtypes import (
    ClockTime,
    Duration,
    EmailAddress,
    EventName,
    LocaleTag,
    utc_moment,
    zone,
)
from mailer.core.files import read_toml
from mailer.core.money import currency_code, from_minor, to_minor
from mailer.insight import rfm

if TYPE_CHECKING:  # the config loads the database layer, which occurrences must not
    from mailer.core.config import InsightSettings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_ANY_TIME = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Surroundings:
    """What a file alone cannot tell: which templates exist and what time it is.

    Passed as pydantic's validation context so these checks report in the same pass as the
    rest; models built without it (in code, in tests) skip them.
    """

    template_names: Collection[str]
    now: datetime
    segments: Collection[str] | None = None  # the configured RFM segment names


def _surroundings(info: ValidationInfo) -> _Surroundings | None:
    return info.context if isinstance(info.context, _Surroundings) else None


def _template_exists(name: str | None, info: ValidationInfo) -> str | None:
    around = _surroundings(info)
    if around is not None and name is not None and name not in around.template_names:
        raise ValueError(f"there is no template named {name!r}")
    return name


def _crontab(text: str) -> str:
    """A five-field crontab line; weekday numbers are refused because APScheduler 3 reads 0
    as Monday while every cron tool reads it as Sunday."""
    try:
        trigger = CronTrigger.from_crontab(text, timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a crontab line such as '0 9 1 * *': {exc}") from None
    if any(char.isdigit() for char in text.split()[4]):
        raise ValueError(
            f"{text!r}: write weekdays as names (mon, tue, ... sun); numbers mean different days"
            " to different cron tools"
        )
    if trigger.get_next_fire_time(None, _ANY_TIME) is None:
        raise ValueError(f"{text!r} never fires (no such date)")
    return text


def _customer_or_zone(value: Any) -> ZoneInfo | str:
    """Either "customer" (each customer's own zone) or one IANA zone for everybody."""
    if value == "customer":
        return "customer"
    try:
        return zone(value)
    except ValueError as exc:
        raise ValueError(f"{exc}; or write 'customer' for each customer's own zone") from None


def _has_offset(value: datetime) -> datetime:
    """Without an offset a time means a different instant to every reader; one outside
    the years 1900 to 2999 is a typo (and its reminders would fall off the calendar)."""
    if value.utcoffset() is None:
        raise ValueError(
            f"{value.isoformat()} has no UTC offset; write one, e.g. 2027-05-20T16:00:00+03:00"
        )
    try:
        utc_moment(value)
    except ValueError as exc:
        raise ValueError(f"{value.isoformat()} is {exc}") from None
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero, e.g. '1h' or '3d'")
    return value


def _whole_days(value: timedelta) -> timedelta:
    """Purchase schedules compare calendar days, so a duration must be days, or weeks."""
    if value < timedelta(0) or value % timedelta(days=1):
        raise ValueError(f"{format_duration(value)!r} is not a whole number of days, e.g. '7d'")
    return value


def _a_day_or_more(value: timedelta) -> timedelta:
    if value < timedelta(days=1):
        raise ValueError("must be a day or more, e.g. '3d'")
    return value


def _purchase_category(value: Any) -> Category:
    """Transactional is for what a customer asked for; this mail they did not."""
    if value in (Category.MARKETING, Category.RELATIONSHIP):
        return Category(value)
    raise ValueError(
        f"{value!r}: write 'marketing' (a review request, an offer) or 'relationship'"
        " (a plain thank-you)"
    )


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be negative; write '0s' to send at once, or e.g. '1h'")
    return value


def _event_category(value: Any) -> Category:
    """Mail a customer's own action sets off but did not ask for (a cart reminder) is
    marketing; a welcome after signing up may be relationship. Transactional is for what
    they asked for, and goes through the send API."""
    if value in (Category.MARKETING, Category.RELATIONSHIP):
        return Category(value)
    raise ValueError(
        f"{value!r}: write 'marketing' (a cart reminder, an offer) or 'relationship' (a welcome)"
    )


def _web_link(value: str) -> str:
    """Only links a mail client will open for everyone: http(s) with a host."""
    parts = urlsplit(value)
    blank = any(char.isspace() for char in value)
    if parts.scheme not in ("http", "https") or not parts.hostname or blank:
        raise ValueError(f"{value!r} is not a web link such as 'https://meet.example/spring'")
    return value


def _segment_exists(names: list[str], info: ValidationInfo) -> list[str]:
    around = _surroundings(info)
    if around is None or around.segments is None:
        return names
    unknown = [name for name in names if name not in around.segments]
    if unknown:
        raise ValueError(
            f"{', '.join(map(repr, unknown))}: no such RFM segment; the segments are "
            + ", ".join(map(repr, around.segments))
        )
    return names


def segment_names(settings: InsightSettings) -> list[str]:
    """The segments customers are put in: the configured ones, else the shipped ones."""
    return list(settings.segments) or [rule.name for rule in rfm.default_rules()]


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in one currency, in its minor units, as the insight stores money."""

    minor: int
    currency: str

    def __str__(self) -> str:
        return f"{from_minor(self.minor, self.currency)} {self.currency}"


def _money(value: Any) -> Money:
    """'100.00 EUR' (amount, then an ISO 4217 code)."""
    if isinstance(value, Money):
        return value
    example = "write an amount and a currency, e.g. '100.00 EUR'"
    parts = str(value).split()
    if len(parts) != 2:
        raise ValueError(f"{value!r}: {example}")
    try:
        currency = currency_code(parts[1])
        return Money(to_minor(parts[0], currency), currency)
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}; {example}") from None


def _day_or_age(value: Any) -> date | timedelta:
    """A date ('2026-09-01') or how long before the run ('90d')."""
    if isinstance(value, date | timedelta) and not isinstance(value, datetime):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        pass
    try:
        return parse_duration(str(value))
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a date such as '2026-09-01' nor a time before the run"
            " such as '90d'"
        ) from None


def _probability(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"{value} is not a probability from 0 to 1, e.g. 0.2")
    return value


Crontab = Annotated[str, AfterValidator(_crontab)]
CustomerOrZone = Annotated[Literal["customer"] | ZoneInfo, BeforeValidator(_customer_or_zone)]
OffsetDateTime = Annotated[datetime, AfterValidator(_has_offset)]
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
Days = Annotated[Duration, AfterValidator(_whole_days)]
WebLink = Annotated[str, AfterValidator(_web_link)]
MoneyAmount = Annotated[Money, BeforeValidator(_money), PlainSerializer(str, return_type=str)]
DayOrAge = Annotated[
    date | timedelta,
    BeforeValidator(_day_or_age),
    PlainSerializer(lambda v: v if isinstance(v, date) else format_duration(v)),
]
Probability = Annotated[float, AfterValidator(_probability)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Audience(_Frozen):
    """Who receives a schedule; all filters empty means every customer."""

    tags_any: list[str] = []
    tags_all: list[str] = []
    locales: list[LocaleTag] = []
    exclude_tags: list[str] = []
    fields: dict[str, str] = {}  # custom fields from the customer import, equal to these values
    # what customers bought and what their insight says (see scheduling.audience)
    rfm_segments: list[str] = []
    bought_any: list[str] = []  # SKUs or categories, see scheduling.audience
    bought_none: list[str] = []
    orders_min: int | None = Field(default=None, ge=1)
    spent_min: MoneyAmount | None = None
    clv_min: MoneyAmount | None = None
    last_order_before: DayOrAge | None = None
    last_order_after: DayOrAge | None = None
    active_probability_below: Probability | None = None

    _segments = field_validator("rfm_segments")(_segment_exists)


class _Common(_Frozen):
    template: str = Field(min_length=1)
    audience: Audience = Audience()
    valid_for: PositiveDuration = timedelta(days=1)
    priority: int = Field(default=0, ge=-1000, le=1000)  # transactional mail goes at 100
    params: dict[str, Any] = {}
    enabled: bool = True  # false pauses it: nothing fires
    resumed_at: OffsetDateTime | None = None  # nothing planned before it fires (no catch-up)

    _template = field_validator("template")(_template_exists)


class NewsletterSchedule(_Common):
    """Fires on a crontab, at that local time per customer or in one fixed zone."""

    kind: Literal["newsletter"] = "newsletter"
    cron: Crontab
    timezone: CustomerOrZone = "customer"

    @property
    def category(self) -> Category:
        return Category.MARKETING


class _Daily(_Common):
    """Looked at once a day, at `send_at` in each customer's own zone; the occurrence is
    that local date."""

    send_at: ClockTime = time(9, 0)


class BirthdaySchedule(_Daily):
    """Once per customer per year, at `send_at` in the customer's own zone."""

    kind: Literal["birthday"] = "birthday"
    feb29: Literal["feb28", "mar1"] = "feb28"

    @property
    def category(self) -> Category:
        return Category.RELATIONSHIP


class ReorderSchedule(_Daily):
    """A message `lead` before each customer's predicted next order, once per purchase
    cycle (a new order starts the next one); see scheduling.purchases."""

    kind: Literal["reorder"] = "reorder"
    template: str = Field(default="reorder", min_length=1, validate_default=True)
    lead: Days = timedelta(days=7)

    @property
    def category(self) -> Category:
        return Category.MARKETING


class WinbackSchedule(_Daily):
    """A message once a customer's active probability falls below `below`, once per lapse:
    who buys again and drifts again is written again."""

    kind: Literal["winback"] = "winback"
    template: str = Field(default="winback", min_length=1, validate_default=True)
    below: Probability = 0.3

    @property
    def category(self) -> Category:
        return Category.MARKETING


class AfterPurchaseSchedule(_Daily):
    """A thank-you or review request `after` an order day, once per customer and order day,
    optionally only for orders with a line in one of `categories`.

    A review request or an offer is marketing in most law, so that is the default; a plain
    thank-you may say ``category = "relationship"``.
    """

    kind: Literal["after_purchase"] = "after_purchase"
    template: str = Field(default="after_purchase", min_length=1, validate_default=True)
    after: Annotated[Days, AfterValidator(_a_day_or_more)]
    categories: list[Annotated[str, Field(min_length=1)]] = []
    category: Annotated[Category, BeforeValidator(_purchase_category)] = Category.MARKETING


class EventSchedule(_Common):
    """A message `delay` after each customer event named `event` (cart_abandoned) unless
    one named in `unless` (order_placed) arrives for that customer first; once per event.
    Only events that occur after mailer first saw the schedule fire; see
    scheduling.triggers."""

    kind: Literal["event"] = "event"
    event: EventName
    delay: Annotated[Duration, AfterValidator(_not_negative)]
    unless: list[EventName] = []
    category: Annotated[Category, BeforeValidator(_event_category)] = Category.MARKETING


PurchaseSchedule = ReorderSchedule | WinbackSchedule | AfterPurchaseSchedule
Daily = BirthdaySchedule | ReorderSchedule | WinbackSchedule | AfterPurchaseSchedule


class WebinarSchedule(_Common):
    """One event: an invite at `invite_at`, then reminders a set time before the start.

    Fields are declared in the order the cross-checks need them (pydantic validates in order).
    """

    kind: Literal["webinar"] = "webinar"
    template: str = Field(default="webinar_invite", min_length=1, validate_default=True)
    title: str = Field(min_length=1)
    description: str = ""
    cancelled: bool = False
    starts_at: OffsetDateTime
    duration: PositiveDuration
    join_url: WebLink
    organizer: EmailAddress
    organizer_name: str | None = None
    invite_at: OffsetDateTime
    reminder_template: str | None = None
    reminders: list[PositiveDuration] = []
    cancel_template: str = Field(default="webinar_cancel", min_length=1, validate_default=True)

    _reminder_template = field_validator("reminder_template", "cancel_template")(_template_exists)

    @property
    def category(self) -> Category:
        return Category.MARKETING

    @field_validator("starts_at")
    @classmethod
    def _not_started(cls, starts_at: datetime, info: ValidationInfo) -> datetime:
        around = _surroundings(info)
        if around is not None and starts_at <= around.now and not info.data.get("cancelled"):
            raise ValueError(
                f"the webinar has already started ({starts_at.isoformat()}); "
                "nothing more is sent, remove the file"
            )
        return starts_at

    @field_validator("invite_at")
    @classmethod
    def _invite_before_start(cls, invite_at: datetime, info: ValidationInfo) -> datetime:
        starts_at = info.data.get("starts_at")
        if starts_at is not None and invite_at >= starts_at:
            raise ValueError(f"must be before starts_at ({starts_at.isoformat()})")
        return invite_at

    @field_validator("reminders")
    @classmethod
    def _reminders_fit(cls, reminders: list[timedelta], info: ValidationInfo) -> list[timedelta]:
        if reminders and "reminder_template" in info.data and not info.data["reminder_template"]:
            raise ValueError("reminders need a reminder_template to send")
        starts_at, invite_at = info.data.get("starts_at"), info.data.get("invite_at")
        if starts_at is None or invite_at is None:
            return reminders
        for early in reminders:
            if starts_at - early <= invite_at:
                raise ValueError(f"the {format_duration(early)} reminder falls before invite_at")
        return reminders


Schedule = Annotated[
    NewsletterSchedule
    | BirthdaySchedule
    | WebinarSchedule
    | ReorderSchedule
    | WinbackSchedule
    | AfterPurchaseSchedule
    | EventSchedule,
    Field(discriminator="kind"),
]
_SCHEDULE: TypeAdapter[Schedule] = TypeAdapter(Schedule)
_BY_KIND: dict[str, type[BaseModel]] = {
    "newsletter": NewsletterSchedule,
    "birthday": BirthdaySchedule,
    "webinar": WebinarSchedule,
    "reorder": ReorderSchedule,
    "winback": WinbackSchedule,
    "after_purchase": AfterPurchaseSchedule,
    "event": EventSchedule,
}


def load_schedules(
    directory: Path,
    template_names: Collection[str],
    clock: Clock,
    segments: Collection[str] | None = None,
) -> tuple[dict[str, Schedule], list[Problem]]:
    """Every `*.toml` in `directory`, named by file stem: the flawless ones and all problems.

    A broken file never hides the good ones, and every problem is listed, not just the first.
    """
    if not directory.is_dir():
        return {}, [Problem(str(directory), "is not a directory of schedule files")]
    schedules: dict[str, Schedule] = {}
    problems: list[Problem] = []
    for path in sorted(directory.glob("*.toml")):
        if path.name.startswith("."):  # editor lock and swap files
            continue
        schedule, found = load_schedule(path, template_names, clock, segments)
        problems += found
        if schedule is not None:
            schedules[path.stem] = schedule
    return schedules, problems


def load_schedule(
    path: Path,
    template_names: Collection[str],
    clock: Clock,
    segments: Collection[str] | None = None,
) -> tuple[Schedule | None, list[Problem]]:
    """One schedule file, e.g. on reload; the schedule comes back only if it has no problem.
    Segment names are checked against ``segments`` when given."""
    where = str(path)
    problems = [] if _NAME.match(path.stem) else [_bad_name(where)]
    try:
        data = read_toml(path)
    except tomllib.TOMLDecodeError as exc:
        return None, [*problems, Problem(where, f"not valid TOML: {exc}")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [*problems, Problem(where, f"cannot be read: {exc}")]
    schedule, found = validate(where, data, template_names, clock.now(), segments)
    return (None if problems else schedule), [*problems, *found]


def validate(
    where: str,
    data: dict[str, Any],
    template_names: Collection[str],
    now: datetime,
    segments: Collection[str] | None = None,
) -> tuple[Schedule | None, list[Problem]]:
    """A schedule's parsed TOML checked as `mailer check` checks it, before it is written."""
    around = _Surroundings(template_names, now, segments)
    try:
        return _SCHEDULE.validate_python(data, context=around), []
    except ValidationError as exc:
        return None, _problems_from(where, exc)


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def _bad_name(where: str) -> Problem:
    """The file stem is the name used on the command line and in dedupe keys."""
    return Problem(where, "name the file with letters, digits, '-' and '_' only")


def _problems_from(where: str, error: ValidationError) -> list[Problem]:
    """Pydantic's errors in a marketer's words: the file and dotted key, then what is wrong."""
    return [
        Problem(f"{where}: {_key(detail['loc'])}", _message(detail))
        for detail in error.errors(include_url=False)
    ]


def _key(loc: tuple[int | str, ...]) -> str:
    """A dotted key such as audience.tags_any. loc[0] is the kind that chose the model;
    errors about the kind itself (missing or unknown) have no location at all."""
    return ".".join(str(part) for part in loc[1:]) or "kind"


_KINDS = (
    'write kind = "newsletter", "birthday", "webinar", "reorder", "winback", "after_purchase"'
    ' or "event"'
)


def _message(detail: ErrorDetails) -> str:
    ctx = detail.get("ctx", {})
    match detail["type"]:
        case "union_tag_not_found":
            return f"is required; {_KINDS}"
        case "union_tag_invalid":
            return f"{ctx['tag']!r} is not a kind of schedule; {_KINDS}"
        case "value_error":
            return str(ctx["error"])
        case "missing":
            return "is required"
        case "list_type":
            return 'is not a list; write e.g. ["coffee", "tea"]'
        case "extra_forbidden":
            key, allowed = str(detail["loc"][-1]), _keys_beside(detail["loc"])
            close = difflib.get_close_matches(key, allowed, n=1)
            return "is not a known key" + (f" (did you mean {close[0]!r}?)" if close else "")
    return detail["msg"]


def _keys_beside(loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed where an unknown key was found, for a did-you-mean hint."""
    model = _BY_KIND[str(loc[0])]
    for part in loc[1:-1]:
        inner = model.model_fields[str(part)].annotation
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return []
        model = inner
    return list(model.model_fields)
