"""Reading customers from CSV: every row validated on its own, with its line number.

Pure code over text; the database side is in ``customers``. A bad row never stops the
file: it is reported with its line and reason, and the good rows go on.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TextIO

from mailer.errors import ImportFileError
from mailer.fieldtypes import email_address, locale_tag, zone

KNOWN_COLUMNS = frozenset(
    {
        "email",
        "name",
        "first_name",
        "locale",
        "timezone",
        "birthday",
        "tags",
        "marketing_consent",
        "relationship_consent",
    }
)
_ALIASES = {
    "e_mail": "email",
    "email_address": "email",
    "firstname": "first_name",
    "given_name": "first_name",
    "full_name": "name",
    "time_zone": "timezone",
    "language": "locale",
    "date_of_birth": "birthday",
    "birthdate": "birthday",
}
_YES = frozenset({"1", "yes", "y", "true", "t", "on"})
_NO = frozenset({"0", "no", "n", "false", "f", "off"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_BIRTHDAY_FORMATS = (
    (re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$"), ("year", "month", "day")),
    (re.compile(r"^--(\d{1,2})-(\d{1,2})$"), ("month", "day")),
    (re.compile(r"^(\d{1,2})-(\d{1,2})$"), ("month", "day")),
    (re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$"), ("day", "month", "year")),
    (re.compile(r"^(\d{1,2})\.(\d{1,2})\.?$"), ("day", "month")),
)


@dataclass(frozen=True, slots=True)
class Birthday:
    month: int
    day: int
    year: int | None = None


@dataclass(frozen=True, slots=True)
class CustomerRow:
    """One valid row. ``None`` (or an empty tuple/dict) means the file did not say."""

    line: int
    email: str
    name: str | None = None
    first_name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    birthday: Birthday | None = None
    tags: tuple[str, ...] | None = None
    fields: dict[str, str] = field(default_factory=dict)
    marketing_consent: bool | None = None
    relationship_consent: bool | None = None


@dataclass(frozen=True, slots=True)
class RejectedRow:
    line: int
    email: str
    reason: str


def normalise_email(text: str) -> str:
    """The key customers are stored under: validated, then lower-cased as a whole."""
    return email_address(text).lower()


def parse_birthday(text: str) -> Birthday:
    """2001-02-28, --02-29 or 02-29 (year unknown), 28.02.2001 or 28.02."""
    for pattern, names in _BIRTHDAY_FORMATS:
        match = pattern.match(text)
        if match:
            parts = dict(zip(names, map(int, match.groups()), strict=True))
            year = parts.get("year")
            try:  # a leap year stands in for an unknown year, so 29 February is allowed
                date(year or 2000, parts["month"], parts["day"])
            except ValueError:
                break
            return Birthday(parts["month"], parts["day"], year)
    raise ValueError(
        f"birthday {text!r} is not a date; use 1990-04-17, --04-17 (no year) or 17.04.1990"
    )


def _flag(column: str, text: str) -> bool | None:
    lowered = text.lower()
    if not lowered:
        return None
    if lowered in _YES or lowered in _NO:
        return lowered in _YES
    raise ValueError(f"{column} {text!r} is not yes or no")


def _tags(text: str) -> tuple[str, ...] | None:
    tags = {t.strip().lower() for t in re.split(r"[;,|]", text) if t.strip()}
    return tuple(sorted(tags)) or None


def _text(value: str) -> str | None:
    """A cell as stored: control characters (CR/LF) become spaces; empty means not given."""
    cleaned = _CONTROL.sub(" ", value).strip()
    return cleaned or None


def parse_row(line: int, cells: dict[str, str]) -> CustomerRow:
    """Validate one row; raise ValueError naming every problem in it."""
    errors: list[str] = []
    values: dict[str, Any] = {}

    def take(column: str, convert: Any) -> None:
        text = (cells.get(column) or "").strip()
        if not text:
            return
        try:
            values[column] = convert(text)
        except ValueError as exc:
            errors.append(str(exc))

    take("email", normalise_email)
    take("locale", locale_tag)
    take("timezone", lambda t: str(zone(t)))
    take("birthday", parse_birthday)
    take("tags", _tags)
    for consent in ("marketing_consent", "relationship_consent"):
        take(consent, lambda t, c=consent: _flag(c, t))
    if "email" not in values and not errors:
        errors.append("no email address")
    if errors:
        raise ValueError("; ".join(errors))
    for column in ("name", "first_name"):
        values[column] = _text(cells.get(column) or "")
    extra = {k: v for k, v in cells.items() if k not in KNOWN_COLUMNS}
    values["fields"] = {k: t for k, v in extra.items() if (t := _text(v or ""))}
    return CustomerRow(line=line, **values)


def normalise_header(name: str) -> str:
    """'E-Mail' -> 'email', 'First Name' -> 'first_name': spreadsheets name columns freely."""
    key = re.sub(r"[\s\-]+", "_", name.lstrip("\ufeff").strip().lower())
    return _ALIASES.get(key, key)


def read_rows(stream: TextIO) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, cells by normalised column) for each data row; the header is checked."""
    sample = stream.read(64 * 1024)
    stream.seek(0)
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(stream, dialect)
    header = [normalise_header(h) for h in next(reader, [])]
    if "email" not in header:
        raise ImportFileError("the first line must be a header with an 'email' column")
    duplicated = {h for h in header if header.count(h) > 1}
    if duplicated:
        raise ImportFileError(f"the header repeats column(s): {', '.join(sorted(duplicated))}")
    for cells in reader:
        if any(c.strip() for c in cells):
            yield reader.line_num, dict(zip(header, cells, strict=False))


def parse_rows(
    rows: Iterable[tuple[int, dict[str, str]]],
) -> Iterator[CustomerRow | RejectedRow]:
    for line, cells in rows:
        try:
            yield parse_row(line, cells)
        except ValueError as exc:
            yield RejectedRow(line, (cells.get("email") or "").strip(), str(exc))
