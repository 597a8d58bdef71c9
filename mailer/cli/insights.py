"""`mailer insights ...`: what each customer's orders say about them, kept in the database."""

from __future__ import annotations

from datetime import date
from typing import Any

import typer

from mailer.cli.common import JSON_OPTION, app_of, err, group, out, print_json, print_table
from mailer.commerce import insights, report
from mailer.commerce import refresh as full_refresh
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
    report = full_refresh.run(app_.engine(), settings.insight, day, now, zone)
    for note in report.notes:
        err.print(note)
    out.print(
        f"{report.customers} customers from {report.orders} orders, as of {day}; "
        f"customers who bought the same also bought: found for {report.recommended} SKUs"
    )


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


SECTIONS = (
    ("segments", ("name", "customers", "revenue", "revenue_share", "margin", "margin_share")),
    ("top_customers", ("email", "revenue", "orders", "segment")),
    ("clv", ("low", "high", "customers")),
    ("products", ("sku", "name", "revenue", "buyers", "never_bought")),
    ("cohorts", ("month", "customers", *(f"+{k}" for k in range(1, report.MONTHS + 1)))),
    ("channels", ("name", "orders", "revenue", "share")),
)


@app.command("report")
def report_(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Segments, top customers, lifetime values, products, returning cohorts and channels.

    Each currency is reported on its own: amounts in two currencies are never added.
    Figures are as of the last refresh's day, built by that refresh; shares are of the
    currency's revenue or customers; cohort months are in [business_hours] timezone.
    """
    app_ = app_of(ctx)
    zone = app_.config.settings.business_hours.timezone
    found = report.shown(report.current(app_.engine(), zone, app_.clock.now()).report)
    if as_json:
        print_json(found)
        return
    if not found["currencies"]:
        err.print("no insight yet: run `mailer insights refresh` first")
    for part in found["currencies"]:
        out.print(
            f"{part['currency']}: {part['customers']} customers, revenue {part['revenue']}, "
            f"{_percent(part['repeat_rate'])} bought again, as of {found['as_of']}"
        )
        for name, columns in SECTIONS:
            rows = [_cells(row) for row in part[name]]
            print_table(rows, columns, title=f"{part['currency']} {name.replace('_', ' ')}")


def _percent(share: float | None) -> str:
    return "" if share is None else f"{share:.0%}"


def _cells(row: dict[str, Any]) -> dict[str, Any]:
    """Shares as percentages; a cohort's months as columns +1, +2, ..."""
    cells = {k: _percent(v) if k.endswith("share") else v for k, v in row.items()}
    for k, share in enumerate(row.get("returned", []), 1):
        cells[f"+{k}"] = _percent(share)
    return cells
