"""The `mailer` command. A mistake a person can fix is one clear line and exit 1."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from mailer import __version__, checks, config, daemon, migrate
from mailer.cli import customers, inquiries, outbox, sandbox, schedules, templates, users
from mailer.cli.common import App, app_of, err, out, say_error
from mailer.errors import ConfigError, MailerError
from mailer.web import server as web_server

app = typer.Typer(
    help="mailer: support acknowledgements, newsletters, birthdays and webinars by email.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(customers.app, name="customers")
app.add_typer(templates.app, name="templates")
app.add_typer(outbox.app, name="outbox")
app.add_typer(inquiries.app, name="inquiries")
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(schedules.app, name="schedules")
app.add_typer(users.app, name="users")
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
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
    ctx.obj = App(config_path or config.default_path())


@app.command()
def check(ctx: typer.Context) -> None:
    """Check config, templates and schedules; print every problem, exit 1 if any."""
    app_ = app_of(ctx)
    problems = checks.check_all(app_.config_path, app_.clock)
    for problem in problems:
        out.print(str(problem))
    if problems:
        err.print(f"{len(problems)} problem(s)", style="red")
        raise typer.Exit(1)
    out.print("config, templates and schedules are fine")


@app.command()
def run(
    ctx: typer.Context,
    sandbox: bool = typer.Option(
        False, "--sandbox", help="Deliver to the local sandbox even if [sandbox] is off."
    ),
) -> None:
    """Run the daemon until Ctrl+C or SIGTERM."""
    app_ = app_of(ctx)
    engine = app_.engine()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per trigger (re)added
    daemon.run(app_.config, engine, sandbox_on=sandbox or app_.config.settings.sandbox.enabled)


@app.command()
def web(ctx: typer.Context) -> None:
    """Serve only the web app ([web] bind), e.g. on a second machine; `run` serves it too."""
    app_ = app_of(ctx)
    engine = app_.engine()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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


def main() -> None:
    """Entry point: user mistakes become a message and exit 1."""
    try:
        app()
    except ConfigError as exc:
        for problem in exc.problems:
            say_error(str(problem))
        sys.exit(1)
    except MailerError as exc:
        say_error(str(exc))
        sys.exit(1)
