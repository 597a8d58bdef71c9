"""A full insight refresh: every customer's figures, the co-bought products and the report,
from one read of the orders, written in one transaction so that no reader sees new figures
beside an old report. Each table is written by its own module; this one only orders them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo

from sqlalchemy import Engine

from mailer.commerce import insights, recommendations, report
from mailer.core.config import InsightSettings
from mailer.core.errors import MailerError


def run(
    engine: Engine, settings: InsightSettings, as_of: date, now: datetime, zone: tzinfo = UTC
) -> insights.RefreshReport:
    """Every customer's insight from their orders up to ``as_of`` (later ones are ignored,
    so a backtest is a refresh as of a past day); the models are fitted again and kept.
    Days are the business's (``zone``)."""
    insights.segments_config(settings)  # a gap in the rules is reported before any work
    with engine.connect() as conn:
        # the orders first: once read they are a few compact arrays, so the memory their
        # rows took is reused by the lines; one read of those serves both the co-bought
        # products and the baskets
        orders = insights.read_orders(conn, as_of, zone)
        end = insights.day_end(as_of, zone)
        lines = insights.read_lines(conn, end)
        bought_together = recommendations.learn(conn, as_of, end, lines)
        baskets = insights.baskets(lines)
        del lines
    if not len(orders.customer):
        raise MailerError(f"no orders up to {as_of} to learn from; `mailer orders import` first")
    customers = insights.per_customer(orders, as_of.toordinal())
    fitted = insights.fit(customers, as_of)
    found = insights.columns(
        customers, fitted, insights.exact_scores, settings=settings, baskets=baskets, now=now
    )
    with engine.begin() as conn:
        insights.replace_all(conn, fitted, found, now)
        recommended = recommendations.store(conn, bought_together)
        report.rebuild(conn, zone, now, orders)  # with the figures it reports, at once
    done = insights.RefreshReport(
        customers=len(found["customer_id"]), orders=len(orders.customer), recommended=recommended
    )
    if fitted.failure:
        done.notes.append(
            f"no purchase model: {fitted.failure}; RFM and recency written, "
            "p_active and clv left empty"
        )
    if fitted.purchases:
        done.notes.extend(
            f"no spend model for {currency}: {why}; clv left empty there"
            for currency, why in sorted(fitted.spend_failures.items())
        )
    return done
