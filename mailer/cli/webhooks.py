"""`mailer webhooks ...`: URLs that hear of events, and what became of each delivery."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import typer

from mailer.cli.common import (
    CLI_ACTOR,
    JSON_OPTION,
    LIMIT_OPTION,
    app_of,
    err,
    group,
    out,
    print_rows,
)
from mailer.core.errors import MailerError
from mailer.core.fieldtypes import MAX_ID
from mailer.hooks import deliveries, endpoints
from mailer.hooks.events import EventType

WebhookId = Annotated[int, typer.Argument(metavar="ID", min=1, max=MAX_ID)]  # or a delivery's
app = group("Webhooks: events POSTed, signed, to URLs an admin adds.")

COLUMNS = ("id", "url", "events", "created_at", "created_by", "disabled_at")
DELIVERY_COLUMNS = (
    "id",
    "event_type",
    "url",
    "status",
    "attempts",
    "next_attempt_at",
    "last_status_code",
    "last_error",
)


@app.command("add")
def add(
    ctx: typer.Context,
    url: str,
    event: list[str] = typer.Option(
        ..., "--event", help=f"Repeat for each: {', '.join(EventType)}."
    ),
) -> None:
    """Register URL and print its signing secret, once: the receiver verifies with it."""
    app_ = app_of(ctx)
    events = endpoints.parse_events(event)
    with app_.engine().begin() as conn:
        made = endpoints.add(
            conn,
            url,
            events,
            allow_private=app_.config.settings.webhooks.allow_private,
            created_by=CLI_ACTOR,
            now=app_.clock.now(),
        )
    out.print(made.secret)
    err.print(
        f"webhook {made.id}: {made.url} hears of {', '.join(made.events)}; the secret above "
        "signs every delivery and is shown only now, keep it in the receiver's secrets"
    )


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Every webhook, removed ones too, without their secrets."""
    with app_of(ctx).engine().connect() as conn:
        found = endpoints.find(conn)
    print_rows([_listed(e) for e in found], COLUMNS, as_json=as_json)


def _listed(endpoint: endpoints.Endpoint) -> dict[str, Any]:
    shown = {k: v for k, v in asdict(endpoint).items() if k != "secret"}
    return {**shown, "events": " ".join(endpoint.events)}


@app.command("remove")
def remove(ctx: typer.Context, webhook_id: WebhookId) -> None:
    """Send this URL no more events; what still waited for it is failed, with why."""
    app_ = app_of(ctx)
    with app_.engine().begin() as conn:
        removed, dropped = endpoints.remove(conn, webhook_id, app_.clock.now())
    out.print(
        f"webhook {removed.id} ({removed.url}) is removed; {dropped} waiting deliveries dropped"
    )


@app.command("deliveries")
def deliveries_(
    ctx: typer.Context,
    failed: bool = typer.Option(False, "--failed", help="Only those that gave up."),
    limit: int = LIMIT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Deliveries, newest first; --json adds the payload and every attempt."""
    with app_of(ctx).engine().connect() as conn:
        rows = deliveries.find(conn, failed=failed, limit=limit)
    print_rows(rows, DELIVERY_COLUMNS, as_json=as_json)


@app.command("retry")
def retry(ctx: typer.Context, delivery_id: WebhookId) -> None:
    """Try a failed delivery once more, now (`mailer run` sends it)."""
    app_ = app_of(ctx)
    with app_.engine().begin() as conn:
        if not deliveries.retry(conn, delivery_id, app_.clock.now()):
            raise MailerError(
                f"delivery {delivery_id} was not queued again: only a failed delivery of a "
                "webhook still in use can be; `mailer webhooks deliveries --failed` lists them"
            )
    out.print(f"delivery {delivery_id} is queued again, due now")
