"""`mailer api-keys ...`: keys for the HTTP API, made and revoked by an admin."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import typer

from mailer.api import keys
from mailer.cli.common import CLI_ACTOR, JSON_OPTION, app_of, err, group, out, print_rows

app = group("Keys for the HTTP API under /api/v1: create, list, revoke.")

COLUMNS = ("id", "name", "prefix", "scopes", "rate", "created_at", "last_used_at", "revoked_at")


@app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    scope: list[str] = typer.Option(
        ..., "--scope", help=f"Repeat for each: {', '.join(keys.Scope)}."
    ),
    rate: int | None = typer.Option(
        None, "--rate", metavar="N", help="Requests a minute [default: [api] rate_per_minute]."
    ),
) -> None:
    """Make a key and print it, once: it is stored only as a hash and cannot be shown again."""
    app_ = app_of(ctx)
    scopes = keys.parse_scopes(scope)
    with app_.engine().begin() as conn:
        made, secret = keys.create(
            conn, name, scopes, rate_per_minute=rate, created_by=CLI_ACTOR, now=app_.clock.now()
        )
    out.print(secret)
    rate_said = made.rate_per_minute or app_.config.settings.api.rate_per_minute
    err.print(
        f"key {made.name} ({made.prefix}…): {', '.join(made.scopes)}, {rate_said} requests a "
        "minute; the key above is shown only now, keep it in the calling system's secrets"
    )


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Every key, revoked ones too, without the keys themselves."""
    with app_of(ctx).engine().connect() as conn:
        found = keys.find(conn)
    print_rows([_listed(k) for k in found], COLUMNS, as_json=as_json)


def _listed(key: keys.ApiKey) -> dict[str, Any]:
    return {**asdict(key), "scopes": " ".join(key.scopes), "rate": key.rate_per_minute}


@app.command("revoke")
def revoke(ctx: typer.Context, key: str = typer.Argument(..., metavar="NAME|ID")) -> None:
    """Refuse a key from now on, in every process serving the API."""
    app_ = app_of(ctx)
    with app_.engine().begin() as conn:
        revoked = keys.revoke(conn, key, app_.clock.now())
    out.print(f"key {revoked.name} ({revoked.prefix}…) is revoked since {revoked.revoked_at}")
