"""Files the app itself writes where the daemon reads them (templates and schedules edited
in the browser): a reader sees the whole old file or the whole new one, never a part, and
a power cut loses neither. And TOML files as people save them.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file (config.toml, a schedule). Raises OSError, UnicodeDecodeError and
    tomllib.TOMLDecodeError as reading and parsing do."""
    return tomllib.loads(toml_text(path))


def toml_text(path: Path) -> str:
    """A TOML file's text without the byte order mark that Windows editors put before
    UTF-8 and TOML does not allow."""
    return path.read_bytes().decode("utf-8-sig")


def replace(path: Path, text: str) -> None:
    """A temporary file beside ``path`` (named with a leading dot, which the loaders skip),
    flushed to disk, then renamed over it. Call ``sync_folder`` once the renames are done."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def sync_folder(folder: Path) -> None:
    """The renames in ``folder`` themselves reach the disk."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
