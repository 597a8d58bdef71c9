"""`mailer orders ...` and `mailer products ...`: what customers bought, from the shop's CSV."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from mailer.cli.common import (
    JSON_OPTION,
    LIMIT_OPTION,
    app_of,
    err,
    group,
    out,
    print_json,
    print_table,
    progress,
)
from mailer.commerce import orders, products
from mailer.commerce.order_rows import Rules
from mailer.customers import profiles
from mailer.customers.csv_rows import shown

app = group("Orders: import what customers bought, look at it.")
products_app = group("Products: the catalogue by SKU.")

COLUMNS = ("order_ref", "email", "ordered_at", "channel", "status", "lines", "total", "currency")


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV, one row per line item, an order's rows together."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Add orders from a CSV file; importing it again changes nothing.

    Columns: order_id, email, ordered_at, sku, product, unit_price (required), quantity,
    category, cost, currency, channel, status (placed, returned, cancelled). An order with
    a bad line is left out whole and each bad line reported; an unknown email becomes a
    customer with no consent to marketing.
    """
    app_ = app_of(ctx)
    settings = app_.config.settings
    rules = Rules(
        now=app_.clock.now(),
        zone=settings.business_hours.timezone,
        currencies=frozenset(settings.company.get("currencies", [])),
    )
    engine = app_.engine()
    total = profiles.count_rows(file)
    with progress(total, "lines", quiet=as_json) as advance:
        report = orders.import_csv(engine, file, rules, progress=advance, insight=settings.insight)
    _print_report(file, report, as_json)
    if report.rejected:
        raise typer.Exit(1)


def _print_report(file: Path, report: orders.ImportReport, as_json: bool) -> None:
    bad = orders.reasons(report.rejected)
    if as_json:
        print_json(
            {
                "added": report.added,
                "unchanged": report.unchanged,
                "lines": report.lines,
                "customers_added": report.customers_added,
                "rejected_orders": len(report.rejected),
                "rejected_lines": report.rejected_lines,
                "rejected": [{"line": n, "order_id": ref, "reason": why} for n, ref, why in bad],
            }
        )
        return
    name = shown(str(file))
    for line, ref, reason in bad:
        where = Text(f"{name}:{line}: rejected", style="red")
        err.print(Text.assemble(where, f" order {shown(ref) or '(no id)'}: {reason}"))
    out.print(
        f"{report.added} orders added ({report.lines} lines, {report.customers_added} new "
        f"customers), {report.unchanged} unchanged, {len(report.rejected)} rejected "
        f"({report.rejected_lines} lines)"
    )


@app.command("list")
def list_(
    ctx: typer.Context,
    customer: str | None = typer.Option(None, metavar="EMAIL", help="Only this customer's."),
    limit: int = LIMIT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """The latest orders, each with its number of lines and total."""
    with app_of(ctx).engine().connect() as conn:
        customer_id = profiles.get(conn, customer).id if customer else None
        found = orders.find(conn, customer_id, limit)
    if as_json:
        print_json(found)
    else:
        print_table(found, COLUMNS)


@products_app.command("import")
def import_products(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV with sku, name and category columns."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Add or update products by SKU; an empty cell keeps what is stored."""
    app_ = app_of(ctx)
    report = products.import_csv(app_.engine(), file, app_.clock.now())
    if as_json:
        rejected = [{"line": b.line, "reason": b.reason} for b in report.rejected]
        print_json(
            {
                **{k: getattr(report, k) for k in ("added", "updated", "unchanged")},
                "rejected": rejected,
                "duplicates": [{"line": a, "first_line": b} for a, b in report.duplicates],
            }
        )
    else:
        for line, first in report.duplicates:
            err.print(
                f"{shown(str(file))}:{line}: same SKU as line {first};"
                " the later row's values were kept"
            )
        for bad in report.rejected:
            err.print(
                Text.assemble(
                    Text(f"{shown(str(file))}:{bad.line}: rejected", style="red"), f" {bad.reason}"
                )
            )
        out.print(
            f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
            f"{len(report.rejected)} rejected"
        )
    if report.rejected:
        raise typer.Exit(1)
