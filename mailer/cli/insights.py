"""`mailer insights ...`: what each customer's orders say about them, kept in the database."""

from __future__ import annotations

from datetime import date

import typer

from mailer.cli.common import JSON_OPTION, app_of, err, group, out, print_json, print_table
from mailer.commerce import insights
from mailer.core.durations import parse_duration
from mailer.core.errors import MailerError

app = group("Insights: RFM segments, purchase models and next orders per customer.")

COLUMNS = (
    "email",
    "orders",
    "recency_days",
    "monetary",
    "currency",
    "rfm_segment",
    "p_active",
    "expected_orders",
    "clv",
    "predicted_next_order",
)


@app.command("refresh")
def refresh(
    ctx: typer.Context,
    as_of: str | None = typer.Option(
        None, "--as-of", metavar="DATE", help="Only orders up to this day (YYYY-MM-DD) count."
    ),
) -> None:
    """Fit the purchase models to every order and store each customer's figures again.

    Orders after --as-of are ignored, so a refresh as of a past day is a backtest. Days
    are those of [business_hours] timezone.
    """
    app_ = app_of(ctx)
    settings, now = app_.config.settings, app_.clock.now()
    zone = settings.business_hours.timezone
    today = now.astimezone(zone).date()
    day = _day(as_of) if as_of else today
    if day > today:
        raise MailerError(f"--as-of {as_of} is in the future")
    report = insights.refresh(app_.engine(), settings.insight, day, now, zone)
    for note in report.notes:
        err.print(note)
    out.print(f"{report.customers} customers from {report.orders} orders, as of {day}")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise MailerError(f"--as-of {text!r} is not a date such as 2026-03-01") from None


@app.command("export")
def export(
    ctx: typer.Context,
    horizon: str | None = typer.Option(
        None,
        metavar="DURATION",
        help="Expected orders and clv over this, e.g. 90d [default: [insight] horizon].",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Every customer's stored insight; money in their main currency."""
    app_ = app_of(ctx)
    try:
        length = parse_duration(horizon) if horizon else app_.config.settings.insight.horizon
    except ValueError as exc:
        raise MailerError(f"--horizon: {exc}") from None
    if length.days < 1:
        raise MailerError(f"--horizon {horizon} is shorter than a day")
    with app_.engine().connect() as conn:
        found = insights.export(conn, length.days)
    if as_json:
        print_json(found)
    else:
        print_table(found, COLUMNS)
