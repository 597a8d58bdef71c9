"""Reading customers from CSV: every row validated on its own, with its line number.

Pure code over text; the database side is in ``customers``. A bad row never stops the
file: it is reported with the physical line it starts on and its reason, and the good rows
go on. That holds for a cell too long to be a customer's (a quote that never closes) and
for a stray byte that is not UTF-8; only a file that is not UTF-8 text from its start is
refused as a whole. What a file says is shown escaped, never as terminal control codes.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any, TextIO

from mailer.core.errors import ImportFileError
from mailer.core.fieldtypes import email_address, locale_tag, zone

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
    "e_mail_address": "email",
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
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # a byte that was not UTF-8, as surrogateescape has it
_LINE_END = re.compile(r"\r\n?|\n")
SAMPLE = 64 * 1024  # characters read first: to tell the delimiter, and whether this is text
CELL_LIMIT = 128 * 1024  # characters in one cell; more is a quote that never closes
READ_LIMIT = 16 * 1024 * 1024  # what csv may gather for one cell before the file is given up
# each format with where its month, day and year (if any) are among the groups
_BIRTHDAY_FORMATS = (
    (re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$"), (1, 2, 0)),
    (re.compile(r"^--(\d{1,2})-(\d{1,2})$"), (0, 1, None)),
    (re.compile(r"^(\d{1,2})-(\d{1,2})$"), (0, 1, None)),
    (re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$"), (1, 0, 2)),
    (re.compile(r"^(\d{1,2})\.(\d{1,2})\.?$"), (1, 0, None)),
)
_TAG_SEPARATORS = re.compile(r"[;,|]")


@dataclass(frozen=True, slots=True)
class Birthday:
    month: int
    day: int
    year: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
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

    @classmethod
    def of(cls, line: int, email: str, reason: str) -> RejectedRow:
        """A rejection that is safe to print: what came from the file is escaped and cut."""
        return cls(line, shown(email.strip(), 100), shown(reason, 500))


class InvalidRow(ValueError):
    """A row with problems, each by its column, so an API can point at the field; its
    message is them all in one line, as an import reports it."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        super().__init__("; ".join(self.problems.values()))


def shown(text: str, limit: int = 200) -> str:
    """Text from a file as it may reach a terminal: control, format and undecodable
    characters escaped (no ANSI sequences, no bidi overrides), at most ``limit`` long."""
    cut = text if len(text) <= limit else text[:limit] + "…"
    if cut.isprintable():
        return cut
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)


def normalise_email(text: str) -> str:
    """The key customers are stored under: validated, then lower-cased as a whole."""
    return email_address(text).lower()


EARLIEST_BIRTH_YEAR, LATEST_BIRTH_YEAR = 1900, 2099


def parse_birthday(text: str) -> Birthday:
    """2001-02-28, --02-29 or 02-29 (year unknown), 28.02.2001 or 28.02. A year before
    1900 is what address books write for "no year" (1604, 0001): the year is unknown. One
    after 2099 is a typo, refused."""
    for pattern, (month_at, day_at, year_at) in _BIRTHDAY_FORMATS:
        match = pattern.match(text)
        if match:
            parts = match.groups()
            month, day = int(parts[month_at]), int(parts[day_at])
            year = None if year_at is None else int(parts[year_at])
            if year is not None and year > LATEST_BIRTH_YEAR:
                raise ValueError(f"birthday {text!r} has a year to come; is it a typo?")
            year = year if year is None or year >= EARLIEST_BIRTH_YEAR else None
            try:  # a leap year stands in for an unknown year, so 29 February is allowed
                date(year or 2000, month, day)
            except ValueError:
                break
            return Birthday(month, day, year)
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
    # control characters cleared as in any text: PostgreSQL cannot store a NUL
    tags = {c.lower() for t in _TAG_SEPARATORS.split(text) if (c := clean_text(t))}
    return tuple(sorted(tags)) or None


def clean_text(value: str) -> str | None:
    """A cell as stored: control characters (CR/LF) become spaces; empty means not given."""
    # most cells hold no control character, and telling so costs a tenth of replacing them
    cleaned = (value if value.isprintable() else _CONTROL.sub(" ", value)).strip()
    return cleaned or None


def parse_row(line: int, cells: dict[str, str]) -> CustomerRow:
    """Validate one row; raise InvalidRow naming every problem in it."""
    values, errors = convert_cells(cells)
    if "email" not in values and not errors:
        errors["email"] = "no email address"
    if errors:
        raise InvalidRow(errors)
    for column in ("name", "first_name"):
        values[column] = clean_text(cells.get(column) or "")
    extra = {k: v for k, v in cells.items() if k not in KNOWN_COLUMNS}
    values["fields"] = {k: t for k, v in extra.items() if (t := clean_text(v or ""))}
    return CustomerRow(line=line, **values)


def convert_cells(cells: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The known columns that are given, converted, and what is wrong with each of the rest,
    by column: the checks an import and the customer form share."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for column, convert in _CONVERTERS.items():
        text = (cells.get(column) or "").strip()
        if not text:
            continue
        try:
            values[column] = convert(text)
        except ValueError as exc:
            errors[column] = str(exc)
    return values, errors


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "email": normalise_email,
    "locale": locale_tag,
    "timezone": lambda t: str(zone(t)),
    "birthday": parse_birthday,
    "tags": _tags,
    "marketing_consent": lambda t: _flag("marketing_consent", t),
    "relationship_consent": lambda t: _flag("relationship_consent", t),
}


@lru_cache(maxsize=1024)
def normalise_header(name: str) -> str:
    """'E-Mail' -> 'email', 'First Name' -> 'first_name': spreadsheets name columns freely.
    Remembered: the API names each custom field of each customer of a batch anew."""
    key = re.sub(r"[\s\-\x00-\x1f\x7f-\x9f]+", "_", name.lstrip("\ufeff").strip().lower())
    return _ALIASES.get(key, key)


def read_rows(
    stream: TextIO, name: Callable[[str], str] = normalise_header, required: str = "email"
) -> Iterator[tuple[int, dict[str, str]] | RejectedRow]:
    """(first line, cells by normalised column) for each data row, or why it was rejected.
    ``name`` turns a header cell into a column name, and ``required`` is the column the
    header must have (orders and products are read with their own).

    The stream is decoded with ``errors="surrogateescape"``, so a byte that is not UTF-8
    rejects its row by line instead of ending the file. The header is checked, and so is
    that the start of the file is UTF-8 text at all.
    """
    header, rows = read_table(stream, name, required)
    for row in rows:
        if isinstance(row, RejectedRow):
            yield row
            continue
        line, cells = row
        named = dict(zip(header, cells, strict=False))
        extra = too_many_cells(header, cells)
        yield RejectedRow.of(line, named.get("email") or "", extra) if extra else (line, named)


def too_many_cells(header: Sequence[str], cells: Sequence[str]) -> str:
    """Why a row with more filled cells than the header has columns cannot be read: every
    value after the stray separator would land in the wrong column. Empty cells at the end
    (a trailing comma, as some exporters write) are harmless."""
    if len(cells) <= len(header) or not any(cell.strip() for cell in cells[len(header) :]):
        return ""
    return (
        f"{len(cells)} cells but the header has {len(header)} columns: a value holding the"
        " separator (a comma) needs double quotes around it"
    )


def read_table(
    stream: TextIO, name: Callable[[str], str] = normalise_header, required: str = "email"
) -> tuple[list[str], Iterator[tuple[int, list[str]] | RejectedRow]]:
    """The checked header, and (first line, cells in column order) for each data row, or why
    it was rejected: ``read_rows`` without a dictionary per row, for files of millions.
    The start of the file and its header are read and checked at once."""
    sample = stream.read(SAMPLE)
    _check_text(sample)
    stream.seek(0)
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    source = _Source(quote=dialect.quotechar or '"')
    reader = csv.reader(_lines(stream, source), dialect)
    limit = csv.field_size_limit(READ_LIMIT)
    try:
        header = _header(reader, name, required)
    finally:
        csv.field_size_limit(limit)
    source.quotes = 0
    return header, _data(reader, header, source)


def _check_text(sample: str) -> None:
    """Refuse a file that is not UTF-8 text from its start: a spreadsheet, UTF-16, Latin-1."""
    if sample.startswith(("\udcff\udcfe", "\udcfe\udcff")):
        raise ImportFileError("UTF-16 text, not UTF-8; save it as CSV UTF-8")
    if "\x00" in sample:
        raise ImportFileError("not a text file (it holds NUL bytes); save it as CSV UTF-8")
    found = _UNDECODABLE.search(sample)
    if found:
        line = len(_LINE_END.findall(sample, 0, found.start())) + 1
        raise ImportFileError(_not_utf8(line, ord(found.group()) - 0xDC00))


def _not_utf8(line: int, byte: int) -> str:
    return f"line {line}: byte 0x{byte:02X} is not UTF-8; save the file as CSV UTF-8"


@dataclass(slots=True)
class _Source:
    """What the reader of a file notes about its lines that csv does not say."""

    quote: str
    undecodable: dict[int, int] = field(default_factory=dict)  # line: its first non-UTF-8 byte
    quotes: int = 0  # quote characters in the lines of the record being read


def _lines(stream: TextIO, source: _Source) -> Iterator[str]:
    """The stream's lines, noting those with a byte that is not UTF-8 (rare: checked only
    in lines that are not ASCII) and counting quote characters: a record read with an odd
    number of them ended inside a quote, which only the end of the file does."""
    for number, line in enumerate(stream, 1):
        if not line.isascii() and (found := _UNDECODABLE.search(line)):
            source.undecodable[number] = ord(found.group()) - 0xDC00
        source.quotes += line.count(source.quote)
        yield line


def _header(reader: Any, name: Callable[[str], str], required: str) -> list[str]:
    try:
        written: list[str] = next(reader, [])
    except csv.Error as exc:
        raise ImportFileError(f"line 1: {exc}") from None
    header = [name(h) for h in written]
    while header and not header[-1]:  # a spreadsheet's empty columns at the end
        header.pop()
    if name(required) not in header:
        raise ImportFileError(f"the first line must be a header with an {required!r} column")
    unnamed = [str(n) for n, column in enumerate(header, 1) if not column]
    if unnamed:
        raise ImportFileError(f"the header gives no name to column {', '.join(unnamed)}")
    # a repeated column is named as the file first spells it, not as it is normalised
    first = {
        k: text for k, text in reversed(list(zip(header, written[: len(header)], strict=True)))
    }
    duplicated = {first[h].strip().lower() for h in header if header.count(h) > 1}
    if duplicated:
        raise ImportFileError(f"the header repeats column(s): {', '.join(sorted(duplicated))}")
    return header


def _data(
    reader: Any, header: list[str], source: _Source
) -> Iterator[tuple[int, list[str]] | RejectedRow]:
    limit = csv.field_size_limit(READ_LIMIT)
    try:
        yield from _records(reader, header, source)
    finally:
        csv.field_size_limit(limit)


def _records(
    reader: Any, header: list[str], source: _Source
) -> Iterator[tuple[int, list[str]] | RejectedRow]:
    email = header.index("email") if "email" in header else len(header)
    ended = reader.line_num
    while True:
        first = ended + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a quote that never closes, megabytes on: stop there
            reason = (
                f"not CSV from here ({exc}: a quote that never closes?); nothing after it was read"
            )
            yield RejectedRow.of(first, "", reason)
            return
        ended, unclosed = reader.line_num, source.quotes % 2 == 1
        source.quotes = 0
        if not "".join(cells).strip():  # a blank row, said in one call
            continue
        # rare: checked in full only then
        if source.undecodable or ended > first or max(map(len, cells)) > CELL_LIMIT:
            problem = _unreadable(cells, header, first, ended, source.undecodable, unclosed)
            if problem:
                yield RejectedRow.of(first, cells[email] if email < len(cells) else "", problem)
                continue
        yield first, cells


def _unreadable(
    cells: list[str],
    header: list[str],
    first: int,
    ended: int,
    undecodable: dict[int, int],
    unclosed: bool,
) -> str:
    """Why a row cannot be taken at all: a byte that is not UTF-8, a quote that never
    closes (the row ran to the end of the file), or a cell far too long."""
    for line in range(first, ended + 1):
        if line in undecodable:
            return _not_utf8(line, undecodable.pop(line))
    if unclosed and ended > first:
        return (
            f"a quote opened here never closes: lines {first} to {ended}, the end of the"
            " file, were read as this one row, and none of them was imported"
        )
    if max(map(len, cells)) <= CELL_LIMIT:
        return ""
    longest = max(range(len(cells)), key=lambda i: len(cells[i]))
    column = header[longest] if longest < len(header) else f"column {longest + 1}"
    reason = f"{column} is {len(cells[longest]) // 1024} KiB long, more than a cell may hold"
    if ended > first:
        return f"{reason}; the row runs on to line {ended}: a quote that never closes?"
    return reason


def parse_rows(
    rows: Iterable[tuple[int, dict[str, str]] | RejectedRow],
) -> Iterator[CustomerRow | RejectedRow]:
    for row in rows:
        if isinstance(row, RejectedRow):
            yield row
            continue
        line, cells = row
        try:
            yield parse_row(line, cells)
        except ValueError as exc:
            yield RejectedRow.of(line, cells.get("email") or "", str(exc))
