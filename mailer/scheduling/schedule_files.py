"""Writing schedule files: the one place mailer itself changes `schedules/*.toml`.

The files stay the source of truth, so the web form edits them rather than a copy in the
database: the daemon notices the new file as it notices a hand edit. Every write is
checked first exactly as `mailer check` checks the file (nothing is written when anything
is wrong), keeps the comments and layout of what it does not change (tomlkit), and lands
in one step (a temporary file in the same folder, fsynced, then renamed over the old), so
the daemon never reads half a file.

Pausing sets `enabled = false`. Resuming sets it back and writes `resumed_at`: nothing that
came due while the schedule was paused is sent afterwards, even after a restart, because a
paused newsletter that arrives days later is not what anybody paused it for.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.items import InlineTable, Table

from mailer.core import files
from mailer.core.errors import Problem
from mailer.scheduling.schedules import Schedule, valid_name, validate

# Keys to set. None removes a key, so its default applies; an empty list or table is not
# added where the file has none.
Values = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Known:
    """What a schedule may name: the templates there are, and the customer segments."""

    templates: Collection[str]
    segments: Collection[str]


def path_of(directory: Path, name: str) -> Path:
    return directory / f"{name}.toml"


def read(directory: Path, name: str) -> dict[str, Any] | None:
    """The file's keys as written (durations stay "3d"); None when there is no such file;
    ValueError saying why when it is not UTF-8 TOML (a hand edit gone wrong)."""
    path = path_of(directory, name)
    if not path.is_file():
        return None
    try:
        return files.read_toml(path)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"it is not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ValueError("it is not UTF-8 text") from None


def create(
    directory: Path, name: str, values: Values, known: Known, now: datetime
) -> list[Problem]:
    """A new schedule file, unless the name is taken or unusable, or the values are wrong."""
    if not valid_name(name):
        return [Problem("name", "use letters, digits, '-' and '_' only, e.g. spring-news")]
    if path_of(directory, name).exists():
        return [Problem("name", f"a schedule named {name!r} exists already")]
    return _write(directory, name, tomlkit.document(), values, known, now)


def update(
    directory: Path, name: str, values: Values, known: Known, now: datetime
) -> list[Problem]:
    """Change these keys of an existing file, keeping its comments and every other key."""
    path = path_of(directory, name)
    try:
        document = tomlkit.parse(files.toml_text(path))
    except FileNotFoundError:
        return [Problem(str(path), "no longer exists")]
    except (tomlkit.exceptions.ParseError, OSError, UnicodeDecodeError) as exc:
        return [Problem(str(path), f"cannot be read: {exc}")]
    return _write(directory, name, document, values, known, now)


def pause(directory: Path, name: str, known: Known, now: datetime) -> list[Problem]:
    return update(directory, name, {"enabled": False}, known, now)


def resume(directory: Path, name: str, known: Known, now: datetime) -> list[Problem]:
    """From ``now`` on; what fell due while paused is not sent (see the module's note)."""
    stamp = now.astimezone(UTC).replace(microsecond=0)
    return update(directory, name, {"enabled": True, "resumed_at": stamp}, known, now)


def _write(
    directory: Path,
    name: str,
    document: tomlkit.TOMLDocument,
    values: Values,
    known: Known,
    now: datetime,
) -> list[Problem]:
    _merge(document, values)
    text = tomlkit.dumps(document)
    path = path_of(directory, name)
    schedule, problems = _checked(path, text, known, now)
    if schedule is None:
        return problems
    files.replace(path, text)
    files.sync_folder(path.parent)
    return []


def _checked(
    path: Path, text: str, known: Known, now: datetime
) -> tuple[Schedule | None, list[Problem]]:
    """The text as the daemon will read it, validated by the same code."""
    return validate(str(path), tomllib.loads(text), known.templates, now, known.segments)


def _merge(container: Container | Table | InlineTable, values: Values) -> None:
    """Set each key, recursing into tables so their other keys and comments stay."""
    for key, value in values.items():
        if value is None or (value in ([], {}) and key not in container):
            if key in container:  # an empty list or table is only kept where one was
                del container[key]
        elif isinstance(value, Mapping) and isinstance(container.get(key), Table | InlineTable):
            _merge(container[key], value)
        elif isinstance(value, Mapping):
            table = tomlkit.table()
            _merge(table, value)
            if table:
                container[key] = table
        else:
            container[key] = value
