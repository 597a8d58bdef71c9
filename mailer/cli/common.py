"""What every command shares: the loaded config, the database, and how results are printed."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine

from mailer import checks
from mailer.core import config
from mailer.core.clock import Clock, SystemClock
from mailer.core.errors import MailerError
from mailer.core.fieldtypes import MAX_ID, utc_moment
from mailer.customers.csv_rows import shown

# Markup is off: customer names, file keys like "[smtp]" and template text are printed as is.
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def group(summary: str) -> typer.Typer:
    """A group of commands. Help is plain text: rich markup would eat config names such
    as "[web]" and label every flag "<bool>"."""
    return typer.Typer(help=summary, no_args_is_help=True, rich_markup_mode=None)


@contextmanager
def progress(total: int, unit: str, *, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A bar on stderr for an import of ``total`` rows or lines, advanced by the callable
    given as each batch is saved; none when ``quiet`` (``--json``) or when stderr is not a
    terminal, since a bar drawn into a log is noise. Interrupted (Ctrl+C), it says how much
    was saved: the bar vanishes, and a silent exit left the operator guessing."""
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    saved = 0

    def advance(n: int) -> None:
        nonlocal saved
        saved += n
        bar.advance(task, n)

    try:
        with Progress(
            *columns, console=err, transient=True, disable=quiet or not err.is_terminal
        ) as bar:
            task = bar.add_task(unit, total=total)
            yield advance
    except KeyboardInterrupt:
        err.print(
            f"interrupted: the first {saved:,} of about {total:,} {unit} are saved (but for"
            " those with errors); the same command again adds the rest and leaves those as"
            " they are"
        )
        raise


def say_error(message: str) -> None:
    err.print(Text.assemble(("error:", "bold red"), " ", message))


CLI_ACTOR = "command line"  # who a history says made a change from here

LONG_AT_LEAST = 8  # what a column cut to keep the times whole still shows
JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")
LIMIT_OPTION = typer.Option(50, min=1, max=MAX_ID)  # a list's length, as every list takes it
# a row's id as a command takes it: one out of range is a usage error, not a database's
RowId = Annotated[int, typer.Argument(min=1, max=MAX_ID, show_default=False)]


def parse_moment(text: str, option: str = "--at") -> datetime:
    """A date and time given on the command line, with its UTC offset."""
    hint = "write it with its UTC offset, e.g. 2026-12-01T09:00:00+02:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise MailerError(f"{option} {text!r} is not a date and time; {hint}") from None
    if when.utcoffset() is None:
        raise MailerError(f"{option} {text!r} has no UTC offset; {hint}")
    try:
        return utc_moment(when)
    except ValueError as exc:
        raise MailerError(f"{option} {text!r} is {exc}") from None


@dataclass(kw_only=True)
class App:
    """Loaded on first use, so `mailer --help` works without a config file."""

    config_path: Path
    clock: Clock = field(default_factory=SystemClock)
    _config: config.Config | None = None
    _engine: Engine | None = None

    @property
    def config(self) -> config.Config:
        if self._config is None:
            self._config = config.load(self.config_path)
        return self._config

    def engine(self, *, require_current: bool = True) -> Engine:
        """The database engine, opened as `mailer check` opens it; refuses a database that
        does not answer, or (unless told otherwise) a schema `mailer db upgrade` has not
        brought up."""
        if self._engine is None:
            self._engine = checks.open_database(self.config, require_current=require_current)
        return self._engine


def app_of(ctx: typer.Context) -> App:
    obj = ctx.find_root().obj
    assert isinstance(obj, App)
    return obj


def plain(value: Any) -> Any:
    """A JSON-friendly form of a value from the database or a template."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    return value


def json_text(data: Any) -> str:
    return json.dumps(plain(data), ensure_ascii=False, indent=2)


def print_json(data: Any) -> None:
    print(json_text(data))


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str = "") -> None:
    """One line per row at any width, 80 columns included: a long cell is cut with "…"
    (``show`` and ``--json`` have the full text). Times are to the minute in this
    terminal's zone (``TZ``), named once under the table."""
    cells = [[_short(row.get(c)) for c in columns] for row in rows]
    table = Table(title=title or None, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    naturals = [max([len(c), *(len(line[n]) for line in cells)]) for n, c in enumerate(columns)]
    times = {n for n, c in enumerate(columns) if any(isinstance(r.get(c), datetime) for r in rows)}
    for column, width in zip(columns, fit(naturals, out.width, times), strict=True):
        table.add_column(column, no_wrap=True, overflow="ellipsis", width=width)
    for line in cells:
        table.add_row(*line)
    if times:
        table.caption = f"times in {_local_zone()}"
        table.caption_justify = "left"
    out.print(table)


def fit(naturals: Sequence[int], total: int, kept: Collection[int] = ()) -> list[int]:
    """Column widths that fit ``total`` characters with 3 between columns: the widest
    columns give way first, down to a common width, so short ones (ids, statuses) stay
    whole; columns in ``kept`` (times) give way only when nothing else can."""
    room = max(total - 3 * len(naturals), len(naturals))
    if sum(naturals) <= room:
        return list(naturals)
    free = [n for n in range(len(naturals)) if n not in kept]
    fixed = sum(naturals[n] for n in kept)
    if free and room - fixed >= sum(min(naturals[n], LONG_AT_LEAST) for n in free):
        cap = _cap([naturals[n] for n in free], room - fixed)
        return [w if n in kept else min(w, cap) for n, w in enumerate(naturals)]
    cap = _cap(list(naturals), room)
    return [min(w, cap) for w in naturals]


def _cap(widths: list[int], room: int) -> int:
    """The largest width that, given to every column wider than it, fits ``room``."""
    cap = max(widths)
    while cap > 1 and sum(min(w, cap) for w in widths) > room:
        cap -= 1
    return cap


def _short(value: Any) -> str:
    """A cell of a list: a time to the minute in the terminal's zone, the rest as in ``show``."""
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M")
    return _cell(value)


def _local_zone() -> str:
    """This terminal's zone as people read it: its abbreviation and offset."""
    now = datetime.now().astimezone()
    offset = now.strftime("%z")
    return f"{now.tzname()} (UTC{offset[:3]}:{offset[3:]})"


def print_rows(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, as_json: bool, title: str = ""
) -> None:
    """A list as every ``list`` command prints it: all fields as JSON, or chosen columns."""
    if as_json:
        print_json(rows)
    else:
        print_table(rows, columns, title)


def print_fields(data: Mapping[str, Any], title: str = "") -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        table.add_row(key, _cell(value))
    if title:
        out.print(title, style="bold")
    out.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return terminal(", ".join(str(v) for v in value))
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z")
    return terminal(str(plain(value)))


def terminal(text: str) -> str:
    """Text from outside (a customer's message, a note, a name) as it may reach a terminal:
    line breaks and tabs kept, every other control or format character escaped, so that no
    escape sequence in it can recolour, move or retitle the operator's terminal."""
    lines = text.split("\n")
    return "\n".join("\t".join(shown(cut, len(cut)) for cut in line.split("\t")) for line in lines)
