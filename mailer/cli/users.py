"""`mailer users ...`: who may sign in to the web app, and as what."""

from __future__ import annotations

import sys

import typer

from mailer.cli.common import JSON_OPTION, app_of, group, out, print_rows
from mailer.staff import users
from mailer.store.models import Role

app = group("Web app accounts: support, marketing and admin users.")

DISPLAY_NAME = typer.Option(None, "--display-name", help="The name customers and colleagues see.")
TIMEZONE = typer.Option(None, "--timezone", help="IANA zone for due times and the morning digest.")
EMAIL = typer.Option(None, "--email", help="Where the morning digest of follow-ups goes.")


PASSWORD_STDIN = typer.Option(
    False, "--password-stdin", help="Read the password from standard input (for scripts)."
)


def _password(from_stdin: bool) -> str:
    """Asked for twice, or read from stdin."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@app.command("add")
def add(
    ctx: typer.Context,
    name: str,
    role: Role = typer.Option(..., help="support, marketing or admin"),
    password_stdin: bool = PASSWORD_STDIN,
    display_name: str = DISPLAY_NAME,
    timezone: str = TIMEZONE,
    email: str = EMAIL,
) -> None:
    """Add an account; the password is asked for twice (or read from stdin)."""
    app_ = app_of(ctx)
    details = {"display_name": display_name, "timezone": timezone, "email": email}
    with app_.engine().connect() as conn:
        users.check_new(conn, name, **details)  # before anyone types a password twice
    secret = _password(password_stdin)
    with app_.engine().begin() as conn:
        users.add(conn, name, role, secret, app_.clock.now(), **details)
    out.print(f"{name} can now sign in as {role.value}")


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Every account, with its role."""
    with app_of(ctx).engine().connect() as conn:
        rows = users.find(conn)
    print_rows(
        rows, ("name", "role", "display_name", "timezone", "email", "disabled"), as_json=as_json
    )


@app.command("disable")
def disable(ctx: typer.Context, name: str) -> None:
    """Stop an account from signing in; every session it has ends at once."""
    with app_of(ctx).engine().begin() as conn:
        users.disable(conn, name)
    out.print(f"{name} can no longer sign in")


@app.command("password")
def password(ctx: typer.Context, name: str, password_stdin: bool = PASSWORD_STDIN) -> None:
    """Give an account a new password; every session signed in with the old one ends."""
    engine = app_of(ctx).engine()
    with engine.connect() as conn:
        users.check_exists(conn, name)  # before anyone types a password twice
    secret = _password(password_stdin)
    with engine.begin() as conn:
        users.set_password(conn, name, secret)
    out.print(f"{name} has a new password; their sessions have ended")


@app.command("set")
def set_(
    ctx: typer.Context,
    name: str,
    display_name: str = DISPLAY_NAME,
    timezone: str = TIMEZONE,
    email: str = EMAIL,
) -> None:
    """Change an account's display name, zone or address ("" clears one)."""
    with app_of(ctx).engine().begin() as conn:
        users.change(conn, name, display_name=display_name, timezone=timezone, email=email)
    out.print(f"{name} updated")
