"""Validated value types shared by config.toml, schedules and CSV imports.

Each is a pydantic-annotated type whose error message names what was wrong and what is
accepted, so the caller only has to add the file and key.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import email_validator
from babel import Locale, UnknownLocaleError
from email_validator import EmailNotValidError, validate_email
from holidays.registry import EntityLoader
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, PlainSerializer

from mailer.core.durations import format_duration, parse_duration

# Special-use names (IANA registry, RFC 6761 and later): mail for them never leaves the
# network it is sent in. Companies run intranets on them and test setups use them, so
# mailer accepts addresses there and `mailer check` warns instead. email-validator 2.x
# refuses them whatever it is told, so its own list is emptied for this process.
SPECIAL_USE_DOMAINS = (
    "alt",
    "arpa",
    "example",
    "internal",
    "invalid",
    "local",
    "localhost",
    "onion",
    "test",
)
email_validator.SPECIAL_USE_DOMAIN_NAMES = []
# The shape nearly every real address has: an ASCII dot-atom before the @, letter, digit
# and hyphen labels after it, ending in a letters-only top-level domain. email-validator
# takes about 0.7 ms an address, most of it Unicode and IDNA checks that such an address
# cannot fail; it answers exactly as this does for them (tests/test_fieldtypes.py), so
# batches of them skip it. Everything else still goes through it.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_ADDRESS = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+[A-Za-z]{{2,63}})")
_LOCAL_MAX, _ADDRESS_MAX = 64, 254


@lru_cache(maxsize=1024)
def _known_locale(tag: str) -> bool:
    """Babel's look-up is slow (about 0.1 ms) and customers share few locales: remember it."""
    try:
        Locale.parse(tag)
    except (UnknownLocaleError, ValueError):
        return False
    return True


def zone(name: Any) -> ZoneInfo:
    """An IANA time zone such as "Europe/Sofia"; abbreviations like "EST" are refused."""
    if isinstance(name, ZoneInfo):
        return name
    if not isinstance(name, str) or ("/" not in name and name != "UTC"):
        raise ValueError(f"{name!r} is not an IANA time zone such as 'Europe/Sofia' or 'UTC'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a known IANA time zone") from None


def locale_tag(value: Any) -> str:
    """A locale such as "bg", "bg-BG" or "en_US", normalised to BCP 47 form ("bg-BG").

    The language code is kept as written ("tl" stays "tl"; babel would alias it to "fil"),
    because template folders are named after it.
    """
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a locale such as 'en', 'bg' or 'id-ID'")
    return _shaped_locale(value)


@lru_cache(maxsize=1024)
def _shaped_locale(value: str) -> str:
    """``locale_tag`` of a text, remembered: customers share few locales, and an API batch
    or an import checks the same ones a thousand times."""
    text = value.strip().replace("_", "-")
    parts = text.split("-")
    if not text or not all(p.isalnum() for p in parts):
        raise ValueError(f"{value!r} is not a locale such as 'en', 'bg' or 'id-ID'")
    if not _known_locale("_".join(parts)):
        raise ValueError(f"{value!r} is not a known locale")
    shaped = [parts[0].lower()]
    shaped += [p.title() if len(p) == 4 else p.upper() for p in parts[1:]]
    return "-".join(shaped)


def special_use_domain(address: str) -> str | None:
    """The special-use name an address's domain is or ends in ("local"), else None."""
    domain = address.rpartition("@")[2].strip().rstrip(".").lower()
    for name in SPECIAL_USE_DOMAINS:
        if domain == name or domain.endswith("." + name):
            return name
    return None


def email_address(value: Any) -> str:
    """A syntactically valid address, normalised (domain lower-cased); DNS is never asked.

    A domain needs a dot ("john@gmail" is a typo) unless it is a special-use name itself,
    as in "root@localhost".
    """
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an email address")
    text = value.strip()
    plain = _plain_address(text)
    if plain is not None:
        return plain
    dotless = text.rpartition("@")[2].lower() in SPECIAL_USE_DOMAINS
    try:
        return validate_email(
            text, check_deliverability=False, globally_deliverable=not dotless
        ).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{text!r} is not a valid email address: {exc}") from None


def sendable_address(address: str) -> str | None:
    """A valid address as SMTP without SMTPUTF8 carries it: an international domain in its
    ASCII form (bücher.example -> xn--bcher-kva.example); None when the part before the @
    is not ASCII, which mailer cannot send to yet."""
    if address.isascii():
        return address
    try:
        found = validate_email(address, check_deliverability=False, globally_deliverable=False)
    except EmailNotValidError:
        return None
    return found.ascii_email


def _plain_address(text: str) -> str | None:
    """The normalised address when ``text`` has the plain shape, else None."""
    match = _PLAIN_ADDRESS.fullmatch(text)
    if match is None or len(text) > _ADDRESS_MAX or len(match[1]) > _LOCAL_MAX:
        return None
    domain = match[2]
    if "--" in domain:  # "xn--" and the like: IDNA's rules decide
        return None
    return f"{match[1]}@{domain.lower()}"


def clock_time(value: Any) -> time:
    """A wall-clock time written "HH:MM"."""
    if isinstance(value, time):
        return value
    try:
        hours, minutes = str(value).split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"{value!r} is not a time of day written HH:MM, e.g. '09:00'") from None


EVENT_NAME = r"^[a-z][a-z0-9_.:-]*$"  # what the shop names its customer events


def event_name(value: Any) -> str:
    """A customer event's name as the API takes it: "cart_abandoned", "order_placed"."""
    if not isinstance(value, str) or not re.match(EVENT_NAME, value) or len(value) > 100:
        raise ValueError(
            f"{value!r} is not an event name: lower case, digits and _ . : -, e.g. 'cart_abandoned'"
        )
    return value


MAX_ID = 2**31 - 1  # the largest id an id column holds (INTEGER: int4 on PostgreSQL)
EARLIEST, LATEST = datetime(1900, 1, 1, tzinfo=UTC), datetime(3000, 1, 1, tzinfo=UTC)
OUT_OF_RANGE = "not between the years 1900 and 2999"


def whole_number(text: str, most: int = MAX_ID) -> int | None:
    """A count or id typed into a form or an address, or None: ASCII digits only ("²" is a
    digit to str.isdigit, and int() refuses it), and no more than ``most``."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(most)):
        return None
    number = int(text)
    return number if number <= most else None


def utc_moment(value: datetime) -> datetime:
    """A moment from outside (a file, a form, a request) in UTC. Outside the years 1900 to
    2999 it is a placeholder (0001-01-01 is a common "no date") or a typo, and a zone's
    offset can push it past the calendar's ends: refused, saying so."""
    try:
        at = value.astimezone(UTC)
    except OverflowError:
        raise ValueError(OUT_OF_RANGE) from None
    if not EARLIEST <= at < LATEST:
        raise ValueError(OUT_OF_RANGE)
    return at


def wall_moment(value: datetime, zone: ZoneInfo) -> datetime:
    """A moment in UTC, given as ``zone``'s clocks show it unless it carries an offset (a
    form's or a command's time). A time those clocks skip when they go forward is refused:
    any instant chosen for it is off by the clocks' jump (an hour, in some zones half of
    one), and a meeting's invitation would say so to the customer. Of a time they show
    twice, the first."""
    if value.tzinfo is not None:
        return utc_moment(value)
    placed = value.replace(tzinfo=zone, fold=0)
    try:
        shown = placed.astimezone(UTC).astimezone(zone)
    except OverflowError:
        raise ValueError(OUT_OF_RANGE) from None
    if shown.replace(tzinfo=None) != value:
        raise ValueError(f"a time {zone.key}'s clocks skip: they go forward that night")
    return utc_moment(placed)


def bound_moment(value: datetime) -> datetime:
    """A moment that only bounds a search ("since"), in UTC: one before 1900 or after 2999
    is taken as that end of the range, as it selects the same."""
    try:
        return utc_moment(value)
    except ValueError:
        return EARLIEST if value.year < 1900 else LATEST


def duration(value: Any) -> timedelta:
    return value if isinstance(value, timedelta) else parse_duration(value)


Duration = Annotated[
    timedelta, BeforeValidator(duration), PlainSerializer(format_duration, return_type=str)
]
TimeZone = Annotated[ZoneInfo, BeforeValidator(zone), PlainSerializer(str, return_type=str)]
LocaleTag = Annotated[str, BeforeValidator(locale_tag)]
EmailAddress = Annotated[str, BeforeValidator(email_address)]
EventName = Annotated[str, BeforeValidator(event_name)]
UtcMoment = Annotated[AwareDatetime, AfterValidator(utc_moment)]
BoundMoment = Annotated[AwareDatetime, AfterValidator(bound_moment)]
ClockTime = Annotated[
    time,
    BeforeValidator(clock_time),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
]


NO_WORKING_DAY = "business hours need at least one working day, and none is set"


def holiday_country(code: str) -> str:
    """A country whose public holidays are known ("BG", "DE"); "" means none.

    Checked when config.toml is read, so `mailer check` refuses what start-up would. The
    registry's list of codes is read, not ``list_supported_countries()``, which loads every
    country's calendar (a quarter of a second on each command).
    """
    known = code.strip().upper()
    if known and known not in EntityLoader.get_country_codes():
        raise ValueError(
            f"public holidays are not known for country {code.strip()!r}; use a two-letter ISO code"
            " such as 'BG' or 'DE', or \"\" for none"
        )
    return known
