"""What every command shares: the loaded config, the database, and how results are printed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine

from mailer import checks
from mailer.core import config
from mailer.core.clock import Clock, SystemClock
from mailer.core.errors import MailerError

# Markup is off: customer names, file keys like "[smtp]" and template text are printed as is.
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def say_error(message: str) -> None:
    err.print(Text.assemble(("error:", "bold red"), " ", message))


CLI_ACTOR = "command line"  # who a history says made a change from here

JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")


def parse_moment(text: str, explained: str, option: str = "--at") -> datetime:
    """A date and time given on the command line, with its UTC offset."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise MailerError(f"{option} {text!r} is not a date and time; {explained}") from None
    if when.utcoffset() is None:
        raise MailerError(f"{option} {text!r} has no UTC offset; {explained}")
    return when


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


def print_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], title: str = "") -> None:
    table = Table(*columns, title=title or None, title_justify="left")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    out.print(table)


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
        return ", ".join(str(v) for v in value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z")
    return str(plain(value))
