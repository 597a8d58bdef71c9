"""A customer as staff edit it: the form read with the checks a CSV import makes, and what
changed between two versions of the record, one entry per field, for the history.

Pure code over plain values; ``profiles`` stores the edit and its changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from mailer.core.categories import Category
from mailer.core.errors import InvalidInput, Problem
from mailer.core.fieldtypes import wall_moment
from mailer.customers.csv_rows import (
    KNOWN_COLUMNS,
    Birthday,
    clean_text,
    convert_cells,
    normalise_header,
)

CAPPED = (Category.MARKETING, Category.RELATIONSHIP)  # transactional mail is never capped
CAP_PERIODS = ("per_day", "per_week", "per_30d")
FIELD_PREFIX = "field."  # a custom field's input is named field.<key>
NEW_FIELD = ("new_field_name", "new_field_value")
# what the history records, in the order it lists a change's fields; custom fields follow
RECORDED = (
    "email",
    "name",
    "first_name",
    "locale",
    "timezone",
    "birthday",
    "marketing_consent",
    "relationship_consent",
    "pause_until",
    "caps_override",
    "tags",
)
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")
LONGEST = {"name": 200, "first_name": 100, "tags": 100}  # the columns' sizes; a tag each


@dataclass(frozen=True, slots=True)
class Change:
    """One field's value before and after, as JSON values (a removed custom field is None)."""

    field: str
    before: Any
    after: Any


def record(columns: Mapping[str, Any], tags: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """A customer's editable values as the history records them, from the table's columns:
    the birthday as one text, times as ISO text, each custom field under "fields.<key>"."""
    flat = {k: columns[k] for k in RECORDED if k in columns}
    flat["birthday"] = birthday_text(columns)
    pause = columns.get("pause_until")
    flat["pause_until"] = (
        pause.astimezone(UTC).isoformat() if isinstance(pause, datetime) else pause
    )
    flat["tags"] = sorted(tags)
    for key, value in (columns.get("fields") or {}).items():
        flat[f"fields.{key}"] = value
    return flat


def birthday_text(columns: Mapping[str, Any]) -> str | None:
    month, day, year = (columns.get(f"birth_{p}") for p in ("month", "day", "year"))
    if not month or not day:
        return None
    return f"{year:04d}-{month:02d}-{day:02d}" if year else f"--{month:02d}-{day:02d}"


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """What differs, in RECORDED order and then custom fields by key; a key missing on
    one side counts as None there."""
    customs = sorted({k for k in [*before, *after] if k.startswith("fields.")})
    return [
        Change(key, before.get(key), after.get(key))
        for key in [*RECORDED, *customs]
        if before.get(key) != after.get(key)
    ]


def read_form(form: Mapping[str, str], zone: ZoneInfo) -> dict[str, Any]:
    """The customers columns a submitted form sets, checked as an import checks a row, with
    ``tags``; an empty input clears its value. Raises InvalidInput naming each bad input."""
    checked_columns = ("email", "locale", "timezone", "birthday", "tags")
    values, errors = convert_cells({k: form.get(k, "") for k in checked_columns})
    if "email" not in values and "email" not in errors:
        errors["email"] = "no email address"
    checked: dict[str, Any] = {
        "name": clean_text(form.get("name", "")) or "",
        "first_name": clean_text(form.get("first_name", "")) or "",
        "locale": values.get("locale"),
        "timezone": values.get("timezone"),
        "marketing_consent": form.get("marketing_consent") == "on",
        "relationship_consent": form.get("relationship_consent") == "on",
    }
    for name, read in (("pause_until", _pause), ("caps_override", _caps), ("fields", _fields)):
        try:
            checked[name] = read(form, zone)
        except InvalidInput as exc:
            errors.update({p.where: p.message for p in exc.problems})
    errors.update(_too_long(checked["name"], checked["first_name"], values.get("tags") or ()))
    if errors:
        raise InvalidInput([Problem(where, message) for where, message in errors.items()])
    if not checked["first_name"] and checked["name"]:  # as an import fills it in
        checked["first_name"] = checked["name"].split()[0]
    born: Birthday | None = values.get("birthday")
    checked.update(
        email=values["email"],
        birth_month=born.month if born else None,
        birth_day=born.day if born else None,
        birth_year=born.year if born else None,
        tags=values.get("tags") or (),
    )
    return checked


def _too_long(name: str, first_name: str, tags: tuple[str, ...]) -> dict[str, str]:
    """What would not fit its column (an import would fail on PostgreSQL there)."""
    found = {
        key: f"longer than {LONGEST[key]} characters"
        for key, text in (("name", name), ("first_name", first_name))
        if len(text) > LONGEST[key]
    }
    if any(len(tag) > LONGEST["tags"] for tag in tags):
        found["tags"] = f"a tag is longer than {LONGEST['tags']} characters"
    return found


def _pause(form: Mapping[str, str], zone: ZoneInfo) -> datetime | None:
    """A wall-clock time in the reader's zone, as a datetime-local input sends it."""
    text = form.get("pause_until", "").strip()
    if not text:
        return None
    try:
        if not _LOCAL_TIME.match(text):
            raise ValueError
        typed = datetime.fromisoformat(text)
    except ValueError:
        message = f"{text!r} is not a date and time such as 2026-12-24T09:00"
        raise InvalidInput([Problem("pause_until", message)]) from None
    try:
        return wall_moment(typed, zone)
    except ValueError as exc:
        raise InvalidInput([Problem("pause_until", f"{text!r} is {exc}")]) from None


def _caps(form: Mapping[str, str], _zone: ZoneInfo) -> dict[str, dict[str, int]] | None:
    """Per category, the caps that are given; none given means the configured ones."""
    caps: dict[str, dict[str, int]] = {}
    problems = []
    for category in CAPPED:
        for period in CAP_PERIODS:
            name = f"caps.{category}.{period}"
            text = form.get(name, "").strip()
            if not text:
                continue
            if not (text.isascii() and text.isdigit()):
                problems.append(Problem(name, f"{text!r} is not a whole number, 0 or more"))
                continue
            caps.setdefault(category.value, {})[period] = int(text)
    if problems:
        raise InvalidInput(problems)
    return caps or None


def _fields(form: Mapping[str, str], _zone: ZoneInfo) -> dict[str, str]:
    """The custom fields kept (an emptied one is removed) and the one added, named as a CSV
    column would be."""
    kept = {
        key.removeprefix(FIELD_PREFIX): text
        for key, value in form.items()
        if key.startswith(FIELD_PREFIX) and key != FIELD_PREFIX and (text := clean_text(value))
    }
    name_input, value_input = NEW_FIELD
    raw_name = form.get(name_input, "").strip()
    value = clean_text(form.get(value_input, ""))
    if not raw_name and not value:
        return kept
    key = normalise_header(raw_name)
    if not key or key in KNOWN_COLUMNS:
        reason = (
            "needs a name" if not key else f"{key!r} is a column of its own, not a custom field"
        )
        raise InvalidInput([Problem(name_input, reason)])
    if value:
        kept[key] = value
    return kept
