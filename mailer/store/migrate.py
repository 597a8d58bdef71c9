"""Schema migrations with Alembic: `mailer db upgrade` and the checks around it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from mailer.core.errors import DatabaseUnavailable
from mailer.store import db

MIGRATIONS = Path(__file__).parent / "migrations"
NOT_CURRENT = "the database schema is not current; run `mailer db upgrade` first"


def alembic_config(engine: Engine) -> AlembicConfig:
    """An Alembic configuration bound to an engine, without any alembic.ini on disk."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema; each revision runs in a transaction, so data survives."""
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def open_database(url: str, *, require_current: bool = True) -> Engine:
    """An engine on a database that answers and, unless `mailer db upgrade` is the one
    asking, has the current schema; else DatabaseUnavailable saying why in one line.

    Every command, the daemon's start-up and `mailer check` open the database this way. A
    SQLite file that is not there is not made, but for `mailer db upgrade`: a mistyped path
    would otherwise be a new, empty database that looks as if the data were gone.
    """
    missing = db.missing_file(url)
    if require_current and missing:
        raise DatabaseUnavailable(
            f"no database at {missing}; `mailer db upgrade` creates one there"
            " (if it should already exist, check the path)"
        )
    engine = db.connect(url)
    try:
        current = is_up_to_date(engine)
    except DBAPIError as exc:
        engine.dispose()
        raise DatabaseUnavailable(f"cannot open {db.describe(url)}: {db.reason(exc)}") from None
    if require_current and not current:
        engine.dispose()
        raise DatabaseUnavailable(NOT_CURRENT)
    return engine


def is_up_to_date(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()
