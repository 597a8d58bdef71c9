"""The `mailer` command. A mistake a person can fix is one clear line and exit 1.

The daemon and the web app are imported by `run` and `web` only: most of the start-up time
of a command that lists or changes something would otherwise be spent loading them."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path

import typer
from sqlalchemy import Engine, make_url
from sqlalchemy.exc import OperationalError

from mailer import __version__, checks
from mailer.cli import (
    api_keys,
    contacts,
    customers,
    dkim,
    followups,
    inquiries,
    insights,
    orders,
    outbox,
    sandbox,
    schedules,
    stats,
    templates,
    users,
    webhooks,
)
from mailer.cli.common import App, app_of, err, group, out, say_error
from mailer.core import config
from mailer.core.errors import ConfigError, InvalidInput, MailerError, Problem
from mailer.store import db, migrate, workers

log = logging.getLogger("mailer")

app = typer.Typer(
    help="mailer: support acknowledgements, newsletters, birthdays and webinars by email.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # as in common.group: "[web]" in a help text stays as written
)
app.add_typer(customers.app, name="customers")
app.add_typer(contacts.app, name="contacts")
app.add_typer(templates.app, name="templates")
app.add_typer(outbox.app, name="outbox")
app.add_typer(inquiries.app, name="inquiries")
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(schedules.app, name="schedules")
app.add_typer(users.app, name="users")
app.add_typer(followups.app, name="followups")
app.add_typer(orders.app, name="orders")
app.add_typer(orders.products_app, name="products")
app.add_typer(insights.app, name="insights")
app.add_typer(api_keys.app, name="api-keys")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(dkim.app, name="dkim")
app.command("stats")(stats.stats)
db_app = group("Database schema.")
app.add_typer(db_app, name="db")


def _version(value: bool) -> None:
    if value:
        out.print(f"mailer {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config_path: Path = typer.Option(
        None,
        "--config",
        "-c",
        help="config.toml to use [default: $MAILER_CONFIG, then ./config.toml]",
        show_default=False,
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    ctx.obj = App(config_path=config_path or config.default_path())


@app.command()
def check(ctx: typer.Context) -> None:
    """Check config, database, templates and schedules; print every problem and warning,
    exit 1 if there is a problem (warnings alone exit 0)."""
    app_ = app_of(ctx)
    found = checks.check_all(app_.config_path, app_.clock)
    for problem in found:
        out.print(f"warning: {problem}" if problem.warning else str(problem))
    problems = sum(not p.warning for p in found)
    if problems:
        err.print(f"{problems} problem(s)", style="red")
        raise typer.Exit(1)
    warned = f" ({len(found)} warning(s))" if found else ""
    out.print(f"config, database, templates and schedules are fine{warned}")


def _start(app_: App) -> Engine:
    """What `run` and `web` check before serving, through the calls `mailer check` makes."""
    engine = app_.engine()  # before logging is on: Alembic's look at the schema is chatty
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for chatty in ("flufl.bounce", "aioimaplib"):  # a line per detector, per message read
        logging.getLogger(chatty).setLevel(logging.WARNING)
    for warning in checks.warnings(app_.config):
        log.warning("%s", warning)
    return engine


@app.command()
def run(
    ctx: typer.Context,
    sandbox: bool = typer.Option(
        False, "--sandbox", help="Deliver to the local sandbox even if [sandbox] is off."
    ),
    only: str | None = typer.Option(
        None,
        "--only",
        help="Run only these roles, comma-separated: delivery, inbox, schedules, web "
        "[default: [daemon] roles, all of them]",
        show_default=False,
    ),
) -> None:
    """Run the daemon until Ctrl+C or SIGTERM."""
    from mailer import daemon

    roles = _roles(only)
    app_ = app_of(ctx)
    with workers.alone(make_url(app_.config.database_url)):  # before anything is logged
        engine = _start(app_)
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: every SMTP command
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per trigger added
        daemon.run(
            app_.config,
            engine,
            sandbox_on=sandbox or app_.config.settings.sandbox.enabled,
            roles=roles,
        )


def _roles(only: str | None) -> frozenset[config.Role] | None:
    """The roles ``--only`` names, None when it is not given (then [daemon] roles holds);
    given empty, as a script's unset variable gives it, it is an error, not every role."""
    if only is None:
        return None
    try:
        return config.roles(only)
    except ValueError as exc:
        raise InvalidInput([Problem("--only", str(exc))]) from None


@app.command()
def web(ctx: typer.Context) -> None:
    """Serve only the web app on [web] bind, for example on a second machine; `run` serves it
    too."""
    from mailer.web import server as web_server

    app_ = app_of(ctx)
    engine = _start(app_)
    web_server.run_alone(app_.config, engine)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create the database or bring its schema up to date; data is kept."""
    engine = app_of(ctx).engine(require_current=False)
    before = migrate.current_revision(engine)
    migrate.upgrade(engine)
    after = migrate.current_revision(engine)
    if before == after:
        out.print(f"database is up to date (revision {after})")
    else:
        out.print(f"database upgraded from {before or 'empty'} to revision {after}")


DEBUG_ENV = "MAILER_DEBUG"


def main() -> None:
    """Entry point: every error is one line and exit 1, never a traceback on the terminal.

    A mistake a person can fix says what and where. Anything else is a bug: its line says
    so and where its traceback was saved, because a crash of `mailer run` may never happen
    again when asked to; MAILER_DEBUG=1 shows the traceback here instead.
    """
    try:
        app()
    except ConfigError as exc:
        for problem in exc.problems:
            say_error(str(problem))
        sys.exit(1)
    except MailerError as exc:
        say_error(str(exc))
        sys.exit(1)
    except OperationalError as exc:  # the database went away or stayed locked mid-command
        said = db.reason(exc)
        if said == "database is locked":  # SQLite's busy timeout ran out
            said += ": another process kept writing to it (mailer run, an import); try again"
        say_error(f"database: {said}")
        sys.exit(1)
    except OSError as exc:  # a file or folder named on the command line or in the config
        say_error(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        sys.exit(1)
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        say_error(_bug(exc))
        sys.exit(1)


def _bug(exc: Exception) -> str:
    """One line for an unexpected error, its traceback saved to a file for the report."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    what = f"unexpected {type(exc).__name__}" + (f": {first}" if first else "")
    try:
        fd, saved = tempfile.mkstemp(prefix="mailer-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            traceback.print_exc(file=fh)
    except OSError:
        return f"{what} (a bug in mailer; run with {DEBUG_ENV}=1 to see its traceback)"
    return f"{what} (a bug in mailer; traceback saved in {saved}, or run with {DEBUG_ENV}=1)"
